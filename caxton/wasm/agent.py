"""A loaded WebAssembly agent version and the async API to talk to it.

This module keeps the version's lifecycle (load, instance, ``agent_init``, close) and its
counters; the queue and worker-thread trips of caxton-v1 messages are
:mod:`caxton.wasm.scheduler`'s.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

from caxton.errors import AgentBusy, ServiceUnavailable
from caxton.wasm import wasi_stdio
from caxton.wasm.abi import CAXTON_V1, Abi
from caxton.wasm.caxton_v1 import CaxtonV1Instance
from caxton.wasm.control import CallControl
from caxton.wasm.errors import WasmAgentFailed, WasmLimitExceeded
from caxton.wasm.host import (
    CallContext,
    ChunkSink,
    GuestHooks,
    agent_busy,
    new_log_bucket,
)
from caxton.wasm.limits import (
    MAX_CONCURRENT_CALLS_PER_AGENT,
    MAX_QUEUED_CALLS_PER_AGENT,
    DropNotes,
    LogBudget,
)
from caxton.wasm.scheduler import BatchScheduler, WorkerRunner

if TYPE_CHECKING:
    import wasmtime

    from caxton.wasm.limits import WasmLimits


class GuestRunner(WorkerRunner, Protocol):
    """What a loaded module needs from its pool: the engine and a way into a worker thread."""

    @property
    def engine(self) -> wasmtime.Engine:
        """The engine every module of the pool was compiled for."""
        ...


@attrs.frozen(kw_only=True)
class WasmReply:
    """The outcome of one successful guest call.

    Attributes:
        body: every reply chunk, concatenated (at most ``max_message_size`` bytes).
        chunks: how many chunks the guest produced.
        fuel_consumed: fuel spent by the call (including a re-instantiation, if one was needed).
        elapsed_s: wall-clock time of the call, queueing for a worker thread included.
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


class LoadedAgentModule:
    """One compiled, validated and (for caxton-v1) instantiated agent version.

    Created by ``WasmPool.load``. A caxton-v1 module keeps one instance whose state survives
    between messages; calls to it are serialised, and the instance is discarded after a trap,
    a limit hit or a cancellation and re-created (with ``agent_init``) for the next message.
    A wasi-stdio module runs each message in a fresh instance, concurrently.

    caxton-v1 messages wait in the FIFO queue of a
    :class:`~caxton.wasm.scheduler.BatchScheduler`, which runs them back to back in
    worker-thread trips; this class keeps the instance they run on.

    Bounds (issue #13): at most ``max_pending_calls`` calls are accepted at once (more are
    refused with ``AgentBusy`` at once); time spent queued counts against the call's
    ``max_execution_time`` (a call whose time runs out before it starts fails with
    ``AgentBusy``); a streamed reply's chunks go to the caller's stream at once (at most
    ``max_message_size`` bytes of them), so the guest never waits for the consumer.

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
        self._scheduler = BatchScheduler(
            name=name,
            runner=runner,
            lock=self._lock,
            run=self._handle_v1,
            check_open=self._check_open,
            time_limit_s=limits.max_execution_time_s,
        )
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
        self._drop_notes = DropNotes()  # notes about dropped guest log, shared too

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
        stream: ChunkSink | None = None,
        hooks: GuestHooks | None = None,
    ) -> WasmReply:
        """Deliver one message to the guest and return its reply.

        Each reply chunk (a ``caxton.reply`` call, or a write to stdout) is put in ``stream``
        as soon as the guest produces it, in order, from the worker thread; the guest never
        waits for the stream's reader (the chunks wait in the stream, at most
        ``max_message_size`` bytes of them), so a slow reader holds neither the guest, nor its
        worker thread, nor the agent's other callers (issue #13 item 11). The caller drains the
        stream (in another task) and closes it once this returns. The chunks already put there
        stay there when the call later fails.

        Args:
            message: the message JSON (DESIGN §5 envelope), at most ``max_message_size`` bytes.
            stream: where each chunk goes (see :class:`~caxton.wasm.host.ChunkSink`); if it
                raises, the guest is stopped and the exception propagates from here. Without
                it the chunks are only collected into the reply.
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
            ``trio.Cancelled`` propagates once it has stopped; no thread is abandoned. A
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
            ctx = self._context(stream, hooks)
            fuel = await self._call(message, ctx)
        except BaseException as exc:
            if isinstance(exc, AgentBusy):
                self._busy += 1
            elif not isinstance(exc, trio.Cancelled):
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
            return await self._scheduler.call(message, ctx)
        self._check_open()
        pre, engine = self._pre, self._runner.engine
        assert pre is not None, "LoadedAgentModule.start() was not called"
        return await self._runner.run_in_worker(
            lambda: wasi_stdio.run_once(engine, pre, message, ctx),
            ctx.control,
            agent=self.name,
            deadline=ctx.control.deadline,
        )

    async def aclose(self) -> None:
        """Refuse further messages and free the instance. Idempotent.

        Cancellation:
            Waits for the in-flight caxton-v1 call (bounded by its limits) to release the
            instance; cancelling that wait leaves the module closed, its instance freed by the
            garbage collector.
        """
        self._closed = True
        self._scheduler.close()
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
            batches=self._scheduler.batches,
            busy=self._busy,
            pending=self._pending,
        )

    # -- worker-thread side -----------------------------------------------------------------

    def _ensure_instance(self, ctx: CallContext) -> CaxtonV1Instance:
        if self._instance is None:
            self._instance = CaxtonV1Instance.create(self._runner.engine, self._module, ctx)
            self._instances_created += 1
        return self._instance

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

    def _context(self, stream: ChunkSink | None, hooks: GuestHooks | None) -> CallContext:
        """A call's context; its deadline starts now (time queued counts against it)."""
        return CallContext(
            agent=self.name,
            limits=self.limits,
            control=CallControl.starting_now(self.limits.max_execution_time_s),
            hooks=hooks or self.hooks,
            log_budget=LogBudget(bucket=self._log_bucket),
            drop_notes=self._drop_notes,
            stream=stream,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailable(f"WASM agent {self.name!r}: this version has been stopped.")
