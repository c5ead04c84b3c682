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

from caxton.wasm import capi
from caxton.wasm.abi import HOST_MODULE, V1_HOST_FUNCTIONS
from caxton.wasm.control import StoreGuard, new_store
from caxton.wasm.errors import WasmAgentFailed, WasmTrap
from caxton.wasm.guest import fuel_used, run_guarded
from caxton.wasm.host import SEND_REFUSED, SEND_TOO_LARGE, CallContext, now_ms

if TYPE_CHECKING:
    from caxton.wasm.capi import Caller, HostCallback, RawValues

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
    #: the exports every message uses, looked up once (after instantiation)
    _alloc: wasmtime.Func | None = None
    _handle_message: wasmtime.Func | None = None
    _memory_export: wasmtime.Memory | None = None
    #: the host functions' C callbacks: they must live as long as the Store
    _host_functions: list[object] = attrs.field(factory=list)

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
            self._alloc = self._export("caxton_alloc")
            self._handle_message = self._export("handle_message")
            self._memory_export = self._memory()
            init = self._export("agent_init")
            if init is not None:
                context = capi.context_of(guard.store)
                status = run_guarded(guard, ctx, lambda: capi.call_i32(context, init, (), 1))
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
        alloc, handle, memory = self._alloc, self._handle_message, self._memory_export
        assert alloc is not None
        assert handle is not None
        assert memory is not None
        context = capi.context_of(self.guard.store)
        size = len(message)
        self.context = ctx

        def call() -> int:
            ptr = capi.call_i32(context, alloc, (size,), 1) & _U32
            if not capi.write_memory(context, memory, ptr, message):
                ctx.control.stop(
                    "bad_pointer",
                    f"caxton_alloc({size}) returned {ptr}, outside the guest memory",
                )
                return 0
            return capi.call_i32(context, handle, (ptr, size), 2)

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

    def _read(self, caller: Caller, ptr: int, length: int, what: str) -> bytes | None:
        ctx = self.context
        if ctx is None or ctx.control.stopping:
            return None
        data = capi.read_caller_memory(caller, ptr & _U32, length & _U32)
        if data is None:
            where = f"{what}({ptr & _U32}, {length & _U32})"
            ctx.control.stop("bad_pointer", f"{where} is outside the guest memory")
        return data

    def _never_raising(self, fn: HostCallback, default: int | None) -> HostCallback:
        """Wrap a host function so that it never raises into wasmtime (see ``control``); a
        function with a result returns ``default`` when it failed."""

        def host(caller: Caller, values: RawValues) -> None:
            try:
                fn(caller, values)
            except BaseException as exc:
                if self.context is not None:
                    self.context.control.stop("host_error", exception=exc)
                if default is not None:
                    values[0].i32 = default

        return host

    def _linker(self, engine: wasmtime.Engine) -> wasmtime.Linker:
        """A linker with the ``caxton`` host functions (raw callbacks, see :mod:`capi`)."""
        linker = wasmtime.Linker(engine)

        def reply(caller: Caller, values: RawValues) -> None:
            data = self._read(caller, values[0].i32, values[1].i32, "caxton.reply")
            if data is not None and self.context is not None:
                self.context.deliver(data)

        def send_message(caller: Caller, values: RawValues) -> None:
            ptr, length = values[0].i32, values[1].i32
            values[0].i32 = SEND_REFUSED
            ctx = self.context
            if ctx is None or ctx.control.stopping:
                return
            if length & _U32 > ctx.limits.max_message_size:
                values[0].i32 = SEND_TOO_LARGE
                return
            data = self._read(caller, ptr, length, "caxton.send_message")
            if data is not None:
                values[0].i32 = ctx.send_message(data)

        def log(caller: Caller, values: RawValues) -> None:
            level, ptr, length = values[0].i32, values[1].i32, values[2].i32
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

        def clock(_caller: Caller, values: RawValues) -> None:
            values[0].i64 = now_ms()

        for name, fn, default in (
            ("reply", reply, None),
            ("send_message", send_message, SEND_REFUSED),
            ("log", log, None),
            ("now_ms", clock, None),
        ):
            host = self._never_raising(fn, default)
            self._host_functions.append(
                capi.define_host_function(linker, HOST_MODULE, name, _func_type(name), host)
            )
        return linker
