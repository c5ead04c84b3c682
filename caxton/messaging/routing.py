"""Choosing the agents a capability message goes to, and bounding what agents may send:
pure functions and sans-IO accounting over frozen values."""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

Strategy = Literal["best_match", "round_robin", "broadcast"]
STRATEGIES: tuple[Strategy, ...] = ("best_match", "round_robin", "broadcast")


@attrs.frozen(kw_only=True)
class Provider:
    """An agent that declares a capability, as the router sees it now."""

    agent: str
    status: str
    version: str | None
    in_flight: int

    @property
    def healthy(self) -> bool:
        return self.status == "running"

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "status": self.status,
            "version": self.version,
            "in_flight": self.in_flight,
            "healthy": self.healthy,
        }


@attrs.frozen(kw_only=True)
class Choice:
    """Where a capability message goes; ``turn`` is the next round-robin position."""

    targets: tuple[str, ...]
    turn: int


def choose(strategy: Strategy, providers: Sequence[Provider], *, turn: int = 0) -> Choice:
    """Pick the receivers of a capability message among ``providers``.

    * ``best_match``: the healthy provider with the fewest in-flight requests; ties by name.
    * ``round_robin``: healthy providers by name, one after the other (``turn`` counts).
    * ``broadcast``: every healthy provider.

    No healthy provider gives no targets (the caller answers with a ``failure``).
    """
    healthy = sorted((p for p in providers if p.healthy), key=lambda p: p.agent)
    if not healthy:
        return Choice(targets=(), turn=turn)
    if strategy == "broadcast":
        return Choice(targets=tuple(p.agent for p in healthy), turn=turn)
    if strategy == "round_robin":
        return Choice(targets=(healthy[turn % len(healthy)].agent,), turn=turn + 1)
    best = min(healthy, key=lambda p: (p.in_flight, p.agent))
    return Choice(targets=(best.agent,), turn=turn)


def capability_index(declared: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Agent -> its capabilities, turned into capability -> its agents (sorted)."""
    index: dict[str, list[str]] = {}
    for agent, capabilities in declared.items():
        for capability in capabilities:
            index.setdefault(capability, []).append(agent)
    return {c: tuple(sorted(agents)) for c, agents in sorted(index.items())}


def failure_content(
    code: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The content of a ``failure`` reply: the same error object as HTTP errors carry."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}


# -- what an agent may send (issue #13 items 5 and 15) -----------------------------------------

#: ``caxton.send_message`` results (DESIGN §11: 0 accepted, negative refused), and the reason
#: label each refusal is counted under (``caxton_wasm_send_refused_total{agent,reason}``).
SEND_ACCEPTED = 0
SEND_REFUSED = -1
SEND_INVALID = -2
SEND_NO_ROUTER = -3
SEND_HOP_LIMIT = -4
SEND_UNKNOWN_RECEIVER = -5
SEND_CALL_LIMIT = -6
SEND_AGENT_IN_FLIGHT = -7
SEND_CONVERSATION_IN_FLIGHT = -8
SEND_CONVERSATION_LIMIT = -9
SEND_RATE_LIMIT = -10
SEND_REFUSALS: dict[int, str] = {
    SEND_REFUSED: "refused",
    SEND_INVALID: "invalid",
    SEND_NO_ROUTER: "no_router",
    SEND_HOP_LIMIT: "hop_limit",
    SEND_UNKNOWN_RECEIVER: "unknown_receiver",
    SEND_CALL_LIMIT: "sends_per_call",
    SEND_AGENT_IN_FLIGHT: "agent_in_flight",
    SEND_CONVERSATION_IN_FLIGHT: "conversation_in_flight",
    SEND_CONVERSATION_LIMIT: "conversation_total",
    SEND_RATE_LIMIT: "agent_rate",
}


@attrs.frozen(kw_only=True)
class SendLimits:
    """Bounds on the messages agents send through the router (not settings: constants).

    The hop guard alone lets an agent that sends to itself twice per call grow as 2^8; these
    bound the work any one request can cause.

    Attributes:
        max_in_flight_per_agent: an agent's sent messages still waiting for their reply.
        max_in_flight_per_conversation: the same, per conversation.
        max_per_conversation: messages agents may send in one conversation, ever (counted
            while the conversation is among the ``tracked_conversations`` most recent).
        per_agent_per_second: an agent's sustained sends per second (token bucket). High
            enough for a dispatcher agent that forwards every request it gets; what bounds one
            request's fan-out is the per-conversation total.
        per_agent_burst: the sends an agent may make back to back.
        tracked_conversations: conversations whose totals are remembered.
    """

    max_in_flight_per_agent: int = 64
    max_in_flight_per_conversation: int = 32
    max_per_conversation: int = 256
    per_agent_per_second: float = 1000.0
    per_agent_burst: int = 2000
    tracked_conversations: int = 10_000


@attrs.frozen(kw_only=True)
class SendRefusal:
    """Why a send was refused: the guest-visible code, the metric label, and a log line."""

    code: int
    text: str

    @property
    def reason(self) -> str:
        return SEND_REFUSALS.get(self.code, "refused")


@attrs.define
class _Bucket:
    tokens: float
    at: float


class SendLedger:
    """Counts the messages agents send, and refuses those past :class:`SendLimits`.

    Sans-IO: the router calls :meth:`admit` before it starts a delivery and :meth:`finished`
    when the delivery (and the reply to the sender) is over.

    Args:
        limits: the bounds.
        clock: seconds from any fixed origin (``time.monotonic``).
    """

    def __init__(self, limits: SendLimits, *, clock: Callable[[], float]) -> None:
        self.limits = limits
        self._clock = clock
        self._agent_in_flight: dict[str, int] = {}
        self._conversation_in_flight: dict[str, int] = {}
        self._conversation_total: OrderedDict[str, int] = OrderedDict()
        self._buckets: dict[str, _Bucket] = {}

    def in_flight(self) -> int:
        """Sent messages whose delivery is not over."""
        return sum(self._agent_in_flight.values())

    def admit(self, agent: str, conversation: str) -> SendRefusal | None:
        """Count a send of ``agent`` in ``conversation``, or say why it is refused."""
        limits = self.limits
        if self._agent_in_flight.get(agent, 0) >= limits.max_in_flight_per_agent:
            return SendRefusal(
                code=SEND_AGENT_IN_FLIGHT,
                text=f"message refused: {limits.max_in_flight_per_agent} messages this agent "
                "sent are still waiting for their reply",
            )
        if self._conversation_in_flight.get(conversation, 0) >= (
            limits.max_in_flight_per_conversation
        ):
            return SendRefusal(
                code=SEND_CONVERSATION_IN_FLIGHT,
                text=f"message refused: {limits.max_in_flight_per_conversation} messages of "
                f"conversation {conversation} are still waiting for their reply",
            )
        total = self._conversation_total.get(conversation, 0)
        if total >= limits.max_per_conversation:
            return SendRefusal(
                code=SEND_CONVERSATION_LIMIT,
                text=f"message refused: agents already sent {limits.max_per_conversation} "
                f"messages in conversation {conversation} (the most one conversation may hold)",
            )
        if not self._take(agent):
            return SendRefusal(
                code=SEND_RATE_LIMIT,
                text=f"message refused: more than {limits.per_agent_per_second:g} sends a "
                f"second (bursts of {limits.per_agent_burst}) from this agent",
            )
        self._agent_in_flight[agent] = self._agent_in_flight.get(agent, 0) + 1
        self._conversation_in_flight[conversation] = (
            self._conversation_in_flight.get(conversation, 0) + 1
        )
        self._conversation_total[conversation] = total + 1
        self._conversation_total.move_to_end(conversation)
        while len(self._conversation_total) > limits.tracked_conversations:
            self._conversation_total.popitem(last=False)
        return None

    def finished(self, agent: str, conversation: str) -> None:
        """A send that :meth:`admit` counted is over."""
        for counts, key in (
            (self._agent_in_flight, agent),
            (self._conversation_in_flight, conversation),
        ):
            left = counts.get(key, 0) - 1
            if left > 0:
                counts[key] = left
            else:
                counts.pop(key, None)

    def _take(self, agent: str) -> bool:
        now = self._clock()
        limits = self.limits
        bucket = self._buckets.get(agent)
        if bucket is None:
            bucket = self._buckets[agent] = _Bucket(tokens=float(limits.per_agent_burst), at=now)
        bucket.tokens = min(
            float(limits.per_agent_burst),
            bucket.tokens + (now - bucket.at) * limits.per_agent_per_second,
        )
        bucket.at = now
        if bucket.tokens < 1.0:
            return False
        bucket.tokens -= 1.0
        return True
