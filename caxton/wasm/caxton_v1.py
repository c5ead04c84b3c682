"""The ``caxton-v1`` ABI: a long-lived instance that answers through ``caxton.*`` imports.

Guest contract (DESIGN §4.2): exports ``memory``, ``caxton_alloc(len) -> ptr`` and
``handle_message(ptr, len) -> status`` (0 = success), optionally ``agent_init() -> status``; imports
``caxton.reply(ptr, len)`` (one streamed chunk per call), ``caxton.send_message(ptr, len) ->
status``, ``caxton.log(level, ptr, len)`` and ``caxton.now_ms() -> i64``.

Everything in this module runs in a worker thread; one instance is used by one thread at a time
(the owner runs its queued messages one after the other, see ``LoadedAgentModule``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import wasmtime

from caxton.wasm.abi import HOST_MODULE, V1_HOST_FUNCTIONS
from caxton.wasm.control import StoreGuard, new_store
from caxton.wasm.errors import WasmAgentFailed, WasmTrap
from caxton.wasm.guest import fuel_used, read_guest, run_guarded
from caxton.wasm.host import SEND_REFUSED, SEND_TOO_LARGE, CallContext, now_ms

if TYPE_CHECKING:
    from collections.abc import Callable

_U32 = 0xFFFF_FFFF


def _func_type(name: str) -> wasmtime.FuncType:
    signature = V1_HOST_FUNCTIONS[name].signature
    assert signature is not None
    valtypes = {"i32": wasmtime.ValType.i32(), "i64": wasmtime.ValType.i64()}
    return wasmtime.FuncType(
        [valtypes[p] for p in signature.params], [valtypes[r] for r in signature.results]
    )


@attrs.define(eq=False)
class CaxtonV1Instance:
    """One live instance of a caxton-v1 module with its own Store.

    Attributes:
        agent: the agent name.
        guard: the Store and its epoch deadline callback.
        instance: the wasmtime instance.
        context: the call currently running, read by the host functions.
    """

    agent: str
    guard: StoreGuard
    instance: wasmtime.Instance | None = None
    context: CallContext | None = None

    @classmethod
    def create(
        cls, engine: wasmtime.Engine, module: wasmtime.Module, ctx: CallContext
    ) -> CaxtonV1Instance:
        """Instantiate ``module`` and run its ``agent_init`` under ``ctx``'s limits.

        Raises:
            WasmAgentFailed: ``agent_init`` returned a non-zero status.
            WasmLimitExceeded, WasmTrap: the start function or ``agent_init`` failed.
            wasmtime.WasmtimeError: instantiation itself failed (e.g. initial memory above
                ``max_memory_bytes``); the caller reports it as a bad module.
        """
        guard = new_store(engine, max_memory_bytes=ctx.limits.max_memory_bytes)
        self = cls(agent=ctx.agent, guard=guard)
        try:
            linker = self._linker(engine)
            self.context = ctx
            self.instance = run_guarded(guard, ctx, lambda: linker.instantiate(guard.store, module))
            init = self._export("agent_init")
            if init is not None:
                status = run_guarded(guard, ctx, lambda: init(guard.store))
                if status != 0:
                    raise WasmAgentFailed(agent=ctx.agent, function="agent_init", status=status)
        except BaseException:
            self.close()
            raise
        finally:
            self.context = None
        return self

    def handle(self, message: bytes, ctx: CallContext) -> int:
        """Deliver ``message`` to ``handle_message``; return the fuel consumed.

        Raises:
            WasmAgentFailed: ``handle_message`` returned a non-zero status.
            WasmLimitExceeded, WasmTrap, trio.Cancelled: see :func:`run_guarded`.
        """
        alloc = self._export("caxton_alloc")
        handle = self._export("handle_message")
        memory = self._memory()
        assert alloc is not None
        assert handle is not None
        store = self.guard.store
        self.context = ctx

        def call() -> int:
            ptr = alloc(store, len(message)) & _U32
            if ptr + len(message) > memory.data_len(store):
                ctx.control.stop(
                    "bad_pointer",
                    f"caxton_alloc({len(message)}) returned {ptr}, outside the guest memory",
                )
                return 0
            memory.write(store, message, ptr)
            status: int = handle(store, ptr, len(message))
            return status

        try:
            status = run_guarded(self.guard, ctx, call)
        finally:
            self.context = None
        if status != 0:
            raise WasmAgentFailed(agent=ctx.agent, function="handle_message", status=status)
        return fuel_used(self.guard, ctx)

    def close(self) -> None:
        """Drop the instance and free its Store. Idempotent."""
        self.instance = None
        self.guard.close()

    # -- internals -------------------------------------------------------------------------

    def _export(self, name: str) -> wasmtime.Func | None:
        assert self.instance is not None
        item = self.instance.exports(self.guard.store).get(name)
        return item if isinstance(item, wasmtime.Func) else None

    def _memory(self) -> wasmtime.Memory:
        assert self.instance is not None
        item = self.instance.exports(self.guard.store).get("memory")
        if not isinstance(item, wasmtime.Memory):  # checked at load; kept for mypy
            raise WasmTrap(agent=self.agent, trap="bad_module", detail="no exported memory")
        return item

    def _read(self, caller: wasmtime.Caller, ptr: int, length: int, what: str) -> bytes | None:
        ctx = self.context
        if ctx is None or ctx.control.stopping:
            return None
        memory = caller.get("memory")
        data = None
        if isinstance(memory, wasmtime.Memory):
            data = read_guest(memory, caller, ptr & _U32, length & _U32)
        if data is None:
            where = f"{what}({ptr & _U32}, {length & _U32})"
            ctx.control.stop("bad_pointer", f"{where} is outside the guest memory")
        return data

    def _never_raising(
        self, fn: Callable[..., int | None], default: int | None
    ) -> Callable[..., int | None]:
        """Wrap a host function so that it never raises into wasmtime (see ``control``)."""

        def host(*args: object) -> int | None:
            try:
                return fn(*args)
            except BaseException as exc:
                if self.context is not None:
                    self.context.control.stop("host_error", exception=exc)
                return default

        return host

    def _linker(self, engine: wasmtime.Engine) -> wasmtime.Linker:
        linker = wasmtime.Linker(engine)

        def reply(caller: wasmtime.Caller, ptr: int, length: int) -> None:
            data = self._read(caller, ptr, length, "caxton.reply")
            if data is not None and self.context is not None:
                self.context.deliver(data)

        def send_message(caller: wasmtime.Caller, ptr: int, length: int) -> int:
            ctx = self.context
            if ctx is None or ctx.control.stopping:
                return SEND_REFUSED
            if length & _U32 > ctx.limits.max_message_size:
                return SEND_TOO_LARGE
            data = self._read(caller, ptr, length, "caxton.send_message")
            return SEND_REFUSED if data is None else ctx.send_message(data)

        def log(caller: wasmtime.Caller, level: int, ptr: int, length: int) -> None:
            ctx = self.context
            if ctx is None:
                return
            # within the call's log budget, and read no more of guest memory than is kept
            keep = ctx.admit_log(length & _U32)
            if keep == 0:
                return
            data = self._read(caller, ptr, keep, "caxton.log")
            if data is not None:
                ctx.log(level, data.decode("utf-8", errors="replace"))

        for name, fn, default in (
            ("reply", reply, None),
            ("send_message", send_message, SEND_REFUSED),
            ("log", log, None),
        ):
            host = self._never_raising(fn, default)
            linker.define_func(HOST_MODULE, name, _func_type(name), host, access_caller=True)
        linker.define_func(HOST_MODULE, "now_ms", _func_type("now_ms"), now_ms)
        return linker
