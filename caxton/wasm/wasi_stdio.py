"""The ``wasi-stdio`` ABI: a fresh instance per message, message on stdin, reply on stdout.

The guest gets WASI preview 1 with a program name as its only argument, no environment, no
preopened directories (so no filesystem) and no sockets. Each write to stdout is one streamed
reply chunk; stderr goes to the agent's log. Runs in worker threads; calls are independent.
"""

from __future__ import annotations

import ctypes
from typing import TYPE_CHECKING

import wasmtime
from wasmtime import _ffi as ffi

from caxton.wasm.control import new_store
from caxton.wasm.errors import WasmAgentFailed
from caxton.wasm.guest import fuel_used, run_guarded

if TYPE_CHECKING:
    from caxton.wasm.host import CallContext

_STDERR_LEVEL = 2  # warning


def prepare(engine: wasmtime.Engine, module: wasmtime.Module) -> wasmtime.InstancePre:
    """Resolve the module's WASI imports once, at load.

    Raises:
        wasmtime.WasmtimeError: an import WASI does not provide (reported as a bad module).
    """
    linker = wasmtime.Linker(engine)
    linker.define_wasi()
    return linker.instantiate_pre(module)


def _wasi_config(message: bytes, ctx: CallContext) -> wasmtime.WasiConfig:
    wasi = wasmtime.WasiConfig()
    wasi.argv = [ctx.agent]
    # wasmtime-py only offers stdin from a file; the C API takes bytes (the vector is moved).
    ffi.wasi_config_set_stdin_bytes(wasi.ptr(), ctypes.byref(ffi.bytes_to_capi(message)))

    # Both callbacks run in a wasmtime-internal thread, not the worker thread: they only queue.
    def stdout(data: bytes) -> None:
        ctx.queue_chunk(data)

    def stderr(data: bytes) -> None:
        ctx.queue_log(_STDERR_LEVEL, data.rstrip(b"\n"))  # within the call's log budget

    wasi.stdout_custom = stdout
    wasi.stderr_custom = stderr
    return wasi


def run_once(
    engine: wasmtime.Engine, pre: wasmtime.InstancePre, message: bytes, ctx: CallContext
) -> int:
    """Run ``_start`` in a fresh Store with ``message`` on stdin; return the fuel consumed.

    Raises:
        WasmAgentFailed: the program exited with a non-zero code.
        WasmLimitExceeded, WasmTrap, trio.Cancelled: see :func:`run_guarded`.
    """
    ctx.control.on_tick = ctx.flush
    guard = new_store(engine, max_memory_bytes=ctx.limits.max_memory_bytes)
    try:
        store = guard.store
        store.set_wasi(_wasi_config(message, ctx))

        def call() -> int:
            instance = pre.instantiate(store)
            start = instance.exports(store)["_start"]
            assert isinstance(start, wasmtime.Func)
            try:
                start(store)
            except wasmtime.ExitTrap as exit_:
                return exit_.code
            return 0

        code = run_guarded(guard, ctx, call)
        if code != 0:
            raise WasmAgentFailed(agent=ctx.agent, function="_start (exit code)", status=code)
        return fuel_used(guard, ctx)
    finally:
        guard.close()
