"""Running guest code in a worker thread under a call's limits (shared by both ABIs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

import wasmtime

from caxton.wasm import capi
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
    context = capi.context_of(guard.store)
    capi.set_fuel(context, ctx.limits.max_fuel)
    capi.set_epoch_deadline(context, 1)
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
        return ctx.limits.max_fuel - capi.get_fuel(capi.context_of(guard.store))
    except wasmtime.WasmtimeError:
        return ctx.limits.max_fuel
