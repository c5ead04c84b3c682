"""The router component: FIPA messages to agents, by receiver name or by capability.

Every message goes through :meth:`Router.deliver`: it admits the message (the hop guard, the
receiver, the conversation rules), records it in its conversation, delivers it and records
the reply. What it came to is a :class:`Delivery`: the reply (a ``failure`` reply when it
failed, whose content is the same error object as HTTP errors carry) and the error itself, so
the caller decides what an error is: an agent asking another one reads the failure reply, the
direct HTTP route raises the error. Messages agents send from WASM (:meth:`Router.post`) are
admitted synchronously (the guest gets a refusal code) and delivered in the background.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any, Literal

import attrs
import trio

from caxton.components import Background
from caxton.errors import CaxtonError, NotFound, ServiceUnavailable
from caxton.events import Event
from caxton.messages import ChunkSender, Message
from caxton.messaging.conversations import CLOSED
from caxton.messaging.errors import (
    ConversationClosed,
    ConversationNotFound,
    DeliveryTimeout,
    HopLimitExceeded,
    NoProvider,
    UnknownAgent,
)
from caxton.messaging.routing import (
    SEND_HOP_LIMIT,
    SEND_NO_ROUTER,
    SEND_UNKNOWN_RECEIVER,
    Provider,
    SendLedger,
    SendLimits,
    Strategy,
    capability_index,
    choose,
    failure_content,
)
from caxton.tracing import stamped

if TYPE_CHECKING:
    from caxton.events import EventHub
    from caxton.messaging.agents import AgentDirectory, AgentLog
    from caxton.messaging.conversations import Conversations
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.router")

#: The sender of failure replies the router writes itself (no agent answered).
ROUTER_SENDER = "caxton"

#: A refused send of one kind is logged at most once per this many seconds per agent.
REFUSAL_LOG_INTERVAL_S = 1.0

#: Which conversations a message may join: ``new`` (its id was just minted: no lookup),
#: ``open`` (any that is not closed; an unknown id starts one), ``existing`` (one that was
#: started before and is not closed).
ConversationRule = Literal["new", "open", "existing"]


class CapabilityNotFound(NotFound):
    """No agent declares the capability."""

    code = "CAPABILITY_NOT_FOUND"

    def __init__(self, capability: str, known: list[str]) -> None:
        super().__init__(
            f"no agent declares capability {capability!r}; capabilities that exist: "
            f"{', '.join(known) or 'none'}",
            details={"capability": capability, "capabilities": known},
        )


@attrs.frozen(kw_only=True)
class Delivery:
    """What delivering one message came to.

    Attributes:
        reply: the reply envelope (``in_reply_to`` set); a ``failure`` reply when it failed.
        targets: the agents it went to.
        error: why it failed (the agent's error, or the router's), else ``None``.
        refused: the message was not admitted (nothing was recorded or delivered).
    """

    reply: Message
    targets: tuple[str, ...] = ()
    error: CaxtonError | None = None
    refused: bool = False

    def raise_error(self) -> Message:
        """The reply, or the error raised (for callers that report errors as errors)."""
        if self.error is not None:
            raise self.error
        return self.reply


class Router:
    """Delivers messages to agents and records them in conversations.

    Args:
        agents: the running agents (their ``send`` picks the version, canary included, from
            the conversation id).
        conversations: where every message and reply is recorded.
        events: ``message_routed`` events go there.
        metrics: routed messages by performative and outcome, routing latency, in flight.
        logs: per-agent logs (refused sends are written to the sender's log).
        strategy: how a capability picks its agents (``messaging.capability_routing``).
        max_hops: agent-to-agent hops before a message is refused (the loop guard).
        delivery_timeout_s: how long a message sent by an agent waits for its reply.
        send_limits: bounds on what agents send (in flight per agent and per conversation,
            total per conversation, sends per second per agent).
    """

    def __init__(
        self,
        agents: AgentDirectory,
        conversations: Conversations,
        *,
        events: EventHub,
        metrics: Metrics,
        logs: AgentLog,
        strategy: Strategy = "best_match",
        max_hops: int = 8,
        delivery_timeout_s: float = 30.0,
        send_limits: SendLimits | None = None,
    ) -> None:
        self.agents = agents
        self.conversations = conversations
        self.events = events
        self.logs = logs
        self.strategy: Strategy = strategy
        self.max_hops = max_hops
        self.delivery_timeout_s = delivery_timeout_s
        self.sends = SendLedger(send_limits or SendLimits(), clock=time.monotonic)
        self._refusals_logged: dict[tuple[str, int], tuple[float, int]] = {}
        self._deliveries = Background()
        self._turns: dict[str, int] = {}
        self._index: dict[str, tuple[str, ...]] = {}
        self._index_of: object = None
        self._declared: dict[str, tuple[tuple[str, str, str | None], ...]] = {}
        self._in_flight = 0
        self._routed = metrics.counter(
            "caxton_messages_routed",
            "Messages routed, by performative and outcome (ok or the failure code).",
            ["performative", "outcome"],
        )
        self._latency = metrics.histogram(
            "caxton_message_routing_duration_seconds",
            "Time from routing a message to its reply, by destination kind.",
            ["via"],
        )
        # label children looked up once: labels() costs more than the increment
        self._routed_by: dict[tuple[str, str], Any] = {}
        self._latency_by = {
            via: self._latency.labels(via=via) for via in ("receiver", "capability")
        }
        self._in_flight_gauge = metrics.gauge(
            "caxton_messages_in_flight", "Routed messages waiting for their reply."
        )
        self._in_flight_gauge.set_function(lambda: float(self._in_flight))

    # -- component -----------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[Router] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the nursery of background deliveries (agents' sends, ``wait=false``).

        Cancellation:
            Deliveries in progress are cancelled with the router.
        """
        await self._deliveries.run(self, task_status)

    # -- routing -------------------------------------------------------------------------------

    async def deliver(
        self,
        message: Message,
        *,
        stream: ChunkSender | None = None,
        timeout_s: float | None = None,
        conversation: ConversationRule = "open",
    ) -> Delivery:
        """Admit, record and deliver ``message`` (to its receiver or capability).

        Never raises for routing problems: a refused message, no provider, an agent error and
        a timeout all come back as a :class:`Delivery` whose reply is a ``failure``.

        Args:
            message: the envelope; ``hop`` must already count this send.
            stream: where the reply's chunks go as they come (one receiving agent).
            timeout_s: how long to wait for the reply (for broadcast: for every reply);
                ``None`` leaves it to the agent's own limits.
            conversation: which conversations the message may join (:data:`ConversationRule`).

        Cancellation:
            Cancelling stops the delivery (the agent's work for it stops too).
        """
        refusal = await self.admit(message, conversation=conversation)
        if refusal is None:
            return await self.deliver_admitted(message, stream=stream, timeout_s=timeout_s)
        delivery = Delivery(reply=self._failure(message, refusal), error=refusal, refused=True)
        if message.hop > 0:
            # an agent's message stopped by the loop guard or a closed conversation counts in
            # caxton_messages_routed{outcome}, so a loop shows on the dashboards; a client's
            # refused message is an HTTP error, counted with the requests
            self._observe(message, delivery.reply, (), time.perf_counter())
        return delivery

    async def deliver_admitted(
        self,
        message: Message,
        *,
        stream: ChunkSender | None = None,
        timeout_s: float | None = None,
    ) -> Delivery:
        """:meth:`deliver` for a message :meth:`admit` accepted (a caller that must refuse
        before it starts answering, as an SSE stream must)."""
        started = time.perf_counter()
        self._in_flight += 1
        try:
            self.conversations.record(message)
            if message.capability is not None:
                delivery = await self._to_capability(message, message.capability, timeout_s)
            else:
                assert message.receiver is not None  # admitted: a known receiver
                delivery = await self._to_agent(message.receiver, message, stream, timeout_s)
            if len(delivery.targets) <= 1:  # a broadcast recorded each reply already
                self.conversations.record(delivery.reply)
        except CaxtonError as exc:  # the store is closing, or the like: still an answer
            delivery = Delivery(reply=self._failure(message, exc), error=exc)
        finally:
            self._in_flight -= 1
        self._observe(message, delivery.reply, delivery.targets, started)
        return delivery

    async def admit(
        self, message: Message, *, conversation: ConversationRule = "open"
    ) -> CaxtonError | None:
        """Why ``message`` cannot be delivered (the hop guard, an unknown receiver, the
        conversation rules), or ``None``; a ``new`` conversation is marked as such."""
        if message.hop > self.max_hops:
            return HopLimitExceeded(message.hop, self.max_hops)
        if message.receiver is not None and not self.agents.has_agent(message.receiver):
            return UnknownAgent(message.receiver, self.agents.agent_names())
        if conversation == "new":
            self.conversations.mark_new(message.conversation_id)
            return None
        status = await self.conversations.status(message.conversation_id)
        if status == CLOSED:
            return ConversationClosed(message.conversation_id)
        if status is None and conversation == "existing":
            return ConversationNotFound(message.conversation_id)
        return None

    async def ask(self, message: Message, *, timeout_s: float) -> Message:
        """The reply :meth:`deliver` comes to (a ``failure`` reply when it failed)."""
        return (await self.deliver(message, timeout_s=timeout_s)).reply

    async def ask_for_agent(self, message: Message, *, timeout_s: float) -> Message:
        """Like :meth:`ask`, for a message an agent sends from a tool (``send_message``,
        ``wasm:<agent>``): it counts against the same :class:`SendLimits` as a guest's
        ``caxton.send_message``, so a model that keeps calling tools cannot amplify one
        request past them.

        Returns:
            The reply, or a ``failure`` reply (code ``SEND_REFUSED``, ``details.reason`` the
            bound) when the send is refused.

        Cancellation:
            As :meth:`ask`; the send is uncounted however the call ends.
        """
        sender = message.sender or "?"
        message = stamped(message)  # the receiver's span is a child of the tool's (issue #18)
        refusal = self.sends.admit(sender, message.conversation_id)
        if refusal is not None:
            self._log_refusal(sender, refusal.code, refusal.text)
            content = failure_content("SEND_REFUSED", refusal.text, {"reason": refusal.reason})
            return message.reply(content, sender=ROUTER_SENDER, performative="failure")
        try:
            return await self.ask(message, timeout_s=timeout_s)
        finally:
            self.sends.finished(sender, message.conversation_id)

    async def submit(
        self, message: Message, *, conversation: ConversationRule = "open"
    ) -> CaxtonError | None:
        """Admit ``message`` now and deliver it in the background (its reply is only
        recorded); return why it was refused, or ``None``.

        Raises:
            ServiceUnavailable: the router is not running.
        """
        if not self._deliveries.running:
            raise ServiceUnavailable("the message router is not running yet")
        refusal = await self.admit(message, conversation=conversation)
        if refusal is None and not self._deliveries.start_soon(
            self._deliver_in_background, message
        ):
            raise ServiceUnavailable("the message router is not running yet")
        return refusal

    def post(self, message: Message) -> int:
        """Accept a message an agent sends (WASM ``caxton.send_message``); 0 or a refusal.

        Delivery happens in the background; the reply reaches the sender later through its
        ``handle_message`` as an ``inform`` (or ``failure``) with ``in_reply_to`` set. Refusals
        (each written to the sender's log): -4 past ``max_hops`` (the loop guard), -5 an
        unknown receiver, -3 router not running, and past :class:`SendLimits`: -7 too many of
        the agent's messages in flight, -8 too many of the conversation's, -9 the
        conversation's total reached, -10 the agent's sends per second.
        """
        sender = message.sender or "?"
        if message.hop > self.max_hops:
            self._log_refusal(
                sender,
                SEND_HOP_LIMIT,
                f"message to {message.receiver or message.capability} refused: more than "
                f"{self.max_hops} agent-to-agent hops (a loop?)",
            )
            return SEND_HOP_LIMIT
        if message.receiver is not None and not self.agents.has_agent(message.receiver):
            text = f"message refused: no agent named {message.receiver!r}"
            self._log_refusal(sender, SEND_UNKNOWN_RECEIVER, text)
            return SEND_UNKNOWN_RECEIVER
        if not self._deliveries.running:
            return SEND_NO_ROUTER
        refusal = self.sends.admit(sender, message.conversation_id)
        if refusal is not None:
            self._log_refusal(sender, refusal.code, refusal.text)
            return refusal.code
        self._deliveries.start_soon(self._answer_agent, message)
        return 0

    def _log_refusal(self, sender: str, code: int, text: str) -> None:
        """Write a refused send to the sender's log, at most once a second per kind (a guest
        that keeps sending past a bound must not flood the log either)."""
        now = time.monotonic()
        last, unlogged = self._refusals_logged.get((sender, code), (-math.inf, 0))
        if now - last < REFUSAL_LOG_INTERVAL_S:
            self._refusals_logged[(sender, code)] = (last, unlogged + 1)
            return
        if unlogged:
            text += f" ({unlogged} more such refusals in the last second were not logged)"
        self._refusals_logged[(sender, code)] = (now, 0)
        self.logs.write(sender, "warn", text)

    # -- capabilities --------------------------------------------------------------------------

    def capabilities(self) -> dict[str, tuple[str, ...]]:
        """Capability -> agents declaring it (sorted)."""
        state = self.agents.state
        if state is not self._index_of:
            self._index = capability_index(self.agents.declared_capabilities())
            self._declared = {}
            self._index_of = state
        return self._index

    def providers(self, capability: str) -> list[Provider]:
        """The agents declaring ``capability``, with their state and in-flight load (the
        agents and their states are worked out once per change of the agents)."""
        index = self.capabilities()
        declared = self._declared.get(capability)
        if declared is None:
            declared = self._declared[capability] = tuple(
                (agent, *self.agents.status_of(agent))
                for agent in index.get(capability, ())
                if self.agents.has_agent(agent)
            )
        return [
            Provider(
                agent=agent, status=status, version=version, in_flight=self.agents.in_flight(agent)
            )
            for agent, status, version in declared
        ]

    def capability_view(self, capability: str) -> dict[str, Any]:
        """``{capability, strategy, providers}``.

        Raises:
            CapabilityNotFound: no agent declares it.
        """
        if capability not in self.capabilities():
            raise CapabilityNotFound(capability, sorted(self.capabilities()))
        return {
            "capability": capability,
            "strategy": self.strategy,
            "providers": [p.as_json() for p in self.providers(capability)],
        }

    def capabilities_view(self) -> list[dict[str, Any]]:
        return [self.capability_view(c) for c in self.capabilities()]

    def statistics(self) -> dict[str, int]:
        return {
            "in_flight": self._in_flight,
            "capabilities": len(self.capabilities()),
            "agent_sends_in_flight": self.sends.in_flight(),
        }

    # -- inside --------------------------------------------------------------------------------

    async def _to_capability(
        self, message: Message, capability: str, timeout_s: float | None
    ) -> Delivery:
        providers = self.providers(capability)
        choice = choose(self.strategy, providers, turn=self._turns.get(capability, 0))
        self._turns[capability] = choice.turn
        if not choice.targets:
            known = sorted(self.capabilities())
            if providers:
                states = ", ".join(f"{p.agent} ({p.status})" for p in providers)
                text = f"no running agent provides capability {capability!r}: {states}"
            else:
                text = (
                    f"no agent provides capability {capability!r}; capabilities that exist: "
                    f"{', '.join(known) or 'none'}"
                )
            error = NoProvider(
                text,
                details={
                    "capability": capability,
                    "capabilities": known,
                    "providers": [p.as_json() for p in providers],
                },
            )
            return Delivery(reply=self._failure(message, error), error=error)
        if len(choice.targets) == 1:
            return await self._to_agent(choice.targets[0], message, None, timeout_s)
        return await self._broadcast(message, capability, choice.targets, timeout_s)

    async def _to_agent(
        self, name: str, message: Message, stream: ChunkSender | None, timeout_s: float | None
    ) -> Delivery:
        if timeout_s is None:  # the agent's own limits bound it
            return await self._send(name, message, stream)
        with trio.move_on_after(timeout_s):
            return await self._send(name, message, stream)
        error = DeliveryTimeout(name, timeout_s)
        return Delivery(reply=self._failure(message, error, name), targets=(name,), error=error)

    async def _send(self, name: str, message: Message, stream: ChunkSender | None) -> Delivery:
        try:
            answer, _ = await self.agents.send(name, message, stream)
        except CaxtonError as exc:
            return Delivery(reply=self._failure(message, exc, name), targets=(name,), error=exc)
        return Delivery(reply=message.reply(answer.content, sender=name), targets=(name,))

    async def _broadcast(
        self,
        message: Message,
        capability: str,
        targets: tuple[str, ...],
        timeout_s: float | None,
    ) -> Delivery:
        replies: dict[str, Message] = {}

        async def one(name: str) -> None:
            reply = (await self._to_agent(name, message, None, timeout_s)).reply
            self.conversations.record(reply)
            replies[name] = reply

        async with trio.open_nursery() as nursery:
            for name in targets:
                nursery.start_soon(one, name)
        gathered = [replies[name] for name in targets]
        content = {
            "capability": capability,
            "replies": [
                {
                    "sender": r.sender,
                    "performative": r.performative,
                    "content": r.content,
                    "message_id": r.message_id,
                }
                for r in gathered
            ],
        }
        ok = any(r.performative != "failure" for r in gathered)
        reply = message.reply(
            content, sender=ROUTER_SENDER, performative="inform" if ok else "failure"
        )
        return Delivery(reply=reply, targets=targets)

    def _failure(
        self, message: Message, error: CaxtonError, sender: str = ROUTER_SENDER
    ) -> Message:
        """The ``failure`` reply to ``message`` that carries ``error``."""
        content = failure_content(error.code, error.message, error.details)
        return message.reply(content, sender=sender, performative="failure")

    async def _answer_agent(self, message: Message) -> None:
        """Route an agent's message, then hand the reply to the agent that sent it."""
        try:
            await self._answer_agent_counted(message)
        finally:
            self.sends.finished(message.sender or "?", message.conversation_id)

    async def _answer_agent_counted(self, message: Message) -> None:
        try:
            reply = await self.ask(message, timeout_s=self.delivery_timeout_s)
            sender = message.sender
            if sender is None or not self.agents.has_agent(sender):
                return
            try:
                output, _ = await self.agents.send(sender, reply)
            except CaxtonError as exc:
                self.logs.write(
                    sender, "warn", f"reply from {reply.sender} not delivered: {exc.message}"
                )
                return
            if output.content:
                # what the sender answers once the reply is in: for the conversation's
                # initiator (the client that asked it in the first place)
                self.conversations.record(
                    Message(
                        performative="inform",
                        sender=sender,
                        receiver=self.conversations.initiator(message.conversation_id),
                        content=output.content,
                        conversation_id=message.conversation_id,
                        in_reply_to=reply.message_id,
                        hop=reply.hop,
                    )
                )
        except Exception:
            LOGGER.exception("delivering a message from %s failed", message.sender)

    async def _deliver_in_background(self, message: Message) -> None:
        try:
            await self.deliver_admitted(message, timeout_s=self.delivery_timeout_s)
        except Exception:
            LOGGER.exception("routing message %s failed", message.message_id)

    def _observe(
        self, message: Message, reply: Message, targets: tuple[str, ...], started: float
    ) -> None:
        elapsed = time.perf_counter() - started
        outcome = "ok"
        if reply.performative == "failure" and isinstance(reply.content, dict):
            error = reply.content.get("error")
            outcome = str(error.get("code")) if isinstance(error, dict) else "failure"
        key = (message.performative, outcome)
        counter = self._routed_by.get(key)
        if counter is None:
            counter = self._routed_by[key] = self._routed.labels(
                performative=message.performative, outcome=outcome
            )
        counter.inc()
        via = "capability" if message.capability is not None else "receiver"
        self._latency_by[via].observe(elapsed)
        self.events.publish(
            Event(
                type="message_routed",
                agent=targets[0] if len(targets) == 1 else None,
                data={
                    "message_id": message.message_id,
                    "conversation_id": message.conversation_id,
                    "performative": message.performative,
                    "sender": message.sender,
                    "receiver": message.receiver,
                    "capability": message.capability,
                    "targets": list(targets),
                    "strategy": self.strategy if message.capability is not None else None,
                    "reply_performative": reply.performative,
                    "outcome": outcome,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        )
