"""The per-message C API calls of a caxton-v1 guest, without wasmtime-py's generic wrappers.

wasmtime-py's ``Func.__call__`` and its host-function trampoline look the function's type up
and convert every value through it on each call: for an echo message about twenty C calls and
250 µs of Python, all of it holding the GIL the event loop needs, and every C call dropping and
taking the GIL again. The caxton-v1 signatures are fixed and checked at load
(:mod:`caxton.wasm.abi`), so this module uses the C API's *unchecked* forms, which pass raw
values, and makes the small C calls (memory base and size, fuel, epoch deadline, the caller's
exports, the epoch tick) without dropping the GIL: they return at once, and dropping it
hands it to a worker thread the event loop then waits for. Only a call into guest code drops
it.

Like :mod:`caxton.wasm.control` it uses ``wasmtime._ffi``, the C API that wasmtime-py does not
wrap (hence the exact pin in pyproject.toml). Everything here runs in a worker thread, except
the epoch tick (the pool's ticker task).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import wasmtime
from wasmtime import _ffi as ffi

if TYPE_CHECKING:
    from collections.abc import Sequence

Context = Any  # ctypes pointer to ffi.wasmtime_context_t
Caller = Any  # ctypes pointer to ffi.wasmtime_caller_t
RawValues = Any  # ctypes array of ffi.wasmtime_val_raw_t

#: The same library as wasmtime-py's, loaded so that its calls keep the GIL (``ctypes.PyDLL``):
#: for calls that return at once, dropping and re-taking the GIL costs more than the call.
_KEEPING_GIL = ctypes.PyDLL(ffi.dll._name)

_CONTEXT = ctypes.POINTER(ffi.wasmtime_context_t)
_MEMORY = ctypes.POINTER(ffi.wasmtime_memory_t)
_ERROR = ctypes.POINTER(ffi.wasmtime_error_t)
_TRAP = ctypes.POINTER(ffi.wasm_trap_t)


def _keeping_gil(name: str, restype: Any, argtypes: list[Any]) -> Any:
    function = getattr(_KEEPING_GIL, name)
    function.restype = restype
    function.argtypes = argtypes
    return function


_memory_data = _keeping_gil("wasmtime_memory_data", ctypes.c_void_p, [_CONTEXT, _MEMORY])
_memory_data_size = _keeping_gil("wasmtime_memory_data_size", ctypes.c_size_t, [_CONTEXT, _MEMORY])
_caller_context = _keeping_gil(
    "wasmtime_caller_context", _CONTEXT, [ctypes.POINTER(ffi.wasmtime_caller_t)]
)
_caller_export_get = _keeping_gil(
    "wasmtime_caller_export_get",
    ctypes.c_bool,
    [
        ctypes.POINTER(ffi.wasmtime_caller_t),
        ctypes.POINTER(ctypes.c_char),
        ctypes.c_size_t,
        ctypes.POINTER(ffi.wasmtime_extern_t),
    ],
)
_set_fuel = _keeping_gil("wasmtime_context_set_fuel", _ERROR, [_CONTEXT, ctypes.c_uint64])
_get_fuel = _keeping_gil(
    "wasmtime_context_get_fuel", _ERROR, [_CONTEXT, ctypes.POINTER(ctypes.c_uint64)]
)
_set_epoch_deadline = _keeping_gil(
    "wasmtime_context_set_epoch_deadline", None, [_CONTEXT, ctypes.c_uint64]
)

_increment_epoch = _keeping_gil(
    "wasmtime_engine_increment_epoch", None, [ctypes.POINTER(ffi.wasm_engine_t)]
)

_MEMORY_NAME = ctypes.create_string_buffer(b"memory")
_MEMORY_KIND = ffi.WASMTIME_EXTERN_MEMORY.value
_NO_FINALIZER = ctypes.cast(0, ctypes.CFUNCTYPE(None, ctypes.c_void_p))

HostCallback = Callable[[Caller, RawValues], None]
"""A host function: reads its parameters from the raw values and writes its result there."""


def context_of(store: wasmtime.Store) -> Context:
    """The C context of ``store`` (valid until the store is closed)."""
    return store._context()


def set_fuel(context: Context, fuel: int) -> None:
    """Give the store ``fuel`` (raises ``WasmtimeError`` if it does not consume fuel)."""
    error = _set_fuel(context, fuel)
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)


def get_fuel(context: Context) -> int:
    """The fuel left in the store."""
    left = ctypes.c_uint64(0)
    error = _get_fuel(context, ctypes.byref(left))
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    return int(left.value)


def set_epoch_deadline(context: Context, ticks: int) -> None:
    """The guest is interrupted (the deadline callback runs) ``ticks`` epoch ticks from now."""
    _set_epoch_deadline(context, ticks)


def increment_epoch(engine: wasmtime.Engine) -> None:
    """Advance the engine's epoch by one tick (the event loop does this every few ms)."""
    _increment_epoch(engine.ptr())


def call_i32(context: Context, func: wasmtime.Func, args: Sequence[int], slots: int) -> int:
    """Call the guest function ``func`` with i32 ``args``; return its one i32 result.

    ``func``'s type must be ``args`` i32s to one i32 (checked at load: the call is unchecked);
    ``slots`` is ``max(len(args), 1)``. The GIL is dropped while the guest runs.

    Raises:
        wasmtime.Trap: the guest trapped (out of fuel included).
        wasmtime.WasmtimeError: the call failed otherwise (the epoch callback stopped it).
    """
    values = (ffi.wasmtime_val_raw_t * slots)()
    for index, arg in enumerate(args):
        values[index].i32 = arg
    trap = _TRAP()
    error = ffi.wasmtime_func_call_unchecked(
        context, ctypes.byref(func._func), values, slots, ctypes.byref(trap)
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    if trap:
        raise wasmtime.Trap._from_ptr(trap)
    return int(values[0].i32)


def write_memory(context: Context, memory: wasmtime.Memory, at: int, data: bytes) -> bool:
    """Copy ``data`` into ``memory`` at ``at``; False (nothing written) when it does not fit."""
    handle = ctypes.byref(memory._memory)
    if at < 0 or at + len(data) > _memory_data_size(context, handle):
        return False
    if data:
        ctypes.memmove(_memory_data(context, handle) + at, data, len(data))
    return True


def read_caller_memory(caller: Caller, at: int, length: int) -> bytes | None:
    """``length`` bytes at ``at`` of the calling instance's ``memory`` export, or None when the
    range is outside it (or it exports no memory)."""
    item = ffi.wasmtime_extern_t()
    if not _caller_export_get(caller, _MEMORY_NAME, 6, ctypes.byref(item)):
        return None
    if cast("int", item.kind) != _MEMORY_KIND:  # (ctypes reads the field as an int)
        return None
    context = _caller_context(caller)
    handle = ctypes.byref(item.of.memory)
    if at < 0 or length < 0 or at + length > _memory_data_size(context, handle):
        return None
    if length == 0:
        return b""
    return ctypes.string_at(_memory_data(context, handle) + at, length)


def define_host_function(
    linker: wasmtime.Linker,
    module: str,
    name: str,
    ty: wasmtime.FuncType,
    callback: HostCallback,
) -> object:
    """Define ``module.name`` of type ``ty`` in ``linker`` as the raw ``callback``.

    ``callback`` must never raise (an exception cannot cross wasmtime's frames; wrap it). The
    returned object must be kept alive as long as any store instantiated from ``linker``.

    Raises:
        wasmtime.WasmtimeError: the definition was refused.
    """

    def host(_env: object, caller: Caller, values: RawValues, _count: int) -> int:
        callback(caller, values)
        return 0  # no trap

    keep = ffi.wasmtime_func_unchecked_callback_t(host)
    module_bytes, name_bytes = module.encode(), name.encode()
    error = ffi.wasmtime_linker_define_func_unchecked(
        linker.ptr(),
        ctypes.create_string_buffer(module_bytes),
        len(module_bytes),
        ctypes.create_string_buffer(name_bytes),
        len(name_bytes),
        ty.ptr(),
        keep,
        None,
        _NO_FINALIZER,
    )
    if error:
        raise wasmtime.WasmtimeError._from_ptr(error)
    return keep
