"""The WASM pool component: one wasmtime Engine, a module cache, worker threads, an epoch ticker
(running only while a guest call is in flight).

Lives in the nursery tree between the embedder and the registry (DESIGN §1). Every guest call
runs in a worker thread through ``trio.to_thread.run_sync`` with the pool's limiter, and is
stopped by wasmtime itself (fuel, and the epoch deadline callback driven by this pool's ticker),
never by abandoning its thread. The pool's nursery also holds the tasks that run a caxton-v1
module's queued messages (``start_soon``).
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, NoReturn, TypeVar

import attrs
import trio
import wasmtime

from caxton.components import running
from caxton.errors import ServiceUnavailable
from caxton.wasm import capi
from caxton.wasm.abi import CAXTON_V1, choose_abi, describe_module
from caxton.wasm.agent import LoadedAgentModule
from caxton.wasm.control import LONG_CALL_CHECK_TICKS
from caxton.wasm.errors import WasmBadModule, WasmError, WasmLimitExceeded
from caxton.wasm.host import GuestHooks, agent_busy
from caxton.wasm.limits import (
    DEFAULT_MAX_CONCURRENT_CALLS,
    MAX_CONCURRENT_CALLS_PER_AGENT,
    WasmLimits,
)
from caxton.wasm.source import compile_error, content_hash, to_wasm_binary

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from caxton.wasm.control import Stoppable

LOGGER = logging.getLogger("caxton.wasm")

T = TypeVar("T")

WASM_PAGE = 65536
DEFAULT_TICK_S = 0.010


@attrs.frozen(kw_only=True)
class WasmPoolStatistics:
    """A snapshot of the pool, for ``/api/v1/health`` and metrics.

    Attributes:
        running: whether the epoch ticker runs (guest calls are refused otherwise).
        cached_modules: compiled modules held in the cache.
        calls_in_flight: guest calls queued for or running in a worker thread.
        max_concurrent_calls: the limiter's size.
        epoch_ticks: epoch increments since the pool started.
        max_calls_per_agent: worker threads one agent may hold at once.
        agents_waiting: agents with a call waiting for a worker thread.
    """

    running: bool
    cached_modules: int
    calls_in_flight: int
    max_concurrent_calls: int
    epoch_ticks: int
    max_calls_per_agent: int = MAX_CONCURRENT_CALLS_PER_AGENT
    agents_waiting: int = 0


class WasmPool:
    """Runs WebAssembly guests for every agent of the server.

    The pool is shared fairly between agents (issue #13 item 12; DESIGN §4.2: one agent's
    limits never affect another): each agent holds at most ``max_calls_per_agent`` worker
    threads, and its further calls wait in its own FIFO queue, so they never stand in front
    of another agent's calls. The pool as a whole is much larger than the core count: guest
    code runs outside the GIL, and a thread is cheap next to an agent waiting for one.

    Args:
        max_concurrent_calls: worker threads running guests at once; default
            ``DEFAULT_MAX_CONCURRENT_CALLS`` (16 per core, at least 32).
        max_calls_per_agent: worker threads one agent's calls hold at once; default
            ``MAX_CONCURRENT_CALLS_PER_AGENT`` (the core count, at least 2).
        module_cache_size: compiled modules kept, keyed by the SHA-256 of their source.
        tick_interval_s: epoch tick period; bounds how late a cancellation or a wall-clock
            deadline stops a guest.

    Attributes:
        engine: the one wasmtime engine (fuel and epoch interruption enabled).
        limiter: bounds the worker threads running guest code or compiling modules.
    """

    def __init__(
        self,
        *,
        max_concurrent_calls: int | None = None,
        max_calls_per_agent: int | None = None,
        module_cache_size: int = 64,
        tick_interval_s: float = DEFAULT_TICK_S,
    ) -> None:
        config = wasmtime.Config()
        config.consume_fuel = True
        config.epoch_interruption = True
        self._engine = wasmtime.Engine(config)
        if max_concurrent_calls is None:
            max_concurrent_calls = DEFAULT_MAX_CONCURRENT_CALLS
        self.limiter = trio.CapacityLimiter(max_concurrent_calls)
        self.max_calls_per_agent = max_calls_per_agent or MAX_CONCURRENT_CALLS_PER_AGENT
        self._agent_limiters: dict[str, trio.CapacityLimiter] = {}
        # the limiters above decide; to_thread must not add its default limit of 40 threads
        self._threads = trio.CapacityLimiter(math.inf)
        self._cache_size = module_cache_size
        self._tick_interval_s = tick_interval_s
        self._modules: OrderedDict[str, wasmtime.Module] = OrderedDict()
        self._running = False
        self._ticks = 0
        self._in_flight = 0
        #: set while a call is in flight: the ticker runs only then
        self._busy = trio.Event()
        self._active: set[Stoppable] = set()
        self._nursery: trio.Nursery | None = None

    @property
    def engine(self) -> wasmtime.Engine:
        """The engine every module of this pool is compiled for."""
        return self._engine

    async def run(
        self, *, task_status: trio.TaskStatus[WasmPool] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Tick the engine's epoch until cancelled; guest calls are accepted meanwhile.

        Calls ``task_status.started(self)`` once the first tick is done.

        Cancellation:
            Ends the ticker and the pool's tasks (see :meth:`start_soon`). Guest calls still
            running are stopped at once and fail with ``ServiceUnavailable``; later calls are
            refused with it. Dependents (the registry)
            live in inner nurseries and normally finish first.
        """
        if self._running:
            raise RuntimeError("WasmPool.run() is already running")
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                try:
                    self._tick()
                    task_status.started(self)
                    while True:
                        # Ticks matter only to guests that run: an idle pool does not wake
                        # up 100 times a second for nothing.
                        if not self._in_flight:
                            await self._busy.wait()
                        await trio.sleep(self._tick_interval_s)
                        self._tick()
                finally:
                    self._stop_guests()
        finally:
            self._stop_guests()

    def start_soon(self, async_fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``async_fn`` as a task of the pool (it is cancelled when the pool stops).

        Used by a caxton-v1 module to run its queued messages on behalf of their callers.

        Raises:
            ServiceUnavailable: the pool is not running.
        """
        if not self._running or self._nursery is None:
            raise ServiceUnavailable(
                "the WASM pool is not running (start WasmPool.run in a nursery first)"
            )
        self._nursery.start_soon(async_fn)

    async def load(
        self,
        source: bytes | str,
        limits: WasmLimits | None = None,
        *,
        name: str = "agent",
        source_name: str = "<module>",
        hooks: GuestHooks | None = None,
    ) -> LoadedAgentModule:
        """Compile, validate and start an agent module.

        Args:
            source: a ``.wasm`` binary, or WAT text (``str``, or UTF-8 ``bytes``).
            limits: the agent's ``[limits]``; defaults to :class:`WasmLimits` ().
            name: the agent name, for errors and logs.
            source_name: shown in error messages, usually the module's file name.
            hooks: default host callbacks of the module's calls (``agent_init`` included).

        Returns:
            The module, ready for traffic; ``.abi`` says which ABI it speaks.

        Raises:
            WasmBadModule: a WAT syntax error (line shown), an invalid or truncated binary,
                missing or mistyped exports, imports the ABI does not provide, or a failing
                ``agent_init`` / start function.
            WasmLimitExceeded: the module's initial memory is over ``max_memory_bytes``.
            ServiceUnavailable: the pool is not running.

        Cancellation:
            Safe. Compilation in a worker thread finishes before ``trio.Cancelled`` propagates
            (it is bounded and cached for the next attempt); a running ``agent_init`` is stopped
            at the next epoch tick.
        """
        limits = limits or WasmLimits()
        if not isinstance(source, str):
            source = bytes(source)  # bytearray (e.g. from wasmtime.wat2wasm) or memoryview
        module = await self._compiled(source, source_name=source_name)
        abi = choose_abi(describe_module(module), source=source_name)
        if abi == CAXTON_V1:
            self._check_initial_memory(module, limits, name=name)
        agent = LoadedAgentModule(
            runner=self,
            module=module,
            name=name,
            abi=abi,
            limits=limits,
            content_hash=content_hash(source),
            hooks=hooks or GuestHooks(),
        )
        try:
            await agent.start()
        except WasmError as exc:
            raise WasmBadModule(
                source_name, [f"the module failed to start (instantiation or agent_init): {exc}"]
            ) from exc
        except wasmtime.WasmtimeError as exc:
            raise WasmBadModule(source_name, [f"cannot instantiate the module: {exc}"]) from exc
        return agent

    async def run_in_worker(
        self,
        fn: Callable[[], T],
        control: Stoppable | None = None,
        *,
        agent: str | None = None,
        deadline: float | None = None,
    ) -> T:
        """Run ``fn`` in a worker thread under the pool's limiter (and the agent's).

        Args:
            fn: the blocking work; if it enters a guest, it must do so under ``control``.
            control: the stop control of the guest call (or of a run of queued calls), so that
                a pool shutdown can stop it.
            agent: whose call this is: it waits behind that agent's calls only, once the
                agent holds ``max_calls_per_agent`` threads.
            deadline: ``time.monotonic()`` value by which a thread must be free (the call's
                own deadline: time in the queue counts against it).

        Raises:
            AgentBusy: no thread was free for the agent by ``deadline``.
            ServiceUnavailable: the epoch ticker is not running, so a guest could not be stopped.

        Cancellation:
            Never abandons the thread: ``fn`` must notice (guest calls do, through the epoch
            deadline callback) and return or raise; its outcome then propagates.
        """
        if not self._running:
            raise ServiceUnavailable(
                "the WASM pool is not running (start WasmPool.run in a nursery first)"
            )
        if control is not None:
            self._active.add(control)
        self._in_flight += 1
        self._busy.set()
        try:
            held = await self._take_threads(agent, deadline)
            try:
                return await trio.to_thread.run_sync(
                    fn, limiter=self._threads, abandon_on_cancel=False
                )
            finally:
                self._release_threads(agent, held)
        finally:
            self._in_flight -= 1
            if not self._in_flight:
                self._busy = trio.Event()
            if control is not None:
                self._active.discard(control)

    def statistics(self) -> WasmPoolStatistics:
        """Return a snapshot of the pool."""
        return WasmPoolStatistics(
            running=self._running,
            cached_modules=len(self._modules),
            calls_in_flight=self._in_flight,
            max_concurrent_calls=int(self.limiter.total_tokens),
            epoch_ticks=self._ticks,
            max_calls_per_agent=self.max_calls_per_agent,
            agents_waiting=sum(
                1 for limiter in self._agent_limiters.values() if limiter.statistics().tasks_waiting
            ),
        )

    # -- internals --------------------------------------------------------------------------

    async def _take_threads(
        self, agent: str | None, deadline: float | None
    ) -> list[trio.CapacityLimiter]:
        """Take the agent's limiter, then the pool's; return the ones held.

        Free ones are taken at once, without a checkpoint (each is a trip through trio's run
        loop, and the hop to the worker thread that follows checkpoints anyway); a wait for a
        busy one is bounded by ``deadline``.

        Raises:
            AgentBusy: a limiter was still busy at ``deadline`` (none is held then).
        """
        limiters = [self.limiter]
        if agent is not None:
            limiter = self._agent_limiters.get(agent)
            if limiter is None:
                limiter = self._agent_limiters[agent] = trio.CapacityLimiter(
                    self.max_calls_per_agent
                )
            limiters.insert(0, limiter)
        held: list[trio.CapacityLimiter] = []
        try:
            for limiter in limiters:
                try:
                    limiter.acquire_nowait()
                except trio.WouldBlock:
                    break
                held.append(limiter)
            if len(held) < len(limiters):
                waited = time.monotonic()
                at = math.inf
                if deadline is not None:
                    at = trio.current_time() + (deadline - waited)
                with trio.move_on_at(at):
                    for limiter in limiters[len(held) :]:
                        await limiter.acquire()
                        held.append(limiter)
                if len(held) < len(limiters):
                    raise agent_busy(
                        agent or "?",
                        why=(
                            f"the call waited {time.monotonic() - waited:.1f}s for a worker "
                            "thread, its whole [limits].max_execution_time"
                        ),
                    )
        except BaseException:
            self._release_threads(agent, held)
            raise
        return held

    def _release_threads(self, agent: str | None, held: list[trio.CapacityLimiter]) -> None:
        """Release what :meth:`_take_threads` took; forget an agent's idle limiter."""
        for limiter in reversed(held):
            limiter.release()
        if agent is not None:
            idle = self._agent_limiters.get(agent)
            if (
                idle is not None
                and not idle.borrowed_tokens
                and not idle.statistics().tasks_waiting
            ):
                del self._agent_limiters[agent]

    def _stop_guests(self) -> None:
        """Refuse new calls and stop the running ones (the pool is stopping)."""
        if not self._running:
            return
        self._running = False
        self._nursery = None
        if self._active:
            LOGGER.warning("WASM pool stopping %d running guest calls", len(self._active))
        for control in list(self._active):
            control.stop("shutdown")
        # lets every running guest reach its deadline callback and stop (a long call is
        # checked only every LONG_CALL_CHECK_TICKS ticks)
        for _ in range(LONG_CALL_CHECK_TICKS):
            self._tick()

    def _tick(self) -> None:
        capi.increment_epoch(self._engine)
        self._ticks += 1

    async def _compiled(self, source: bytes | str, *, source_name: str) -> wasmtime.Module:
        key = content_hash(source)
        module = self._modules.get(key)
        if module is not None:
            self._modules.move_to_end(key)
            return module
        engine = self._engine

        def compile_module() -> wasmtime.Module:
            binary = to_wasm_binary(source, source_name=source_name)
            try:
                return wasmtime.Module(engine, binary)
            except wasmtime.WasmtimeError as exc:
                raise compile_error(exc, source_name=source_name) from None

        module = await self.run_in_worker(compile_module)
        self._modules[key] = module
        while len(self._modules) > self._cache_size:
            self._modules.popitem(last=False)
        return module

    @staticmethod
    def _check_initial_memory(module: wasmtime.Module, limits: WasmLimits, *, name: str) -> None:
        for export in module.exports:
            ty = export.type
            if isinstance(ty, wasmtime.MemoryType):
                initial = ty.limits.min * WASM_PAGE
                if initial > limits.max_memory_bytes:
                    raise WasmLimitExceeded(
                        agent=name,
                        limit="memory",
                        value=limits.max_memory_bytes,
                        observed=initial,
                        what=f"the module's initial memory `{export.name}` is too large",
                    )


@asynccontextmanager
async def open_wasm_pool(
    *,
    max_concurrent_calls: int | None = None,
    max_calls_per_agent: int | None = None,
    module_cache_size: int = 64,
    tick_interval_s: float = DEFAULT_TICK_S,
) -> AsyncIterator[WasmPool]:
    """Start a :class:`WasmPool` in its own nursery and stop it when the block exits.

    Resource handling:
        The ticker task lives in a nursery owned by this context manager; leaving the block
        cancels it, which stops any guest call still running.

    Cancellation:
        Cancelling the block cancels the ticker like a normal exit.
    """
    pool = WasmPool(
        max_concurrent_calls=max_concurrent_calls,
        max_calls_per_agent=max_calls_per_agent,
        module_cache_size=module_cache_size,
        tick_interval_s=tick_interval_s,
    )
    async with running(pool.run):
        yield pool
