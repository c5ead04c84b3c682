"""Running guest code in a worker thread under a call's limits (shared by both ABIs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import wasmtime

from caxton.wasm.host import CallContext, failure_for

if TYPE_CHECKING:
    from collections.abc import Callable

    from caxton.wasm.control import StoreGuard

T = TypeVar("T")


def run_guarded(guard: StoreGuard, ctx: CallContext, fn: Callable[[], T]) -> T:
    """Run ``fn`` (which enters the guest) with fresh fuel and the call's stop control.

    Runs in a worker thread. Fuel is reset to ``limits.max_fuel`` first, so each call (and
    each instantiation with its ``agent_init``) gets the full budget.

    Raises:
        WasmLimitExceeded: fuel, time or reply size.
        WasmTrap: the guest trapped or misbehaved (bad pointer).
        trio.Cancelled: the trio caller was cancelled; the guest has stopped.
        BaseException: whatever a host callback raised; the guest has stopped.
    """
    store = guard.store
    store.set_fuel(ctx.limits.max_fuel)
    store.set_epoch_deadline(1)
    guard.control = ctx.control
    try:
        result = fn()
    except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
        raise failure_for(ctx, exc) from None
    finally:
        guard.control = None
        ctx.flush()
        ctx.report_dropped_logs()
    if ctx.control.stopping:
        # A stop was requested but the guest returned before the next epoch tick.
        raise failure_for(ctx)
    return result


def fuel_used(guard: StoreGuard, ctx: CallContext) -> int:
    """Return the fuel the last guarded call consumed."""
    try:
        return ctx.limits.max_fuel - guard.store.get_fuel()
    except wasmtime.WasmtimeError:
        return ctx.limits.max_fuel


def read_guest(
    memory: wasmtime.Memory, store: wasmtime.Caller | wasmtime.Store, ptr: int, length: int
) -> bytes | None:
    """Return ``length`` bytes at ``ptr``, or None when the range is outside guest memory."""
    if ptr < 0 or length < 0 or ptr + length > memory.data_len(store):
        return None
    return bytes(memory.read(store, ptr, ptr + length))
