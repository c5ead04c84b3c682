"""Following a task another instance runs: its row in the store, re-read when a notice names it.

The owner of a task writes its row on each change with an ``a2a.task`` notice
(:mod:`caxton.a2a.records`); :class:`RowWatch` wakes whoever here waits for that task, and
each waiter re-reads the row. A notice can be lost (the listening connection dropped), so a
waiter also re-reads every ``poll_s``: notices make it quick, the poll makes it sure.

* :func:`follow` — SubscribeToTask on an instance that does not run the call: the row's
  changes as stream events, until the task ends, the stream's reader goes away or falls
  behind, or ``timeout_s`` passes.
* :func:`wait_until_ended` — CancelTask on such an instance: wait for the owner to stop it.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, Final

import trio

if TYPE_CHECKING:
    from collections.abc import Iterator

    from caxton.a2a.records import TaskRecords, TaskRow

#: How often a waiter re-reads the row when no notice came.
POLL_S: Final = 1.0
#: Events a stream following a task on another instance may fall behind by (few: a status
#: change or two, and the reply).
FOLLOW_BUFFER: Final = 16


class RowWatch:
    """Who waits here for which task's row to change (trio-side, one per A2A service)."""

    def __init__(self) -> None:
        self._events: dict[str, trio.Event] = {}
        self._watchers: dict[str, int] = {}

    def __len__(self) -> int:
        """How many tasks are watched."""
        return len(self._watchers)

    @contextlib.contextmanager
    def watching(self, task_id: str) -> Iterator[None]:
        self._watchers[task_id] = self._watchers.get(task_id, 0) + 1
        try:
            yield
        finally:
            left = self._watchers[task_id] - 1
            if left:
                self._watchers[task_id] = left
            else:
                del self._watchers[task_id]
                self._events.pop(task_id, None)

    def event(self, task_id: str) -> trio.Event:
        """What is set at the next change of ``task_id`` (take it before reading the row)."""
        event = self._events.get(task_id)
        if event is None:
            event = self._events[task_id] = trio.Event()
        return event

    def wake(self, task_id: str) -> None:
        """A notice said ``task_id`` changed."""
        event = self._events.pop(task_id, None)
        if event is not None:
            event.set()

    def wake_all(self) -> None:
        """Notices may have been missed: every waiter reads its row again."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()


def _events_between(before: TaskRow, after: TaskRow) -> list[dict[str, Any]]:
    """The stream events that tell a follower what changed from ``before`` to ``after``."""
    task = after.task
    if (task.state, task.updated_at) == (before.task.state, before.task.updated_at):
        return []
    events: list[dict[str, Any]] = []
    if task.terminal and task.artifacts:
        events.append(task.artifact_event(task.artifacts[0]))
    events.append(task.status_event())
    return events


async def follow(
    records: TaskRecords,
    watch: RowWatch,
    first: TaskRow,
    send: trio.MemorySendChannel[dict[str, Any]],
    *,
    timeout_s: float,
    poll_s: float = POLL_S,
) -> None:
    """Send the changes of ``first``'s task to ``send`` until it ends (then close ``send``).

    Cancellation:
        Ends the stream (``send`` is closed); ``timeout_s`` bounds it as a whole.
    """
    task_id = first.task.id
    last = first
    with send, watch.watching(task_id), trio.move_on_after(timeout_s):
        while True:
            changed = watch.event(task_id)
            row = await records.get(task_id)
            if row is None:  # expired or deleted meanwhile: nothing more will come
                return
            try:
                for event in _events_between(last, row):
                    send.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the reader went away or fell behind; it can poll with GetTask
            last = row
            if row.task.terminal:
                return
            with trio.move_on_after(poll_s):
                await changed.wait()


async def wait_until_ended(
    records: TaskRecords,
    watch: RowWatch,
    task_id: str,
    *,
    timeout_s: float,
    poll_s: float = POLL_S,
) -> TaskRow | None:
    """The task's row once it has ended, or ``None`` when it has not within ``timeout_s``."""
    with watch.watching(task_id), trio.move_on_after(timeout_s):
        while True:
            changed = watch.event(task_id)
            row = await records.get(task_id)
            if row is None or row.task.terminal:
                return row
            with trio.move_on_after(poll_s):
                await changed.wait()
    return None


__all__ = ["FOLLOW_BUFFER", "POLL_S", "RowWatch", "follow", "wait_until_ended"]
