"""A loaded WebAssembly agent version and the async API to talk to it."""

from __future__ import annotations

import collections
import functools
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import attrs
import trio

from caxton.errors import AgentBusy, ServiceUnavailable
from caxton.wasm import wasi_stdio
from caxton.wasm.abi import CAXTON_V1, Abi
from caxton.wasm.caxton_v1 import CaxtonV1Instance
from caxton.wasm.control import CallControl, StopReason
from caxton.wasm.errors import WasmAgentFailed, WasmLimitExceeded
from caxton.wasm.host import (
    CallContext,
    ChunkCallback,
    GuestHooks,
    agent_busy,
    failure_for,
    new_log_bucket,
)
from caxton.wasm.limits import (
    MAX_CONCURRENT_CALLS_PER_AGENT,
    MAX_QUEUED_CALLS_PER_AGENT,
    LogBudget,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    import wasmtime

    from caxton.wasm.control import Stoppable
    from caxton.wasm.limits import WasmLimits

LOGGER = logging.getLogger("caxton.wasm")

T = TypeVar("T")

BATCH_MAX_MESSAGES = 32
"""At most this many queued caxton-v1 messages run in one trip to a worker thread."""

BATCH_BUDGET_S = 0.010
"""No further queued message starts in a worker-thread trip that has run this long."""

ANNOUNCE_AFTER_S = 0.005
"""A message running this long in a trip lets the callers of the finished ones have their
outcome at its next epoch tick (one trip back to trio), instead of at the end of the trip."""


class GuestRunner(Protocol):
    """What a loaded module needs from its pool: the engine and a way into a worker thread."""

    @property
    def engine(self) -> wasmtime.Engine:
        """The engine every module of the pool was compiled for."""
        ...

    async def run_in_worker(
        self,
        fn: Callable[[], T],
        control: Stoppable | None = None,
        *,
        agent: str | None = None,
        deadline: float | None = None,
    ) -> T:
        """Run ``fn`` in a worker thread under the pool's limiters (see ``WasmPool``)."""
        ...

    def start_soon(self, async_fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``async_fn`` as a task of the pool (see ``WasmPool``)."""
        ...


@attrs.frozen(kw_only=True)
class WasmReply:
    """The outcome of one successful guest call.

    Attributes:
        body: every reply chunk, concatenated (at most ``max_message_size`` bytes).
        chunks: how many chunks the guest produced.
        fuel_consumed: fuel spent by the call (including a re-instantiation, if one was needed).
        elapsed_s: wall-clock time of the call, queueing for a worker thread included (and,
            for a streamed reply, the time its consumer took to take the last chunks).
    """

    body: bytes
    chunks: int
    fuel_consumed: int
    elapsed_s: float


@attrs.frozen(kw_only=True)
class AgentModuleStatistics:
    """A snapshot of one loaded module's counters.

    Attributes:
        calls: messages handled successfully.
        failures: messages that ended in an error (cancellations excluded).
        instances_created: caxton-v1 instances created so far (1 after load; +1 per re-creation).
        instance_alive: whether a caxton-v1 instance is currently kept.
        batches: worker-thread trips that ran caxton-v1 messages (each runs one or more
            queued messages back to back).
        busy: calls refused with ``AGENT_BUSY`` (queue full, or their time ran out queued).
        pending: calls accepted and not finished (queued or running).
    """

    calls: int
    failures: int
    instances_created: int
    instance_alive: bool
    batches: int = 0
    busy: int = 0
    pending: int = 0


@attrs.define(eq=False)
class _Turn:
    """One caxton-v1 message waiting for, running on, or done with the module's instance.

    ``state``, ``fuel`` and ``error`` are written under the module's queue lock (the worker
    thread writes them); ``announced`` and ``wake`` belong to the trio thread.
    """

    message: bytes
    ctx: CallContext
    alone: bool
    state: Literal["queued", "running", "finished"] = "queued"
    fuel: int = 0
    error: BaseException | None = None
    announced: bool = False
    wake: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class _Batch:
    """One worker-thread trip running queued messages; stops them all on pool shutdown."""

    lock: threading.Lock
    first: _Turn | None = None  # a streaming message, run alone by its own caller
    current: CallControl | None = None
    stop_reason: StopReason | None = None

    def stop(
        self, reason: StopReason, detail: str = "", *, exception: BaseException | None = None
    ) -> None:
        """Stop the running message and start no other one. Safe from any thread."""
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            control = self.current
        if control is not None:
            control.stop(reason, detail, exception=exception)


class LoadedAgentModule:
    """One compiled, validated and (for caxton-v1) instantiated agent version.

    Created by ``WasmPool.load``. A caxton-v1 module keeps one instance whose state survives
    between messages; calls to it are serialised, and the instance is discarded after a trap,
    a limit hit or a cancellation and re-created (with ``agent_init``) for the next message.
    A wasi-stdio module runs each message in a fresh instance, concurrently.

    caxton-v1 messages wait in a FIFO queue, served by a task of the pool (so that no caller
    waits on behalf of another). It takes a worker thread, which runs the queued messages back
    to back, each under its own control, limits and fuel, until the queue is empty,
    ``BATCH_MAX_MESSAGES`` ran, ``BATCH_BUDGET_S`` passed, a message failed with a trap, a
    limit or a cancellation (the rest stay queued for the next trip, on a fresh instance), or
    the next message streams its reply: that one runs alone, in a trip of its own caller, so
    that its chunks reach that caller's task. Callers learn their outcome when the
    trip returns, or at an epoch tick of a slow message after theirs. So one trip to a worker
    thread and back serves every message that queued up meanwhile.

    Bounds (issue #13): at most ``max_pending_calls`` calls are accepted at once (more are
    refused with ``AgentBusy`` at once); time spent queued counts against the call's
    ``max_execution_time`` (a call whose time runs out before it starts fails with
    ``AgentBusy``); a streamed reply is buffered (up to ``max_message_size``) and forwarded by
    a task of the caller, so the guest never waits for the consumer.

    Attributes:
        name: the agent name (used in errors, logs, and as the WASI program name).
        abi: ``"caxton-v1"`` or ``"wasi-stdio"``.
        limits: the limits every call runs under.
        content_hash: SHA-256 of the module source, as deployed.
        max_pending_calls: calls accepted at once (queued or running).
    """

    def __init__(
        self,
        *,
        runner: GuestRunner,
        module: wasmtime.Module,
        name: str,
        abi: Abi,
        limits: WasmLimits,
        content_hash: str,
        hooks: GuestHooks,
    ) -> None:
        self.name = name
        self.abi: Abi = abi
        self.limits = limits
        self.content_hash = content_hash
        self.hooks = hooks
        self._runner = runner
        self._module = module
        self._lock = trio.Lock()  # held by start(), aclose() and during each trip
        self._queue: collections.deque[_Turn] = collections.deque()
        self._queue_lock = threading.Lock()  # guards the queue and every turn's outcome
        self._finished: list[_Turn] = []  # finished in the worker, not yet announced
        self._driving = False
        self._batches = 0
        self._instance: CaxtonV1Instance | None = None
        self._pre: wasmtime.InstancePre | None = None
        self._closed = False
        self._calls = 0
        self._failures = 0
        self._instances_created = 0
        self._busy = 0
        self._pending = 0
        self.max_pending_calls = MAX_CONCURRENT_CALLS_PER_AGENT + MAX_QUEUED_CALLS_PER_AGENT
        self._log_bucket = new_log_bucket()  # guest log lines, shared by every call

    async def start(self) -> None:
        """Prepare the module for traffic: instantiate and run ``agent_init`` (caxton-v1), or
        resolve the WASI imports (wasi-stdio).

        Raises:
            WasmAgentFailed, WasmLimitExceeded, WasmTrap: ``agent_init`` or the start function
                failed (``WasmPool.load`` reports these as ``WasmBadModule``).
            wasmtime.WasmtimeError: the module cannot be instantiated.

        Cancellation:
            Stops a running ``agent_init`` within about one epoch tick and re-raises
            ``trio.Cancelled``; the module then has no instance.
        """
        if self.abi == CAXTON_V1:
            ctx = self._context(None, None)
            async with self._lock:
                await self._runner.run_in_worker(
                    lambda: self._ensure_instance(ctx), ctx.control, agent=self.name
                )
        else:
            engine = self._runner.engine
            module = self._module
            self._pre = await self._runner.run_in_worker(
                lambda: wasi_stdio.prepare(engine, module), agent=self.name
            )

    async def handle(
        self,
        message: bytes,
        *,
        on_chunk: ChunkCallback | None = None,
        hooks: GuestHooks | None = None,
    ) -> WasmReply:
        """Deliver one message to the guest and return its reply.

        Each reply chunk (a ``caxton.reply`` call, or a write to stdout) is passed to
        ``on_chunk`` as soon as the guest produces it, in order, by a task of the caller; the
        guest never waits for ``on_chunk`` (the chunks wait in memory, at most
        ``max_message_size`` bytes of them), so a slow consumer holds neither the guest, nor
        its worker thread, nor the agent's other callers (issue #13 item 11); this call
        returns once ``on_chunk`` has taken every chunk. The chunks already delivered stay
        delivered when the call later fails.

        Args:
            message: the message JSON (DESIGN §5 envelope), at most ``max_message_size`` bytes.
            on_chunk: async callable receiving each chunk; it runs in a child task of the
                caller (with the caller's context). If it raises, the guest is stopped and the
                exception propagates from here.
            hooks: host callbacks for this call; defaults to the ones given at load.

        Returns:
            The whole reply and what the call cost.

        Raises:
            WasmLimitExceeded: the message or the reply is over ``max_message_size``, or the
                call ran out of fuel or time.
            WasmTrap: the guest trapped.
            WasmAgentFailed: the guest reported failure (non-zero status or exit code).
            AgentBusy: ``max_pending_calls`` calls are already accepted, or the call's
                ``max_execution_time`` ran out before it could start.
            ServiceUnavailable: the pool is not running, or this module was closed.

        Cancellation:
            Safe. A queued caxton-v1 message that has not started never runs. A running guest
            is stopped at the next epoch tick (within ~10 ms plus the tick interval) and
            ``trio.Cancelled`` propagates once it has stopped (for a streamed reply, inside
            a ``BaseExceptionGroup`` of the forwarding nursery); no thread is abandoned. A
            caxton-v1 instance interrupted this way is discarded and re-created for the next
            message; the other queued messages are unaffected.
        """
        if len(message) > self.limits.max_message_size:
            self._failures += 1
            raise WasmLimitExceeded(
                agent=self.name,
                limit="message_size",
                value=self.limits.max_message_size,
                observed=len(message),
                what="the incoming message is too large",
            )
        if self._pending >= self.max_pending_calls:
            self._busy += 1
            raise agent_busy(
                self.name,
                why=f"{self._pending} of its calls are already queued or running, the most "
                f"it accepts at once",
            )
        started = time.monotonic()
        self._pending += 1
        try:
            if on_chunk is None:
                ctx = self._context(None, hooks)
                fuel = await self._call(message, ctx)
            else:
                ctx, fuel = await self._streamed_call(message, on_chunk, hooks)
        except BaseException as exc:
            if isinstance(exc, AgentBusy):
                self._busy += 1
            elif not _is_cancellation(exc):
                self._failures += 1
            raise
        finally:
            self._pending -= 1
        self._calls += 1
        return WasmReply(
            body=b"".join(ctx.chunks),
            chunks=len(ctx.chunks),
            fuel_consumed=fuel,
            elapsed_s=time.monotonic() - started,
        )

    async def _call(self, message: bytes, ctx: CallContext) -> int:
        """Run one call to its end; return its fuel."""
        if self.abi == CAXTON_V1:
            return await self._queued_call(message, ctx)
        self._check_open()
        pre, engine = self._pre, self._runner.engine
        assert pre is not None, "LoadedAgentModule.start() was not called"
        return await self._runner.run_in_worker(
            lambda: wasi_stdio.run_once(engine, pre, message, ctx),
            ctx.control,
            agent=self.name,
            deadline=ctx.control.deadline,
        )

    async def _streamed_call(
        self, message: bytes, on_chunk: ChunkCallback, hooks: GuestHooks | None
    ) -> tuple[CallContext, int]:
        """Run one call whose chunks a child task forwards to ``on_chunk`` as they come.

        The guest puts its chunks in an unbounded channel (bounded in bytes by
        ``max_message_size``) and goes on; the forwarder waits for the consumer instead.
        """
        send, receive = trio.open_memory_channel[bytes](math.inf)
        ctx = self._context(send, hooks)
        consumer_failed: list[Exception] = []
        call_failed: list[Exception] = []
        fuel = 0

        async def forward() -> None:
            async with receive:
                async for chunk in receive:
                    try:
                        await on_chunk(chunk)
                    except Exception as exc:  # the consumer is gone: stop the guest
                        consumer_failed.append(exc)
                        ctx.control.stop("host_error", exception=exc)
                        return

        async with trio.open_nursery() as nursery:
            nursery.start_soon(forward)
            with send:
                try:
                    fuel = await self._call(message, ctx)
                except Exception as exc:  # the chunks before it still reach the consumer
                    call_failed.append(exc)
        if consumer_failed:
            raise consumer_failed[0]
        if call_failed:
            raise call_failed[0]
        return ctx, fuel

    async def aclose(self) -> None:
        """Refuse further messages and free the instance. Idempotent.

        Cancellation:
            Waits for the in-flight caxton-v1 call (bounded by its limits) to release the
            instance; cancelling that wait leaves the module closed, its instance freed by the
            garbage collector.
        """
        self._closed = True
        async with self._lock:
            if self._instance is not None:
                self._instance.close()
                self._instance = None
        self._pre = None

    def statistics(self) -> AgentModuleStatistics:
        """Return a snapshot of this module's counters."""
        return AgentModuleStatistics(
            calls=self._calls,
            failures=self._failures,
            instances_created=self._instances_created,
            instance_alive=self._instance is not None,
            batches=self._batches,
            busy=self._busy,
            pending=self._pending,
        )

    # -- the caxton-v1 queue (trio side) -----------------------------------------------------

    async def _queued_call(self, message: bytes, ctx: CallContext) -> int:
        """Queue one caxton-v1 message, wait for its turn to run and end, return its fuel."""
        turn = _Turn(message=message, ctx=ctx, alone=ctx.stream is not None)
        ctx.control.watch_worker_task = False  # its caller stops it instead (see _withdraw)
        with self._queue_lock:
            self._queue.append(turn)  # no checkpoint before this: queue order = call order
        try:
            self._kick()
            while not turn.announced:
                if turn.alone and not self._driving and self._head() is turn:
                    await self._drive_alone(turn)
                    continue
                # a queued call waits until its deadline at most (time queued counts against
                # max_execution_time); a running one is stopped by the deadline itself
                queued = self._still_queued(turn)
                at = _trio_time(ctx.control.deadline) if queued else math.inf
                turn.wake = trio.Event()
                with trio.move_on_at(at):
                    await turn.wake.wait()
                if (
                    queued
                    and not turn.announced
                    and time.monotonic() >= ctx.control.deadline
                    and self._still_queued(turn)
                ):
                    raise self._queue_timeout(ctx)
        except BaseException as exc:
            await self._withdraw(turn, exc)
            raise
        if turn.error is not None:
            raise turn.error
        return turn.fuel

    def _kick(self) -> None:
        """Keep the queue moving: start the serving task, or wake a streaming head's caller."""
        if self._driving:
            return
        head = self._head()
        if head is None:
            return
        if head.alone:
            head.wake.set()
            return
        self._driving = True
        try:
            self._runner.start_soon(self._serve)
        except ServiceUnavailable as exc:
            self._driving = False
            self._fail_queued(str(exc))

    async def _serve(self) -> None:
        """Run queued messages in worker-thread trips until none is left or the head streams.

        A task of the pool (``GuestRunner.start_soon``), so that no caller waits for another
        caller's message. When the module or the pool stops, every queued message fails with
        ``ServiceUnavailable``.
        """
        try:
            while (head := self._head()) is not None and not head.alone:
                batch = _Batch(lock=self._queue_lock)
                async with self._lock:
                    self._check_open()
                    self._batches += 1
                    await self._runner.run_in_worker(
                        functools.partial(self._run_batch, batch), batch, agent=self.name
                    )
                self._announce()
        except trio.Cancelled:
            self._fail_queued(
                f"WASM agent {self.name!r}: the WASM pool is shutting down; the message did "
                "not run."
            )
            raise
        except ServiceUnavailable as exc:  # the module or the pool stopped
            self._fail_queued(str(exc))
        except Exception as exc:
            LOGGER.exception("WASM agent %r: serving queued messages failed", self.name)
            self._fail_queued(f"WASM agent {self.name!r}: internal error ({exc!r}).")
        finally:
            self._driving = False
            self._announce()
            self._kick()

    async def _drive_alone(self, turn: _Turn) -> None:
        """Run ``turn`` (the head of the queue; it streams its reply) from its own caller.

        An error raised before the worker thread started (the module or the pool stopped) is
        ``turn``'s outcome; ``trio.Cancelled`` then propagates with ``turn`` still queued.
        """
        self._driving = True
        turn.ctx.control.watch_worker_task = True
        batch = _Batch(lock=self._queue_lock, first=turn)
        try:
            async with self._lock:
                self._check_open()
                self._batches += 1
                await self._runner.run_in_worker(
                    functools.partial(self._run_batch, batch),
                    batch,
                    agent=self.name,
                    deadline=turn.ctx.control.deadline,
                )
        except Exception as exc:
            with self._queue_lock:
                queued = turn.state == "queued"
                if queued:
                    self._queue.remove(turn)
                    turn.state = "finished"
                    turn.error = exc
            if not queued:
                raise
            turn.announced = True
        finally:
            self._driving = False
            self._announce()
            self._kick()

    async def _withdraw(self, turn: _Turn, exc: BaseException) -> None:
        """Leave the queue after ``exc`` (a cancellation) interrupted the wait for ``turn``.

        A queued message is removed and never runs. A running one is asked to stop; the wait
        for it to stop is shielded, and bounded by one epoch tick plus the trip back.
        """
        with self._queue_lock:
            state = turn.state
            if state == "queued":
                self._queue.remove(turn)
        if state == "queued":
            self._kick()
            return
        if not turn.announced:
            turn.ctx.control.stop("cancelled", exception=exc)
            with trio.CancelScope(shield=True):
                while not turn.announced:
                    turn.wake = trio.Event()
                    await turn.wake.wait()

    def _still_queued(self, turn: _Turn) -> bool:
        with self._queue_lock:
            return turn.state == "queued"

    def _queue_timeout(self, ctx: CallContext) -> AgentBusy:
        return agent_busy(
            self.name,
            why=f"the message waited in its queue for its whole [limits].max_execution_time "
            f"({ctx.limits.max_execution_time_s:g}s) and did not run",
        )

    def _head(self) -> _Turn | None:
        with self._queue_lock:
            return self._queue[0] if self._queue else None

    def _fail_queued(self, reason: str) -> None:
        """Fail every queued message with ``ServiceUnavailable(reason)``."""
        with self._queue_lock:
            for turn in self._queue:
                turn.state = "finished"
                turn.error = ServiceUnavailable(reason)
                self._finished.append(turn)
            self._queue.clear()
        self._announce()

    def _announce(self) -> None:
        """Wake the callers whose messages finished (trio thread)."""
        with self._queue_lock:
            finished, self._finished = self._finished, []
        for turn in finished:
            turn.announced = True
            turn.wake.set()

    # -- worker-thread side -----------------------------------------------------------------

    def _ensure_instance(self, ctx: CallContext) -> CaxtonV1Instance:
        if self._instance is None:
            self._instance = CaxtonV1Instance.create(self._runner.engine, self._module, ctx)
            self._instances_created += 1
        return self._instance

    def _run_batch(self, batch: _Batch) -> None:
        """Run queued messages back to back; each outcome is recorded in its turn."""
        started = time.monotonic()
        count = 0
        while True:
            turn = self._take(batch, count, started)
            if turn is None:
                return
            count += 1
            ctx = turn.ctx
            fuel, error = 0, None
            if ctx.control.stopping:  # stopped before it started: it does not run
                error = failure_for(ctx)
            elif time.monotonic() >= ctx.control.deadline:  # its time ran out in the queue
                error = self._queue_timeout(ctx)
            else:
                ctx.control.on_tick = functools.partial(
                    self._announce_from_worker, time.monotonic() + ANNOUNCE_AFTER_S
                )
                try:
                    fuel = self._handle_v1(turn.message, ctx)
                except BaseException as exc:
                    error = exc
                finally:
                    ctx.control.on_tick = None
            with self._queue_lock:
                turn.fuel, turn.error = fuel, error
                turn.state = "finished"
                self._finished.append(turn)
                batch.current = None
            if turn.alone or (
                error is not None and not isinstance(error, WasmAgentFailed | AgentBusy)
            ):
                return  # a failed message ends the trip: the rest waits for a fresh instance

    def _take(self, batch: _Batch, count: int, started: float) -> _Turn | None:
        """Take the next queued message for ``batch``, or None when the trip should end."""
        if count > 0 and (
            count >= BATCH_MAX_MESSAGES or time.monotonic() - started > BATCH_BUDGET_S
        ):
            return None
        with self._queue_lock:
            if batch.stop_reason is not None or not self._queue or self._closed:
                return None  # (a closed module runs no further message: they are refused)
            turn = self._queue[0]
            if batch.first is not None:  # a streaming message runs alone
                if count > 0 or turn is not batch.first:
                    return None
            elif turn.alone:
                return None
            self._queue.popleft()
            turn.state = "running"
            batch.current = turn.ctx.control
            return turn

    def _announce_from_worker(self, not_before: float) -> None:
        """At an epoch tick of a slow message, wake the callers of the finished ones."""
        if time.monotonic() < not_before:
            return
        with self._queue_lock:
            pending = bool(self._finished)
        if pending:
            trio.from_thread.run_sync(self._announce)

    def _handle_v1(self, message: bytes, ctx: CallContext) -> int:
        fresh = self._instance is None
        instance = self._ensure_instance(ctx)
        init_fuel = 0
        if fresh:
            init_fuel = self.limits.max_fuel - instance.guard.store.get_fuel()
        try:
            return init_fuel + instance.handle(message, ctx)
        except WasmAgentFailed:
            raise  # the guest returned normally; its state is intact
        except BaseException:
            instance.close()
            self._instance = None
            raise

    # -- helpers ----------------------------------------------------------------------------

    def _context(
        self, stream: trio.MemorySendChannel[bytes] | None, hooks: GuestHooks | None
    ) -> CallContext:
        """A call's context; its deadline starts now (time queued counts against it)."""
        return CallContext(
            agent=self.name,
            limits=self.limits,
            control=CallControl.starting_now(self.limits.max_execution_time_s),
            hooks=hooks or self.hooks,
            log_budget=LogBudget(bucket=self._log_bucket),
            stream=stream,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailable(f"WASM agent {self.name!r}: this version has been stopped.")


def _trio_time(deadline: float) -> float:
    """A ``time.monotonic()`` deadline on trio's clock."""
    return trio.current_time() + (deadline - time.monotonic())


def _is_cancellation(exc: BaseException) -> bool:
    """Whether ``exc`` is ``trio.Cancelled``, or a group of nothing else."""
    if isinstance(exc, BaseExceptionGroup):
        return all(_is_cancellation(e) for e in exc.exceptions)
    return isinstance(exc, trio.Cancelled)
