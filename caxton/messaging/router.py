"""The router component: FIPA messages to agents, by receiver name or by capability.

Every message it delivers, and every reply, is recorded in its conversation. Problems that
belong to the conversation (no provider for a capability, an agent error, a timeout, the loop
guard) come back as a ``failure`` reply instead of an exception, so an agent asking another
one always gets an answer it can read. :meth:`Router.send_to` is the direct route of
``POST /api/v1/agents/{name}/messages`` and WebSocket ``/ws/agents/{name}``: it records the
exchange too, but raises, as those routes report errors as HTTP errors.
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, Any

import trio

from caxton.errors import CaxtonError, NotFound, ServiceUnavailable
from caxton.events import Event
from caxton.messages import ChunkSender, Message
from caxton.messaging.conversations import CLOSED
from caxton.messaging.errors import (
    AGENT_NOT_FOUND,
    HOP_LIMIT_EXCEEDED,
    NO_PROVIDER,
    TIMEOUT,
    ConversationClosed,
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

if TYPE_CHECKING:
    from caxton.agents.logs import AgentLogs
    from caxton.agents.registry import Registry
    from caxton.agents.versions import VersionRegistry
    from caxton.events import EventHub
    from caxton.messaging.conversations import Conversations
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.router")

#: The sender of failure replies the router writes itself (no agent answered).
ROUTER_SENDER = "caxton"

#: A refused send of one kind is logged at most once per this many seconds per agent.
REFUSAL_LOG_INTERVAL_S = 1.0


class CapabilityNotFound(NotFound):
    """No agent declares the capability."""

    code = "CAPABILITY_NOT_FOUND"

    def __init__(self, capability: str, known: list[str]) -> None:
        super().__init__(
            f"no agent declares capability {capability!r}; capabilities that exist: "
            f"{', '.join(known) or 'none'}",
            details={"capability": capability, "capabilities": known},
        )


class Router:
    """Delivers messages through the registry and records them in conversations.

    Args:
        registry: the agent registry (its :meth:`~caxton.agents.registry.Registry.send`
            picks the version, canary included, from the conversation id).
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
        registry: Registry,
        conversations: Conversations,
        *,
        events: EventHub,
        metrics: Metrics,
        logs: AgentLogs,
        strategy: Strategy = "best_match",
        max_hops: int = 8,
        delivery_timeout_s: float = 30.0,
        send_limits: SendLimits | None = None,
    ) -> None:
        self.registry = registry
        self.conversations = conversations
        self.events = events
        self.logs = logs
        self.strategy: Strategy = strategy
        self.max_hops = max_hops
        self.delivery_timeout_s = delivery_timeout_s
        self.sends = SendLedger(send_limits or SendLimits(), clock=time.monotonic)
        self._refusals_logged: dict[tuple[str, int], tuple[float, int]] = {}
        self._nursery: trio.Nursery | None = None
        self._turns: dict[str, int] = {}
        self._index: dict[str, tuple[str, ...]] = {}
        self._index_of: VersionRegistry | None = None
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
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._nursery = None

    # -- routing -------------------------------------------------------------------------------

    async def ask(self, message: Message, *, timeout_s: float) -> Message:
        """Deliver ``message`` (to its receiver or capability) and return the reply envelope.

        Never raises for routing problems: no provider, an unknown receiver, an agent error,
        a closed conversation, the loop guard and a timeout all come back as a ``failure``
        reply whose content is ``{"error": {"code", "message", "details"}}``.

        Args:
            message: the envelope; ``hop`` must already count this send.
            timeout_s: how long to wait for the reply (for broadcast: for every reply).

        Returns:
            The reply, ``in_reply_to`` set, in the message's conversation.

        Cancellation:
            Cancelling stops the delivery (the agent's work for it stops too).
        """
        started = time.perf_counter()
        self._in_flight += 1
        try:
            reply, targets = await self._route(message, timeout_s)
        except CaxtonError as exc:  # the store is closing, or the like: still an answer
            reply, targets = self._failure(message, exc.code, exc.message, exc.details), ()
        finally:
            self._in_flight -= 1
        self._observe(message, reply, targets, started)
        return reply

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
        refusal = self.sends.admit(sender, message.conversation_id)
        if refusal is not None:
            self._log_refusal(sender, refusal.code, refusal.text)
            return self._failure(message, "SEND_REFUSED", refusal.text, {"reason": refusal.reason})
        try:
            return await self.ask(message, timeout_s=timeout_s)
        finally:
            self.sends.finished(sender, message.conversation_id)

    async def send_to(
        self,
        name: str,
        message: Message,
        stream: ChunkSender | None = None,
        *,
        new_conversation: bool = False,
    ) -> Message:
        """Deliver ``message`` to the agent ``name`` and return its reply, its chunks put in
        ``stream`` as they come.

        The direct route: errors are raised (and the failure recorded), not returned.

        Args:
            new_conversation: the conversation id was minted for this message (no lookup).

        Raises:
            AgentNotFound: no agent ``name``.
            ConversationClosed: the conversation was closed.
            CaxtonError: whatever the agent's answer failed with.

        Cancellation:
            Cancelling stops the agent's work for this message.
        """
        self.registry.agent(name)  # AgentNotFound before anything is recorded
        if new_conversation:
            self.conversations.mark_new(message.conversation_id)
        if await self.conversations.status(message.conversation_id) == CLOSED:
            raise ConversationClosed(message.conversation_id)
        started = time.perf_counter()
        self.conversations.record(message)
        self._in_flight += 1
        try:
            reply, _ = await self.registry.send(name, message, stream)
        except CaxtonError as exc:
            failure = message.reply(
                failure_content(exc.code, exc.message, exc.details),
                sender=name,
                performative="failure",
            )
            self.conversations.record(failure)
            self._observe(message, failure, (name,), started)
            raise
        finally:
            self._in_flight -= 1
        answer = message.reply(reply.content, sender=name)
        self.conversations.record(answer)
        self._observe(message, answer, (name,), started)
        return answer

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
        if message.receiver is not None and not self.registry.has_agent(message.receiver):
            text = f"message refused: no agent named {message.receiver!r}"
            self._log_refusal(sender, SEND_UNKNOWN_RECEIVER, text)
            return SEND_UNKNOWN_RECEIVER
        if self._nursery is None:
            return SEND_NO_ROUTER
        refusal = self.sends.admit(sender, message.conversation_id)
        if refusal is not None:
            self._log_refusal(sender, refusal.code, refusal.text)
            return refusal.code
        self._nursery.start_soon(self._answer_agent, message)
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

    def submit(self, message: Message) -> None:
        """Route ``message`` in the background; its reply is only recorded.

        Raises:
            ServiceUnavailable: the router is not running.
        """
        if self._nursery is None:
            raise ServiceUnavailable("the message router is not running yet")
        self._nursery.start_soon(self._ask_in_background, message)

    # -- capabilities --------------------------------------------------------------------------

    def capabilities(self) -> dict[str, tuple[str, ...]]:
        """Capability -> agents declaring it (sorted)."""
        state = self.registry.state
        if state is not self._index_of:
            self._index = capability_index(self.registry.declared_capabilities())
            self._index_of = state
        return self._index

    def providers(self, capability: str) -> list[Provider]:
        """The agents declaring ``capability``, with their state and in-flight load."""
        providers = []
        for agent in self.capabilities().get(capability, ()):
            if not self.registry.has_agent(agent):
                continue
            versions = self.registry.agent(agent)
            active = versions.active_entry
            providers.append(
                Provider(
                    agent=agent,
                    status=versions.status.value,
                    version=active.version if active else None,
                    in_flight=self.registry.in_flight(agent),
                )
            )
        return providers

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

    async def _route(self, message: Message, timeout_s: float) -> tuple[Message, tuple[str, ...]]:
        if message.hop > self.max_hops:
            text = (
                f"message refused after {message.hop} agent-to-agent hops (the limit is "
                f"{self.max_hops}, messaging.max_hops): agents are probably calling each other "
                "in a loop"
            )
            return self._failure(message, HOP_LIMIT_EXCEEDED, text, {"hop": message.hop}), ()
        if await self.conversations.status(message.conversation_id) == CLOSED:
            error = ConversationClosed(message.conversation_id)
            return self._failure(message, error.code, error.message, error.details), ()
        self.conversations.record(message)
        if message.capability is not None:
            reply, targets = await self._to_capability(message, message.capability, timeout_s)
        elif message.receiver is not None and self.registry.has_agent(message.receiver):
            targets = (message.receiver,)
            reply = await self._deliver(message.receiver, message, timeout_s)
        else:
            known = self.registry.agent_names()
            text = (
                f"no agent named {message.receiver!r}; agents: {', '.join(known) or 'none'}"
                if message.receiver is not None
                else "the message names neither a receiver nor a capability"
            )
            reply, targets = (
                self._failure(message, AGENT_NOT_FOUND, text, {"agents": known}),
                (),
            )
        if not message.capability or len(targets) <= 1:
            self.conversations.record(reply)
        return reply, targets

    async def _to_capability(
        self, message: Message, capability: str, timeout_s: float
    ) -> tuple[Message, tuple[str, ...]]:
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
            details = {
                "capability": capability,
                "capabilities": known,
                "providers": [p.as_json() for p in providers],
            }
            return self._failure(message, NO_PROVIDER, text, details), ()
        if len(choice.targets) == 1:
            target = choice.targets[0]
            return await self._deliver(target, message, timeout_s), choice.targets
        return await self._broadcast(message, capability, choice.targets, timeout_s), (
            choice.targets
        )

    async def _deliver(self, name: str, message: Message, timeout_s: float) -> Message:
        with trio.move_on_after(timeout_s):
            try:
                reply, _ = await self.registry.send(name, message)
            except CaxtonError as exc:
                content = failure_content(exc.code, exc.message, exc.details)
                return message.reply(content, sender=name, performative="failure")
            return message.reply(reply.content, sender=name)
        text = f"agent {name!r} did not answer within {timeout_s:g}s"
        content = failure_content(TIMEOUT, text, {"agent": name, "timeout_s": timeout_s})
        return message.reply(content, sender=name, performative="failure")

    async def _broadcast(
        self, message: Message, capability: str, targets: tuple[str, ...], timeout_s: float
    ) -> Message:
        replies: dict[str, Message] = {}

        async def one(name: str) -> None:
            reply = await self._deliver(name, message, timeout_s)
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
        return message.reply(
            content, sender=ROUTER_SENDER, performative="inform" if ok else "failure"
        )

    def _failure(self, message: Message, code: str, text: str, details: dict[str, Any]) -> Message:
        return message.reply(
            failure_content(code, text, details), sender=ROUTER_SENDER, performative="failure"
        )

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
            if sender is None or not self.registry.has_agent(sender):
                return
            try:
                output, _ = await self.registry.send(sender, reply)
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

    async def _ask_in_background(self, message: Message) -> None:
        try:
            await self.ask(message, timeout_s=self.delivery_timeout_s)
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
