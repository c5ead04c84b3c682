"""The batch scheduler of a caxton-v1 agent version: its message queue and worker-thread trips.

A caxton-v1 module keeps one instance, so its messages run one at a time. They wait in a FIFO
queue, served by a task of the pool (so that no caller waits on behalf of another). It takes a
worker thread, which runs the queued messages back to back, each under its own control, limits
and fuel, until the queue is empty, ``BATCH_MAX_MESSAGES`` ran, ``BATCH_BUDGET_S`` passed, a
message failed with a trap, a limit or a cancellation (the rest stay queued for the next trip,
on a fresh instance). A message that streams its reply runs like any other: its chunks go to
its own channel (``CallContext.stream``), which its caller drains. Callers learn their outcome
when the trip returns, or at an epoch tick of a slow message after theirs. So one trip to a
worker thread and back serves every message that queued up meanwhile.

Time queued counts against a message's ``max_execution_time``: one timer task per module fails
the queued messages whose time ran out (``AgentBusy``), instead of a timer per waiting caller
(a trio cancel scope with a deadline was a third of a message's cost on the trio side). Every
message of a module has the same time limit, so the timer never needs waking when one arrives:
it sleeps until the oldest queued message's deadline, or one time limit ahead when none waits.

:class:`BatchScheduler` knows nothing of instances: the module hands it a function that runs one
message (in the worker thread) and a check that it is still open.
"""

from __future__ import annotations

import collections
import functools
import logging
import math
import threading
import time
from typing import TYPE_CHECKING, Literal, Protocol, TypeVar

import attrs
import trio

from caxton.errors import AgentBusy, ServiceUnavailable
from caxton.wasm.control import CallControl, StopReason
from caxton.wasm.errors import WasmAgentFailed
from caxton.wasm.host import CallContext, agent_busy, failure_for

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from caxton.wasm.control import Stoppable

LOGGER = logging.getLogger("caxton.wasm")

T = TypeVar("T")

BATCH_MAX_MESSAGES = 32
"""At most this many queued caxton-v1 messages run in one trip to a worker thread."""

BATCH_BUDGET_S = 0.010
"""No further queued message starts in a worker-thread trip that has run this long."""

ANNOUNCE_AFTER_S = 0.005
"""A message running this long in a trip lets the callers of the finished ones have their
outcome at its next epoch tick (one trip back to trio), instead of at the end of the trip."""


class WorkerRunner(Protocol):
    """What the scheduler needs from the pool: a way into a worker thread, and a task."""

    async def run_in_worker(
        self,
        fn: Callable[[], T],
        control: Stoppable | None = None,
        *,
        agent: str | None = None,
        deadline: float | None = None,
    ) -> T:
        """Run ``fn`` in a worker thread under the pool's limiters (see ``WasmPool``)."""
        ...

    def start_soon(self, async_fn: Callable[[], Awaitable[object]]) -> None:
        """Run ``async_fn`` as a task of the pool (see ``WasmPool``)."""
        ...


@attrs.define(eq=False)
class _Turn:
    """One caxton-v1 message waiting for, running on, or done with the module's instance.

    ``state``, ``fuel`` and ``error`` are written under the scheduler's queue lock (the worker
    thread writes them); ``announced`` and ``wake`` belong to the trio thread.
    """

    message: bytes
    ctx: CallContext
    state: Literal["queued", "running", "finished"] = "queued"
    fuel: int = 0
    error: BaseException | None = None
    announced: bool = False
    wake: trio.Event = attrs.field(factory=trio.Event)


@attrs.define(eq=False)
class _Batch:
    """One worker-thread trip running queued messages; stops them all on pool shutdown."""

    lock: threading.Lock
    current: CallControl | None = None
    stop_reason: StopReason | None = None

    def stop(
        self, reason: StopReason, detail: str = "", *, exception: BaseException | None = None
    ) -> None:
        """Stop the running message and start no other one. Safe from any thread."""
        with self.lock:
            if self.stop_reason is None:
                self.stop_reason = reason
            control = self.current
        if control is not None:
            control.stop(reason, detail, exception=exception)


class BatchScheduler:
    """The FIFO queue of one caxton-v1 module and the worker-thread trips that serve it.

    Args:
        name: the agent name (used in errors and logs).
        runner: the pool's worker threads and tasks.
        lock: the module's lock, held during each trip (and by the module while it starts or
            closes, so that no trip overlaps those).
        run: runs one message on the module's instance in the worker thread; returns its fuel.
        check_open: raises ``ServiceUnavailable`` once the module has been closed.
        time_limit_s: every message's ``max_execution_time`` (its deadline is that long after
            it arrives).

    Attributes:
        batches: worker-thread trips so far.
    """

    def __init__(
        self,
        *,
        name: str,
        runner: WorkerRunner,
        lock: trio.Lock,
        run: Callable[[bytes, CallContext], int],
        check_open: Callable[[], None],
        time_limit_s: float,
    ) -> None:
        self.name = name
        self.time_limit_s = time_limit_s
        self.batches = 0
        self._runner = runner
        self._lock = lock
        self._run = run
        self._check_open = check_open
        self._queue: collections.deque[_Turn] = collections.deque()
        self._queue_lock = threading.Lock()  # guards the queue and every turn's outcome
        self._finished: list[_Turn] = []  # finished in the worker, not yet announced
        self._driving = False
        # the queue timer (_expire_queued) sleeps until this time.monotonic() value, or until
        # _rewatch is set by a message that must be expired sooner (none, with one time limit)
        self._timer: trio.CancelScope | None = None
        self._watch_until = -math.inf
        self._rewatch = trio.Event()

    async def call(self, message: bytes, ctx: CallContext) -> int:
        """Queue one caxton-v1 message, wait for its turn to run and end, return its fuel."""
        turn = _Turn(message=message, ctx=ctx)
        ctx.control.watch_worker_task = False  # its caller stops it instead (see _withdraw)
        with self._queue_lock:
            self._queue.append(turn)  # no checkpoint before this: queue order = call order
        if ctx.control.deadline < self._watch_until:
            self._rewatch.set()  # the queue timer sleeps past this message's deadline
        try:
            if self._timer is None:
                self._start_timer()
            self._kick()
            # set once the outcome is in: the message ran, or its time ran out queued (the
            # queue timer), or the module or the pool stopped
            await turn.wake.wait()
        except BaseException as exc:
            await self._withdraw(turn, exc)
            raise
        if turn.error is not None:
            raise turn.error
        return turn.fuel

    def _kick(self) -> None:
        """Keep the queue moving: start the serving task unless it runs or nothing waits."""
        if self._driving or self._head() is None:
            return
        self._driving = True
        try:
            self._runner.start_soon(self._serve)
        except ServiceUnavailable as exc:
            self._driving = False
            self._fail_queued(str(exc))

    def close(self) -> None:
        """Stop the queue timer (the module is closed: its queued messages fail anyway)."""
        if self._timer is not None:
            self._timer.cancel()

    def _start_timer(self) -> None:
        """Start the queue timer as a task of the pool (if the pool runs: else the queue fails
        at once, see :meth:`_kick`)."""
        self._timer = trio.CancelScope()
        try:
            self._runner.start_soon(self._expire_queued)
        except ServiceUnavailable:
            self._timer = None

    async def _serve(self) -> None:
        """Run queued messages in worker-thread trips until none is left.

        A task of the pool (``GuestRunner.start_soon``), so that no caller waits for another
        caller's message. When the module or the pool stops, every queued message fails with
        ``ServiceUnavailable``.
        """
        try:
            while self._head() is not None:
                batch = _Batch(lock=self._queue_lock)
                try:  # a free lock is taken without a trip through the run loop
                    self._lock.acquire_nowait()
                except trio.WouldBlock:
                    await self._lock.acquire()
                try:
                    self._check_open()
                    self.batches += 1
                    await self._runner.run_in_worker(
                        functools.partial(self._run_batch, batch), batch, agent=self.name
                    )
                finally:
                    self._lock.release()
                self._announce()
        except trio.Cancelled:
            self._fail_queued(
                f"WASM agent {self.name!r}: the WASM pool is shutting down; the message did "
                "not run."
            )
            raise
        except ServiceUnavailable as exc:  # the module or the pool stopped
            self._fail_queued(str(exc))
        except Exception as exc:
            LOGGER.exception("WASM agent %r: serving queued messages failed", self.name)
            self._fail_queued(f"WASM agent {self.name!r}: internal error ({exc!r}).")
        finally:
            self._driving = False
            self._announce()
            self._kick()

    async def _expire_queued(self) -> None:
        """The queue timer: fail each queued message whose ``max_execution_time`` ran out
        before it could start (``AgentBusy``), at its deadline, whatever the trips do (a long
        message, or a wait for a thread). Runs until the module closes or the pool stops.
        """
        scope = self._timer
        assert scope is not None
        try:
            with scope:
                while not self._closed():
                    now = time.monotonic()
                    with self._queue_lock:
                        # a message arriving later has a later deadline than now + time limit
                        until = min(
                            (turn.ctx.control.deadline for turn in self._queue),
                            default=now + self.time_limit_s,
                        )
                    self._watch_until = until
                    self._rewatch = trio.Event()
                    with trio.move_on_at(_trio_time(until)):
                        await self._rewatch.wait()
                    self._expire(time.monotonic())
        finally:
            self._watch_until = -math.inf
            if self._timer is scope:
                self._timer = None

    def _expire(self, now: float) -> None:
        """Fail the queued messages whose deadline is ``now`` or earlier."""
        with self._queue_lock:
            late = [turn for turn in self._queue if turn.ctx.control.deadline <= now]
            for turn in late:
                self._queue.remove(turn)
                turn.state = "finished"
                turn.error = self._queue_timeout(turn.ctx)
                self._finished.append(turn)
        if late:
            self._announce()

    async def _withdraw(self, turn: _Turn, exc: BaseException) -> None:
        """Leave the queue after ``exc`` (a cancellation) interrupted the wait for ``turn``.

        A queued message is removed and never runs. A running one is asked to stop; the wait
        for it to stop is shielded, and bounded by one epoch tick plus the trip back.
        """
        with self._queue_lock:
            state = turn.state
            if state == "queued":
                self._queue.remove(turn)
        if state == "queued":
            self._kick()
            return
        if not turn.announced:
            turn.ctx.control.stop("cancelled", exception=exc)
            with trio.CancelScope(shield=True):
                while not turn.announced:
                    turn.wake = trio.Event()
                    await turn.wake.wait()

    def _queue_timeout(self, ctx: CallContext) -> AgentBusy:
        return agent_busy(
            self.name,
            why=f"the message waited in its queue for its whole [limits].max_execution_time "
            f"({ctx.limits.max_execution_time_s:g}s) and did not run",
        )

    def _head(self) -> _Turn | None:
        with self._queue_lock:
            return self._queue[0] if self._queue else None

    def _fail_queued(self, reason: str) -> None:
        """Fail every queued message with ``ServiceUnavailable(reason)``."""
        with self._queue_lock:
            for turn in self._queue:
                turn.state = "finished"
                turn.error = ServiceUnavailable(reason)
                self._finished.append(turn)
            self._queue.clear()
        self._announce()

    def _announce(self) -> None:
        """Wake the callers whose messages finished (trio thread)."""
        with self._queue_lock:
            finished, self._finished = self._finished, []
        for turn in finished:
            turn.announced = True
            turn.wake.set()

    # -- worker-thread side -----------------------------------------------------------------

    def _run_batch(self, batch: _Batch) -> None:
        """Run queued messages back to back; each outcome is recorded in its turn."""
        started = time.monotonic()
        count = 0
        while True:
            turn = self._take(batch, count, started)
            if turn is None:
                return
            count += 1
            ctx = turn.ctx
            fuel, error = 0, None
            if ctx.control.stopping:  # stopped before it started: it does not run
                error = failure_for(ctx)
            elif time.monotonic() >= ctx.control.deadline:  # its time ran out in the queue
                error = self._queue_timeout(ctx)
            else:
                ctx.control.on_tick = functools.partial(
                    self._announce_from_worker, time.monotonic() + ANNOUNCE_AFTER_S
                )
                try:
                    fuel = self._run(turn.message, ctx)
                except BaseException as exc:
                    error = exc
                finally:
                    ctx.control.on_tick = None
            with self._queue_lock:
                turn.fuel, turn.error = fuel, error
                turn.state = "finished"
                self._finished.append(turn)
                batch.current = None
            if error is not None and not isinstance(error, WasmAgentFailed | AgentBusy):
                return  # a failed message ends the trip: the rest waits for a fresh instance

    def _take(self, batch: _Batch, count: int, started: float) -> _Turn | None:
        """Take the next queued message for ``batch``, or None when the trip should end."""
        if count > 0 and (
            count >= BATCH_MAX_MESSAGES or time.monotonic() - started > BATCH_BUDGET_S
        ):
            return None
        with self._queue_lock:
            if batch.stop_reason is not None or not self._queue or self._closed():
                return None  # (a closed module runs no further message: they are refused)
            turn = self._queue.popleft()
            turn.state = "running"
            batch.current = turn.ctx.control
            return turn

    def _announce_from_worker(self, not_before: float) -> None:
        """At an epoch tick of a slow message, wake the callers of the finished ones."""
        if time.monotonic() < not_before:
            return
        with self._queue_lock:
            pending = bool(self._finished)
        if pending:
            trio.from_thread.run_sync(self._announce)

    def _closed(self) -> bool:
        """Whether the module was closed (its queued messages then fail, none runs)."""
        try:
            self._check_open()
        except ServiceUnavailable:
            return True
        return False


def _trio_time(deadline: float) -> float:
    """A ``time.monotonic()`` deadline on trio's clock."""
    return trio.current_time() + (deadline - time.monotonic())
