"""A2A tasks: one per message an A2A client sends, kept with its conversation.

A task is the handle of one delivery through the router: its state (submitted, working,
completed, failed, canceled), the A2A messages of the exchange, the reply as an artifact, the
cancel scope the delivery runs under (CancelTask cancels it) and the streams following it.
The words themselves are the conversation's (``contextId`` is the conversation id), recorded
in the store on both backends; the task book is this process's index of the calls it ran and
runs, bounded by ``a2a.max_tasks`` and ``a2a.task_ttl``. A call runs where it was sent: its
cancel scope cannot move to another instance, so the book is per process, and the store's
``a2a_tasks`` (:mod:`caxton.a2a.records`) is what every instance reads.
"""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import attrs
import trio

from caxton.a2a.wire import internal_error, task_not_found

if TYPE_CHECKING:
    from collections.abc import Callable

SUBMITTED = "TASK_STATE_SUBMITTED"
WORKING = "TASK_STATE_WORKING"
COMPLETED = "TASK_STATE_COMPLETED"
FAILED = "TASK_STATE_FAILED"
CANCELED = "TASK_STATE_CANCELED"
REJECTED = "TASK_STATE_REJECTED"
TERMINAL = frozenset({COMPLETED, FAILED, CANCELED, REJECTED})
#: Events a slow stream may fall behind by before it is closed (the task goes on).
SUBSCRIBER_BUFFER = 1024
#: Streams one task may have at once.
MAX_SUBSCRIBERS = 16
#: Bytes of messages the finished tasks of one process may hold; past it the oldest finished
#: tasks go first (their words stay in the conversation, in the store).
MAX_TASK_BYTES = 256 * 1024 * 1024


def timestamp(at: float) -> str:
    """RFC 3339 in UTC with milliseconds, as protobuf's JSON writes a Timestamp."""
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@attrs.define(eq=False, kw_only=True)
class A2ATask:
    """One task; changed only by the service that runs it (trio thread)."""

    id: str
    context_id: str
    agent: str
    owner: str
    created_at: float = attrs.field(factory=time.time)
    updated_at: float = attrs.field(factory=time.time)
    state: str = SUBMITTED
    history: list[dict[str, Any]] = attrs.field(factory=list)
    artifacts: list[dict[str, Any]] = attrs.field(factory=list)
    status_message: dict[str, Any] | None = None
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    done: trio.Event = attrs.field(factory=trio.Event)
    subscribers: list[trio.MemorySendChannel[dict[str, Any]]] = attrs.field(factory=list)
    #: bytes its messages hold (counted by :meth:`TaskBook.account` once it ends)
    size_bytes: int = 0

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def status_json(self) -> dict[str, Any]:
        status: dict[str, Any] = {"state": self.state, "timestamp": timestamp(self.updated_at)}
        if self.status_message is not None:
            status["message"] = self.status_message
        return status

    def as_json(
        self, *, history_length: int | None = None, include_artifacts: bool = True
    ) -> dict[str, Any]:
        """The task as A2A JSON; ``history_length`` keeps the most recent messages (0: none)."""
        task: dict[str, Any] = {
            "id": self.id,
            "contextId": self.context_id,
            "status": self.status_json(),
        }
        if include_artifacts and self.artifacts:
            task["artifacts"] = list(self.artifacts)
        history = self.history
        if history_length is not None:
            history = history[-history_length:] if history_length > 0 else []
        if history:
            task["history"] = list(history)
        return task

    def status_event(self) -> dict[str, Any]:
        """The ``statusUpdate`` stream event of the current state."""
        return {
            "statusUpdate": {
                "taskId": self.id,
                "contextId": self.context_id,
                "status": self.status_json(),
            }
        }

    def artifact_event(
        self, artifact: dict[str, Any], *, append: bool = False, last_chunk: bool = True
    ) -> dict[str, Any]:
        """The ``artifactUpdate`` stream event carrying ``artifact``."""
        return {
            "artifactUpdate": {
                "taskId": self.id,
                "contextId": self.context_id,
                "artifact": artifact,
                "append": append,
                "lastChunk": last_chunk,
            }
        }

    def set_state(self, state: str, message: dict[str, Any] | None = None) -> None:
        self.change(state, message)
        self.announce()

    def change(self, state: str, message: dict[str, Any] | None = None) -> None:
        """Take ``state`` without telling anyone yet (:meth:`announce` does, once it is
        recorded)."""
        self.state = state
        self.updated_at = time.time()
        if message is not None:
            self.status_message = message

    def announce(self) -> None:
        """Tell the streams the current state; a final one ends them and the waiters."""
        self.publish(self.status_event())
        if self.state in TERMINAL:
            self.done.set()
            for channel in self.subscribers:
                channel.close()
            self.subscribers.clear()

    def subscribe(self) -> trio.MemoryReceiveChannel[dict[str, Any]]:
        """A stream of this task's events from now on (closed when it ends).

        Raises:
            RpcError: the task has :data:`MAX_SUBSCRIBERS` streams already.
        """
        if len(self.subscribers) >= MAX_SUBSCRIBERS:
            raise internal_error(
                f"task {self.id} already has {MAX_SUBSCRIBERS} streams; poll it with GetTask"
            )
        send, receive = trio.open_memory_channel[dict[str, Any]](SUBSCRIBER_BUFFER)
        if self.terminal:
            send.close()
        else:
            self.subscribers.append(send)
        return receive

    def publish(self, event: dict[str, Any]) -> None:
        """Hand ``event`` to every stream; a stream that fell behind is closed (its client
        can read the outcome with GetTask), so a slow reader never holds the agent up."""
        kept = []
        for channel in self.subscribers:
            try:
                channel.send_nowait(event)
            except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
                channel.close()
                continue
            kept.append(channel)
        self.subscribers = kept


class TaskBook:
    """The tasks of this process, by id; bounded by ``max_tasks``, finished ones expire.

    Args:
        max_tasks: tasks kept; past it the oldest finished task goes (running ones stay, and
            a new task is refused while ``max_tasks`` run at once).
        ttl_s: how long a finished task stays readable.
        max_bytes: what the finished tasks' messages may hold in all.
        clock: seconds (``time.time``), for expiry.
    """

    def __init__(
        self,
        *,
        max_tasks: int,
        ttl_s: float,
        max_bytes: int = MAX_TASK_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.max_tasks = max_tasks
        self.ttl_s = ttl_s
        self.max_bytes = max_bytes
        self._clock = clock
        self._tasks: dict[str, A2ATask] = {}
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def running(self) -> int:
        return sum(1 for task in self._tasks.values() if not task.terminal)

    def add(self, task: A2ATask) -> None:
        """Keep ``task``, making room first.

        Raises:
            RpcError: ``max_tasks`` tasks are running.
        """
        if len(self._tasks) >= self.max_tasks:
            self.expire()
        if len(self._tasks) >= self.max_tasks:
            oldest = next((t for t in self._tasks.values() if t.terminal), None)
            if oldest is None:
                raise internal_error(
                    f"{self.max_tasks} A2A tasks are running on this server (a2a.max_tasks); "
                    "try again when some have finished"
                )
            self._drop(oldest.id)
        self._tasks[task.id] = task

    def expire(self) -> int:
        """Drop finished tasks older than ``ttl_s``; how many went."""
        horizon = self._clock() - self.ttl_s
        gone = [t.id for t in self._tasks.values() if t.terminal and t.updated_at < horizon]
        for task_id in gone:
            self._drop(task_id)
        return len(gone)

    def account(self, task: A2ATask, size_bytes: int) -> None:
        """Count the bytes of a task that ended; drop the oldest finished tasks while the
        finished ones hold more than ``max_bytes`` (the newest one stays, whatever its size)."""
        if task.id not in self._tasks:
            return
        task.size_bytes = size_bytes
        self._bytes += size_bytes
        for older in list(self._tasks.values()):
            if self._bytes <= self.max_bytes:
                break
            if older.terminal and older is not task:
                self._drop(older.id)

    def _drop(self, task_id: str) -> None:
        task = self._tasks.pop(task_id, None)
        if task is not None:
            self._bytes -= task.size_bytes

    def find(self, task_id: str) -> A2ATask | None:
        """The task of ``task_id`` if this process has it (whoever asks)."""
        return self._tasks.get(task_id)

    def forget(self, task_id: str) -> None:
        """Drop a task that never started."""
        self._drop(task_id)

    def get(self, task_id: str, *, agent: str, owner: str) -> A2ATask:
        """The task ``owner`` started on ``agent``.

        Raises:
            RpcError: -32001 when there is none (another caller's task is not found either).
        """
        task = self._tasks.get(task_id)
        if task is None or task.agent != agent or task.owner != owner:
            raise task_not_found(task_id[:128])
        if task.terminal and task.updated_at < self._clock() - self.ttl_s:
            self._drop(task_id)
            raise task_not_found(task_id[:128])
        return task

    def page(
        self,
        *,
        agent: str,
        owner: str,
        context_id: str | None = None,
        state: str | None = None,
        updated_after: float | None = None,
        offset: int = 0,
        size: int = 50,
    ) -> tuple[list[A2ATask], int]:
        """``size`` of ``owner``'s tasks on ``agent`` from ``offset``, most recently updated
        first, and how many match in all."""
        horizon = self._clock() - self.ttl_s
        matching = [
            t
            for t in self._tasks.values()
            if t.agent == agent
            and t.owner == owner
            and not (t.terminal and t.updated_at < horizon)
            and (context_id is None or t.context_id == context_id)
            and (state is None or t.state == state)
            and (updated_after is None or t.updated_at > updated_after)
        ]
        matching.sort(key=lambda t: (t.updated_at, t.created_at), reverse=True)
        return matching[offset : offset + size], len(matching)

    def statistics(self) -> dict[str, int]:
        return {"tasks": len(self._tasks), "running": self.running(), "bytes": self._bytes}


def page_token(offset: int) -> str:
    return str(offset) if offset > 0 else ""


def offset_of(token: str) -> int:
    """The offset a ``pageToken`` from :func:`page_token` stands for (0 for a bad one)."""
    if not token.isdigit() or len(token) > 9:
        return 0
    return int(token)


def seconds_of(timestamp_value: Any) -> float | None:
    """A protobuf Timestamp as seconds, or ``None`` when unset."""
    seconds = getattr(timestamp_value, "seconds", 0)
    nanos = getattr(timestamp_value, "nanos", 0)
    if not seconds and not nanos:
        return None
    value = float(seconds) + float(nanos) / 1e9
    return value if math.isfinite(value) else None
