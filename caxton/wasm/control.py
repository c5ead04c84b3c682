"""Stopping a guest from outside: the per-call control block and the epoch deadline callback.

wasmtime checks the engine's epoch at function entries and loop back-edges. The pool's ticker
increments it every few milliseconds, and every Store gets a deadline callback (installed through
``wasmtime._ffi``, the C API that wasmtime-py does not wrap; hence the exact pin in
pyproject.toml) that runs at each tick and either lets the guest continue or ends the call with
an error. It ends it when the wall-clock deadline has passed, when the trio task waiting for
the worker thread was cancelled (``trio.from_thread.check_cancelled``, so no watcher task is
needed), or when a host function asked for the call to stop (a reply over the size limit, a
bad pointer, a failing host callback). Host functions never raise into wasmtime: wasmtime-py
keeps the last host exception in a process-wide global, which concurrent guest calls would race
on.
"""

from __future__ import annotations

import ctypes
import threading
import time
from collections.abc import Callable
from typing import Literal, Protocol

import attrs
import trio
import wasmtime
from wasmtime import _ffi as ffi

StopReason = Literal["cancelled", "shutdown", "time", "message_size", "bad_pointer", "host_error"]

_DEADLINE_CALLBACK = ctypes.CFUNCTYPE(
    ctypes.c_size_t,
    ctypes.POINTER(ffi.wasmtime_context_t),
    ctypes.c_void_p,
    ctypes.POINTER(ctypes.c_uint64),
    ctypes.POINTER(ctypes.c_uint8),
)
_FINALIZER = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_NO_FINALIZER = ctypes.cast(0, _FINALIZER)
_UPDATE_DEADLINE_CONTINUE = 0

#: A call that has run this long is checked every :data:`LONG_CALL_CHECK_TICKS` epoch ticks.
LONG_CALL_S = 0.1
LONG_CALL_CHECK_TICKS = 2


class Stoppable(Protocol):
    """Something a pool shutdown can stop: one guest call, or a run of them."""

    def stop(
        self, reason: StopReason, detail: str = "", *, exception: BaseException | None = None
    ) -> None:
        """Ask the guest code to stop at the next epoch tick. Safe from any thread."""
        ...


@attrs.define(eq=False)
class CallControl:
    """Mutable state shared by one guest call's worker thread and its trio caller.

    Attributes:
        deadline: ``time.monotonic()`` value after which the call is stopped; set when the
            call arrives, so that time queued counts against it (issue #13 item 13).
        stop_reason: why the call must stop, once something asked it to (first reason wins).
        stop_detail: a human-readable detail for the reason (e.g. the bad pointer).
        host_exception: an exception raised by a host callback (the chunk stream, a hook), re-raised
            by the trio caller once the guest has stopped.
        reply_bytes: bytes of reply produced so far (the limit applies to the sum).
        on_tick: run in the worker thread at each epoch tick while the guest may continue.
        watch_worker_task: whether a cancellation of the trio task that entered the worker
            thread stops this call. False for a queued message run on behalf of another
            caller: its own caller stops it with ``stop("cancelled")`` instead.
    """

    deadline: float
    stop_reason: StopReason | None = None
    stop_detail: str = ""
    host_exception: BaseException | None = None
    reply_bytes: int = 0
    on_tick: Callable[[], None] | None = None
    watch_worker_task: bool = True
    started: float = attrs.field(factory=time.monotonic)
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    @classmethod
    def starting_now(cls, budget_s: float) -> CallControl:
        """Return a control whose deadline is ``budget_s`` seconds from now."""
        return cls(deadline=time.monotonic() + budget_s)

    def stop(
        self, reason: StopReason, detail: str = "", *, exception: BaseException | None = None
    ) -> None:
        """Ask the guest to stop at the next epoch tick. Safe from any thread."""
        with self._lock:
            if self.stop_reason is None:
                self.stop_reason = reason
                self.stop_detail = detail
                self.host_exception = exception

    @property
    def stopping(self) -> bool:
        """Whether the call has been asked to stop."""
        return self.stop_reason is not None

    def check(self) -> bool:
        """Return whether the guest may keep running; called at each epoch tick.

        Records ``cancelled`` (keeping trio's ``Cancelled`` to re-raise) when the trio task
        waiting for this worker thread was cancelled (if ``watch_worker_task``), and ``time``
        past the deadline.
        """
        if self.stop_reason is None and self.watch_worker_task:
            try:
                trio.from_thread.check_cancelled()
            except trio.Cancelled as exc:
                self.stop("cancelled", exception=exc)
        if self.stop_reason is None and time.monotonic() > self.deadline:
            self.stop("time")
        if self.stop_reason is None and self.on_tick is not None:
            self.on_tick()
        return self.stop_reason is None

    def ticks_to_next_check(self) -> int:
        """Epoch ticks until :meth:`check` runs again.

        Every tick for a call's first :data:`LONG_CALL_S`; after that every
        :data:`LONG_CALL_CHECK_TICKS` ticks. Each check takes the GIL, and a few guests that
        run for seconds, checked every tick, keep the event loop waiting for it (issue #13
        item 12); a cancelled or late long call still stops within a few ticks.
        """
        if time.monotonic() - self.started > LONG_CALL_S:
            return LONG_CALL_CHECK_TICKS
        return 1


@attrs.define(eq=False)
class StoreGuard:
    """Holds the current :class:`CallControl` of a Store and the C callback that consults it.

    The ctypes callback object must outlive the Store, so the Store is created through
    :func:`new_store` and both live together here.
    """

    store: wasmtime.Store
    control: CallControl | None = None
    _callback: object = None

    def close(self) -> None:
        """Free the Store. Idempotent."""
        self.store.close()


def new_store(engine: wasmtime.Engine, *, max_memory_bytes: int) -> StoreGuard:
    """Create a Store with the memory limit and the epoch deadline callback installed.

    The callback stops the guest (the call fails with a ``WasmtimeError`` whose cause reads
    "caxton: call stopped") when the guard has no control, or its control says stop.
    """
    store = wasmtime.Store(engine)
    store.set_limits(memory_size=max_memory_bytes, table_elements=100_000)
    guard = StoreGuard(store)

    def on_epoch_deadline(
        _context: object, _data: object, delta: ctypes.Array[ctypes.c_uint64], kind: object
    ) -> int:
        control = guard.control
        try:
            keep_going = control is not None and control.check()
        except BaseException as exc:  # an exception must not unwind through wasmtime's frames
            if control is not None:
                control.stop("host_error", exception=exc)
            keep_going = False
        if not keep_going:
            message = ctypes.create_string_buffer(b"caxton: call stopped")
            return ctypes.cast(ffi.wasmtime_error_new(message), ctypes.c_void_p).value or 0
        delta[0] = control.ticks_to_next_check() if control is not None else 1
        kind[0] = _UPDATE_DEADLINE_CONTINUE  # type: ignore[index]
        return 0

    guard._callback = callback = _DEADLINE_CALLBACK(on_epoch_deadline)
    ffi.wasmtime_store_epoch_deadline_callback(store.ptr(), callback, None, _NO_FINALIZER)
    store.set_epoch_deadline(1)
    return guard
