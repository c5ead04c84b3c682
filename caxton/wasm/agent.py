"""A loaded WebAssembly agent version and the async API to talk to it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Protocol, TypeVar

import attrs
import trio

from caxton.errors import ServiceUnavailable
from caxton.wasm import wasi_stdio
from caxton.wasm.abi import CAXTON_V1, Abi
from caxton.wasm.caxton_v1 import CaxtonV1Instance
from caxton.wasm.control import CallControl
from caxton.wasm.errors import WasmAgentFailed, WasmLimitExceeded
from caxton.wasm.host import CallContext, ChunkCallback, GuestHooks

if TYPE_CHECKING:
    from collections.abc import Callable

    import wasmtime

    from caxton.wasm.limits import WasmLimits

T = TypeVar("T")


class GuestRunner(Protocol):
    """What a loaded module needs from its pool: the engine and a way into a worker thread."""

    @property
    def engine(self) -> wasmtime.Engine:
        """The engine every module of the pool was compiled for."""
        ...

    async def run_in_worker(self, fn: Callable[[], T], control: CallControl | None = None) -> T:
        """Run ``fn`` in a worker thread under the pool's limiter (see ``WasmPool``)."""
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
    """

    calls: int
    failures: int
    instances_created: int
    instance_alive: bool


class LoadedAgentModule:
    """One compiled, validated and (for caxton-v1) instantiated agent version.

    Created by ``WasmPool.load``. A caxton-v1 module keeps one instance whose state survives
    between messages; calls to it are serialised, and the instance is discarded after a trap,
    a limit hit or a cancellation and re-created (with ``agent_init``) for the next message.
    A wasi-stdio module runs each message in a fresh instance, concurrently.

    Attributes:
        name: the agent name (used in errors, logs, and as the WASI program name).
        abi: ``"caxton-v1"`` or ``"wasi-stdio"``.
        limits: the limits every call runs under.
        content_hash: SHA-256 of the module source, as deployed.
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
        self._lock = trio.Lock()
        self._instance: CaxtonV1Instance | None = None
        self._pre: wasmtime.InstancePre | None = None
        self._closed = False
        self._calls = 0
        self._failures = 0
        self._instances_created = 0

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
                await self._runner.run_in_worker(lambda: self._ensure_instance(ctx), ctx.control)
        else:
            engine = self._runner.engine
            module = self._module
            self._pre = await self._runner.run_in_worker(lambda: wasi_stdio.prepare(engine, module))

    async def handle(
        self,
        message: bytes,
        *,
        on_chunk: ChunkCallback | None = None,
        hooks: GuestHooks | None = None,
    ) -> WasmReply:
        """Deliver one message to the guest and return its reply.

        Each reply chunk (a ``caxton.reply`` call, or a write to stdout) is passed to
        ``on_chunk`` as soon as the guest produces it, in order; the guest waits while
        ``on_chunk`` runs, so a slow consumer slows the guest (and uses its time budget). The
        chunks already delivered stay delivered when the call later fails.

        Args:
            message: the message JSON (DESIGN §5 envelope), at most ``max_message_size`` bytes.
            on_chunk: async callable receiving each chunk; it runs in the caller's task context.
                If it raises, the guest is stopped and the exception propagates from here.
            hooks: host callbacks for this call; defaults to the ones given at load.

        Returns:
            The whole reply and what the call cost.

        Raises:
            WasmLimitExceeded: the message or the reply is over ``max_message_size``, or the
                call ran out of fuel or time.
            WasmTrap: the guest trapped.
            WasmAgentFailed: the guest reported failure (non-zero status or exit code).
            ServiceUnavailable: the pool is not running, or this module was closed.

        Cancellation:
            Safe. The guest is stopped at the next epoch tick (within ~10 ms plus the tick
            interval) and ``trio.Cancelled`` propagates once the worker thread has returned; no
            thread is abandoned. A caxton-v1 instance interrupted this way is discarded and
            re-created for the next message.
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
        started = time.monotonic()
        ctx = self._context(on_chunk, hooks)
        try:
            if self.abi == CAXTON_V1:
                async with self._lock:
                    self._check_open()
                    fuel = await self._runner.run_in_worker(
                        lambda: self._handle_v1(message, ctx), ctx.control
                    )
            else:
                self._check_open()
                pre, engine = self._pre, self._runner.engine
                assert pre is not None, "LoadedAgentModule.start() was not called"
                fuel = await self._runner.run_in_worker(
                    lambda: wasi_stdio.run_once(engine, pre, message, ctx), ctx.control
                )
        except trio.Cancelled:
            raise
        except BaseException:
            self._failures += 1
            raise
        self._calls += 1
        return WasmReply(
            body=b"".join(ctx.chunks),
            chunks=len(ctx.chunks),
            fuel_consumed=fuel,
            elapsed_s=time.monotonic() - started,
        )

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
        )

    # -- worker-thread side -----------------------------------------------------------------

    def _ensure_instance(self, ctx: CallContext) -> CaxtonV1Instance:
        if self._instance is None:
            self._instance = CaxtonV1Instance.create(self._runner.engine, self._module, ctx)
            self._instances_created += 1
        return self._instance

    def _handle_v1(self, message: bytes, ctx: CallContext) -> int:
        ctx.control.start_clock(self.limits.max_execution_time_s)
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

    def _context(self, on_chunk: ChunkCallback | None, hooks: GuestHooks | None) -> CallContext:
        return CallContext(
            agent=self.name,
            limits=self.limits,
            control=CallControl.starting_now(self.limits.max_execution_time_s),
            hooks=hooks or self.hooks,
            on_chunk=on_chunk,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise ServiceUnavailable(f"WASM agent {self.name!r}: this version has been stopped.")
