"""What the host gives a guest call, and how a failed call is reported.

Everything here runs in the worker thread that runs the guest, except where stated.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from typing import Protocol

import attrs
import trio
import wasmtime

from caxton.errors import AgentBusy, ServiceUnavailable
from caxton.wasm.control import CallControl
from caxton.wasm.errors import WasmLimitExceeded, WasmTrap
from caxton.wasm.limits import (
    AGENT_BUSY_RETRY_AFTER_S,
    LOG_LINES_BURST,
    LOG_LINES_PER_SECOND,
    DropNotes,
    LogBudget,
    TokenBucket,
    WasmLimits,
)

GUEST_LOGGER = logging.getLogger("caxton.wasm.guest")


class ChunkSink(Protocol):
    """Where a call's reply chunks go as the guest produces them: the send side of a stream
    its caller drains (a ``trio.MemorySendChannel[bytes]`` of unbounded capacity will do).

    ``send_nowait`` runs in the trio thread and must not refuse a chunk for want of room (the
    chunks of one call are bounded by ``max_message_size``); any exception from it stops the
    guest, and is what the call raises.
    """

    def send_nowait(self, chunk: bytes, /) -> None:
        """Take one chunk now."""
        ...


SendMessageHook = Callable[[bytes], int]
"""Called in the worker thread with the guest's FIPA message bytes; returns 0 if accepted."""

LogHook = Callable[[int, str], None]
"""Called in the worker thread with a guest log level and text."""

LogDroppedHook = Callable[[int], None]
"""Called in the worker thread with the bytes of guest log a call had to drop."""

# Guest log levels (caxton.log's first argument) to Python logging levels.
_LOG_LEVELS = {0: logging.DEBUG, 1: logging.INFO, 2: logging.WARNING, 3: logging.ERROR}

_CHUNK = -1  # queue entry kind: a reply chunk (other kinds are log levels)
_NOTE_LEVEL = 2  # warning: the note about dropped log bytes

SEND_REFUSED = -1
SEND_TOO_LARGE = -2


@attrs.frozen(kw_only=True)
class GuestHooks:
    """Host callbacks a guest reaches through its imports.

    Both run in the worker thread that runs the guest, while the guest waits. A hook that needs
    trio must go through ``trio.from_thread`` (for instance
    ``trio.from_thread.run_sync(send_channel.send_nowait, data)``). An exception from a hook
    stops the guest and is re-raised to the trio caller.

    Attributes:
        send_message: delivers a ``caxton.send_message`` call; returns 0 when accepted, a
            negative number when refused. Without it every send is refused.
        log: receives ``caxton.log`` lines (and a wasi-stdio guest's stderr), within the call's
            :class:`~caxton.wasm.limits.LogBudget`, then one note line when some were dropped.
            Without it they go to the ``caxton.wasm.guest`` logger.
        log_dropped: told how many bytes of log a call dropped (for a metric).
    """

    send_message: SendMessageHook | None = None
    log: LogHook | None = None
    log_dropped: LogDroppedHook | None = None


def log_to_python(agent: str) -> LogHook:
    """Return a log hook that writes to the ``caxton.wasm.guest`` logger."""

    def log(level: int, text: str) -> None:
        GUEST_LOGGER.log(_LOG_LEVELS.get(level, logging.INFO), "[%s] %s", agent, text)

    return log


@attrs.define(eq=False)
class CallContext:
    """One guest call as the host functions see it.

    Host functions of caxton-v1 run in the worker thread that runs the guest and hand chunks
    over at once. WASI output callbacks run in a wasmtime-internal thread where trio cannot
    be reached, so they only queue their chunks and log lines; the worker thread hands the
    queue over at each epoch tick (:meth:`flush`, via ``CallControl.on_tick``) and when the
    guest returns.

    A chunk is handed over by putting it in ``stream`` (whose total is bounded by
    ``max_message_size``): the guest never waits for the consumer of its reply (issue #13
    item 11); the caller drains the stream.

    Attributes:
        agent: the agent name, for errors and logs.
        limits: the limits of this call.
        control: the shared stop flag and deadline.
        hooks: the host callbacks.
        stream: where reply chunks go as they are produced, or None to only collect them.
        log_budget: what this call may still log (its bucket is the agent's).
        drop_notes: when the agent's next note about dropped log is due (the agent's).
        chunks: every chunk accepted so far (handed over, or queued for that).
    """

    agent: str
    limits: WasmLimits
    control: CallControl
    hooks: GuestHooks
    log_budget: LogBudget
    stream: ChunkSink | None = None
    chunks: list[bytes] = attrs.field(factory=list)
    _queue: collections.deque[tuple[int, bytes]] = attrs.field(factory=collections.deque)
    drop_notes: DropNotes = attrs.field(factory=DropNotes)
    _reported_dropped: int = 0
    _reported_lines: int = 0

    def deliver(self, chunk: bytes) -> None:
        """Hand one reply chunk to the caller now (worker thread only).

        Never waits for the consumer and never raises: any problem stops the guest instead.
        """
        if self._accept(chunk):
            self._send(chunk)

    def queue_chunk(self, chunk: bytes) -> None:
        """Accept a reply chunk from any thread; :meth:`flush` delivers it."""
        if self._accept(chunk):
            self._queue.append((_CHUNK, chunk))

    def admit_log(self, length: int) -> int:
        """How many bytes of a ``length``-byte log line to keep (0: drop it). Any thread."""
        return self.log_budget.admit(length)

    def queue_log(self, level: int, text: bytes) -> None:
        """Accept a guest log line from any thread (within the budget); :meth:`flush` passes
        it on."""
        keep = self.admit_log(len(text))
        if keep:
            self._queue.append((level, text[:keep]))

    def flush(self) -> None:
        """Deliver queued chunks and log lines, in order (worker thread only)."""
        while self._queue:
            kind, data = self._queue.popleft()
            if kind == _CHUNK:
                self._send(data)
            else:
                self.log(kind, data.decode("utf-8", errors="replace"))

    def report_dropped_logs(self) -> None:
        """Tell the ``log_dropped`` hook what this call dropped, and write the agent's note
        line when one is due (at most one a second per agent version: :class:`DropNotes`).
        Worker thread only."""
        budget = self.log_budget
        dropped = budget.dropped_bytes - self._reported_dropped
        if dropped <= 0:
            return
        lines = budget.dropped_lines - self._reported_lines
        self._reported_dropped, self._reported_lines = budget.dropped_bytes, budget.dropped_lines
        due = self.drop_notes.add(dropped, lines)
        if due is not None:
            total_bytes, total_lines, alone = due
            when = "in this call" if alone else "in this call and those since the last note"
            self.log(_NOTE_LEVEL, budget.note_for(total_bytes, total_lines, when))
        if self.hooks.log_dropped is not None:
            try:
                self.hooks.log_dropped(dropped)
            except Exception:  # a metric must not fail the call
                GUEST_LOGGER.exception("[%s] counting dropped log bytes failed", self.agent)

    def _accept(self, chunk: bytes) -> bool:
        control = self.control
        if control.stopping or not chunk:
            return False
        control.reply_bytes += len(chunk)
        if control.reply_bytes > self.limits.max_message_size:
            control.stop("message_size")
            return False
        self.chunks.append(chunk)
        return True

    def _send(self, chunk: bytes) -> None:
        if self.stream is None or self.control.stopping:
            return
        try:
            trio.from_thread.run_sync(self.stream.send_nowait, chunk)
        except BaseException as exc:  # the stream is closed (its reader is gone): stop
            self.control.stop("host_error", exception=exc)

    def send_message(self, data: bytes) -> int:
        """Pass a guest's outgoing message to the hook; return the guest-visible status."""
        if self.control.stopping:
            return SEND_REFUSED
        if len(data) > self.limits.max_message_size:
            return SEND_TOO_LARGE
        hook = self.hooks.send_message
        if hook is None:
            return SEND_REFUSED
        try:
            return int(hook(data))
        except BaseException as exc:
            self.control.stop("host_error", exception=exc)
            return SEND_REFUSED

    def log(self, level: int, text: str) -> None:
        """Pass a guest log line (already within the budget) to the hook or the logger."""
        hook = self.hooks.log or log_to_python(self.agent)
        try:
            hook(level, text)
        except BaseException as exc:
            self.control.stop("host_error", exception=exc)


def new_log_bucket() -> TokenBucket:
    """A guest log line bucket with the server's rate (one per agent version)."""
    return TokenBucket(rate_per_s=LOG_LINES_PER_SECOND, burst=LOG_LINES_BURST)


def agent_busy(agent: str, *, why: str) -> AgentBusy:
    """The refusal of a call that cannot get a worker thread or the instance in time."""
    return AgentBusy(agent=agent, why=why, retry_after_s=AGENT_BUSY_RETRY_AFTER_S)


def now_ms() -> int:
    """Wall-clock milliseconds since the Unix epoch, as ``caxton.now_ms`` returns them."""
    return time.time_ns() // 1_000_000


def _cause(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


def failure_for(ctx: CallContext, exc: Exception | None = None) -> BaseException:
    """Translate a failed or stopped guest call into what its trio caller should see.

    Called in the worker thread after wasmtime raised ``exc``, or after a call that returned
    although a stop had been requested (the guest finished before the next epoch tick). The
    control's stop reason wins over the exception, because a stop requested by the host surfaces
    from wasmtime as a generic error. Returns the host exception to re-raise (``trio.Cancelled``
    for a cancelled caller, or whatever a host callback raised), or a Caxton error.
    """
    control = ctx.control
    limits = ctx.limits
    reason = control.stop_reason
    if reason in ("cancelled", "host_error") and control.host_exception is not None:
        return control.host_exception
    if reason == "shutdown":
        return ServiceUnavailable(
            f"WASM agent {ctx.agent!r}: the call was stopped because the WASM pool is "
            "shutting down."
        )
    if reason == "time":
        return WasmLimitExceeded(
            agent=ctx.agent,
            limit="time",
            value=limits.max_execution_time_s,
            what="the call ran past its wall-clock budget and was stopped",
        )
    if reason == "message_size":
        return WasmLimitExceeded(
            agent=ctx.agent,
            limit="message_size",
            value=limits.max_message_size,
            observed=control.reply_bytes,
            what="the reply is too large",
        )
    if reason == "bad_pointer":
        return WasmTrap(agent=ctx.agent, trap="bad_pointer", detail=control.stop_detail)
    if isinstance(exc, wasmtime.Trap):
        code = exc.trap_code
        if code is wasmtime.TrapCode.OUT_OF_FUEL:
            return WasmLimitExceeded(
                agent=ctx.agent,
                limit="fuel",
                value=limits.max_fuel,
                what="the call ran out of fuel (CPU budget)",
            )
        if code is wasmtime.TrapCode.INTERRUPT:
            return WasmLimitExceeded(
                agent=ctx.agent,
                limit="time",
                value=limits.max_execution_time_s,
                what="the call was interrupted",
            )
        name = code.name.lower() if code is not None else "trap"
        return WasmTrap(agent=ctx.agent, trap=name, detail=_cause(exc))
    if exc is None:
        return WasmTrap(agent=ctx.agent, trap="stopped", detail=control.stop_detail)
    return WasmTrap(agent=ctx.agent, trap="error", detail=_cause(exc))
