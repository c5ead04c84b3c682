"""The seam between the registry and the things that run agents.

A runtime turns a validated spec (plus, for WASM, the module bytes) into an
:class:`AgentInstance`; the registry owns the instance's lifetime (blue-green swaps, draining,
stopping). WASM agents run on :mod:`caxton.wasm` (here); config (LLM) agents in
:mod:`caxton.agents.config_agent`.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio
from prometheus_client import Counter, Histogram

from caxton.agents.spec import AnyAgentSpec, WasmAgentSpec
from caxton.errors import CaxtonError
from caxton.messages import ChunkSender, Message, content_of
from caxton.messaging.envelope import parse_envelope
from caxton.messaging.routing import (
    SEND_ACCEPTED,
    SEND_CALL_LIMIT,
    SEND_INVALID,
    SEND_NO_ROUTER,
    SEND_REFUSALS,
)
from caxton.tracing import set_attributes, span, stamped
from caxton.wasm import GuestHooks, WasmLimitExceeded, WasmTrap
from caxton.wasm.limits import MAX_SENDS_PER_CALL

if TYPE_CHECKING:
    from collections.abc import Callable

    from caxton.agents.logs import AgentLogs
    from caxton.metrics import Metrics
    from caxton.wasm import WasmPool


@attrs.frozen(kw_only=True)
class LoadRequest:
    """What a runtime needs to start one version."""

    spec: AnyAgentSpec
    module: bytes | None = None


@attrs.frozen(kw_only=True)
class AgentReply:
    """The full reply of one message (the chunks were streamed as they came)."""

    content: str | dict[str, Any]
    chunks: int
    #: What answering cost: WASM fuel units, LLM tokens (input and output).
    fuel: int = 0
    tokens: int = 0


class AgentInstance(Protocol):
    """One running version of an agent."""

    @property
    def details(self) -> dict[str, Any]:
        """Facts for ``GET /api/v1/agents/{name}`` (for WASM: the ABI)."""
        ...

    async def handle(self, message: Message, stream: ChunkSender | None = None) -> AgentReply:
        """Answer ``message``, putting each reply chunk in ``stream`` as it comes.

        Cancellation:
            Cancelling stops the work promptly (a WASM guest within one epoch tick).
        """
        ...

    async def aclose(self) -> None:
        """Release the instance; idempotent."""
        ...


class AgentRuntime(Protocol):
    """Starts instances of one kind of agent."""

    async def load(self, request: LoadRequest) -> AgentInstance:
        """Start a version; raise a :class:`CaxtonError` saying why when it cannot start."""
        ...


@attrs.frozen
class _TextSink:
    """A guest's reply chunks, each decoded, into a reply's chunk stream (never waiting: the
    reply is bounded by the agent's ``max_message_size``)."""

    stream: ChunkSender

    def send_nowait(self, chunk: bytes, /) -> None:
        self.stream.send_nowait(chunk.decode("utf-8", errors="replace"))


@attrs.frozen(kw_only=True)
class WasmMetrics:
    """Per-agent WASM counters (DESIGN §9), created once per server."""

    calls: Histogram
    fuel: Counter
    traps: Counter
    limits: Counter
    log_dropped: Counter
    send_refused: Counter

    @classmethod
    def register(cls, metrics: Metrics) -> WasmMetrics:
        return cls(
            calls=metrics.histogram(
                "caxton_wasm_call_duration_seconds", "WASM guest call time by agent.", ["agent"]
            ),
            fuel=metrics.counter(
                "caxton_wasm_fuel_consumed", "Fuel consumed by WASM guests.", ["agent"]
            ),
            traps=metrics.counter("caxton_wasm_traps", "WASM guest traps.", ["agent", "trap"]),
            limits=metrics.counter(
                "caxton_wasm_limit_exceeded", "WASM calls stopped by a limit.", ["agent", "limit"]
            ),
            log_dropped=metrics.counter(
                "caxton_wasm_log_dropped_bytes",
                "Bytes of guest log (caxton.log, wasi-stdio stderr) dropped: past the per-call "
                "budget, the line cap or the agent's line rate.",
                ["agent"],
            ),
            send_refused=metrics.counter(
                "caxton_wasm_send_refused",
                "caxton.send_message calls refused, by reason (sends per call, in flight, "
                "per conversation, rate, hop limit, ...).",
                ["agent", "reason"],
            ),
        )


class MessagePoster(Protocol):
    """Accepts a message an agent sends (the message router); the reply comes back later."""

    def post(self, message: Message) -> int:
        """Queue ``message`` for delivery; 0 when accepted, negative when refused."""
        ...


#: ``caxton.log`` levels.
GUEST_LOG_LEVELS = {0: "debug", 1: "info", 2: "warn", 3: "error"}

#: ``caxton.send_message`` results (DESIGN §11: 0 accepted, negative refused): see
#: :data:`caxton.messaging.routing.SEND_REFUSALS` for every code.
SEND_NOT_A_MESSAGE = SEND_INVALID
_RUNTIME_REFUSALS = {
    SEND_CALL_LIMIT: f"more than {MAX_SENDS_PER_CALL} sends in one call; the rest of this "
    "call's sends are refused too",
    SEND_NOT_A_MESSAGE: "not a message envelope (a JSON object of known keys with exactly "
    "one of receiver or capability, a string or object content within "
    "messaging.max_message_size, a known performative)",
    SEND_NO_ROUTER: "the message router is not running",
}


class WasmAgentInstance:
    """A loaded WASM module serving one agent version."""

    def __init__(self, spec: WasmAgentSpec, module: Any, runtime: WasmRuntime) -> None:
        self.spec = spec
        self.module = module
        self.metrics = runtime.metrics
        self.logs = runtime.logs
        self.poster = runtime.poster
        self.max_message_size = runtime.max_message_size
        # this agent's metric children, looked up once: labels() costs more than the update
        name = spec.name
        self._call_seconds = self.metrics.calls.labels(agent=name)
        self._fuel = self.metrics.fuel.labels(agent=name)
        self._log_dropped = self.metrics.log_dropped.labels(agent=name)
        # the span of each call (issue #18), named once
        self._span_name = f"wasm {name}"
        self._span_attributes = {"caxton.agent.name": name, "caxton.wasm.abi": module.abi}

    @property
    def details(self) -> dict[str, Any]:
        return {"abi": self.module.abi}

    async def handle(self, message: Message, stream: ChunkSender | None = None) -> AgentReply:

        payload = json.dumps(message.as_json()).encode()
        name = self.spec.name
        # Log lines are collected in the worker thread and written once the call returns:
        # a round trip to trio per line would cost more than the guest call itself.
        lines: list[tuple[int, str]] = []
        hooks = GuestHooks(
            log=lambda level, text: lines.append((level, text)),
            send_message=self._sender_for(message, lines),
            log_dropped=self._log_dropped.inc,
        )
        with span(self._span_name, self._span_attributes) as current:
            try:
                # without a streaming consumer, chunks are not handed to trio one by one: each
                # hand-off is a thread round trip, and the reply body carries them all anyway
                reply = await self.module.handle(
                    payload, stream=None if stream is None else _TextSink(stream), hooks=hooks
                )
            except WasmTrap as exc:
                self.metrics.traps.labels(agent=name, trap=exc.trap).inc()
                set_attributes(current, {"caxton.wasm.outcome": "trap"})
                raise
            except WasmLimitExceeded as exc:
                self.metrics.limits.labels(agent=name, limit=exc.limit).inc()
                set_attributes(current, {"caxton.wasm.outcome": "limit_exceeded"})
                raise
            finally:
                for level, text in lines:
                    self.logs.write(name, GUEST_LOG_LEVELS.get(level, "info"), text)
            if current is not None:
                current.set_attribute("caxton.wasm.outcome", "ok")
                current.set_attribute("caxton.wasm.fuel_used", reply.fuel_consumed)
        self._call_seconds.observe(reply.elapsed_s)
        self._fuel.inc(reply.fuel_consumed)
        return AgentReply(
            content=content_of(reply.body.decode("utf-8", errors="replace")),
            chunks=reply.chunks,
            fuel=reply.fuel_consumed,
        )

    async def aclose(self) -> None:
        await self.module.aclose()

    def _sender_for(
        self, handling: Message, lines: list[tuple[int, str]]
    ) -> Callable[[bytes], int]:
        """The ``caxton.send_message`` hook while the guest handles ``handling``.

        Runs in the guest's worker thread: it parses the envelope and hands it to the trio
        side, which delivers it one hop further than the message being handled. At most
        ``MAX_SENDS_PER_CALL`` sends are accepted per call (issue #13 item 5); every refusal is
        counted (``caxton_wasm_send_refused_total``), the first of each kind in a call logged
        (into ``lines``, written to the agent's log after the call).
        """
        poster = self.poster
        name = self.spec.name
        limit = self.max_message_size
        metric = self.metrics.send_refused
        accepted = 0
        reported: set[int] = set()

        def refused(code: int) -> int:
            reason = SEND_REFUSALS.get(code, "refused")
            metric.labels(agent=name, reason=reason).inc()
            # the router logs its own refusals; these are the runtime's (once per call each)
            if code in _RUNTIME_REFUSALS and code not in reported:
                reported.add(code)
                lines.append((2, f"send_message refused ({code}): {_RUNTIME_REFUSALS[code]}"))
            return code

        def send(data: bytes) -> int:
            nonlocal accepted
            if accepted >= MAX_SENDS_PER_CALL:
                return refused(SEND_CALL_LIMIT)
            try:
                envelope = json.loads(data)
            except ValueError:
                return refused(SEND_NOT_A_MESSAGE)
            outgoing = message_from_guest(
                envelope, sender=name, handling=handling, max_message_size=limit
            )
            if outgoing is None:
                return refused(SEND_NOT_A_MESSAGE)
            # the receiver's span is a child of this call's (issue #18)
            result: int = trio.from_thread.run_sync(poster.post, stamped(outgoing))
            if result != SEND_ACCEPTED:
                return refused(result)
            accepted += 1
            return result

        return send


def message_from_guest(
    envelope: object, *, sender: str, handling: Message, max_message_size: int
) -> Message | None:
    """A guest's ``send_message`` envelope as a message one hop further, or ``None`` when it
    is not one (:func:`~caxton.messaging.envelope.parse_envelope`; a guest may leave out
    ``content``, which is then empty)."""
    if not isinstance(envelope, dict):
        return None
    try:
        return parse_envelope(
            {"content": "", **envelope},
            sender=sender,
            max_message_size=max_message_size,
            handling=handling,
        )
    except CaxtonError:
        return None


class WasmRuntime:
    """Loads WASM agents into the server's :class:`~caxton.wasm.WasmPool`."""

    def __init__(
        self,
        pool: WasmPool,
        logs: AgentLogs,
        metrics: Metrics,
        *,
        poster: MessagePoster,
        max_message_size: int,
    ) -> None:
        self.pool = pool
        self.logs = logs
        self.metrics = WasmMetrics.register(metrics)
        self.poster = poster
        self.max_message_size = max_message_size

    async def load(self, request: LoadRequest) -> AgentInstance:
        spec = request.spec
        assert isinstance(spec, WasmAgentSpec)
        if request.module is None:
            raise CaxtonError(f"agent {spec.name!r} has no module bytes to load")
        logs = self.logs
        name = spec.name

        def log(level: int, text: str) -> None:  # agent_init: written as it happens
            trio.from_thread.run_sync(logs.write, name, GUEST_LOG_LEVELS.get(level, "info"), text)

        module = await self.pool.load(
            request.module,
            spec.limits,
            name=spec.name,
            source_name=spec.module or f"{spec.name}.wasm",
            hooks=GuestHooks(log=log),
        )
        return WasmAgentInstance(spec, module, self)
