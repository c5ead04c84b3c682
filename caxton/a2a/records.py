"""A2A tasks in the store (``a2a_tasks``, :mod:`caxton.a2a.schema`): what every instance of a
cluster reads, and what a restarted one-node server still answers from.

The instance that runs a task's call writes its row when the task is admitted, when it starts
working and when it ends (:meth:`TaskRecords.save`), with an ``a2a.task`` notice in the same
transaction (PostgreSQL: the other instances hear of it when it commits). CancelTask on an
instance that does not run the call marks the row (:meth:`TaskRecords.request_cancel`) and
sends an ``a2a.cancel`` notice to the owner. Works on both stores of record: the SQL is plain,
with ``?`` placeholders turned into psycopg's ``%s`` for PostgreSQL.

Bounds: at most ``a2a.max_tasks`` rows (the oldest finished go first; a new task is refused
while that many run), finished rows are deleted ``a2a.task_ttl`` after they ended, and a row's
JSON holds the task's two messages and its reply, each bounded by
``messaging.max_message_size``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

import attrs

from caxton.a2a.tasks import TERMINAL, A2ATask
from caxton.a2a.wire import internal_error

if TYPE_CHECKING:
    from collections.abc import Callable

    from caxton.cluster.notify import NoticeBus
    from caxton.store.backend import Backend

#: The notice an instance sends when it changed a task's row (payload ``{"id"}``).
TASK_NOTICE: Final = "a2a.task"
#: The notice asking the owner of a task to cancel its call (payload ``{"id", "instance"}``).
CANCEL_NOTICE: Final = "a2a.cancel"
#: Rows one sweep marks failed or reads as cancel requests, at most.
SWEEP_LIMIT: Final = 1000

_RUNNING_STATES: Final = tuple(sorted({"TASK_STATE_SUBMITTED", "TASK_STATE_WORKING"}))
_TERMINAL_STATES: Final = tuple(sorted(TERMINAL))
_COLUMNS: Final = (
    "id, context_id, agent, caller, instance, state, status_message, history, artifacts, "
    "created_at, updated_at, cancel_requested_at"
)
_RUNNING_IN: Final = "state IN (?, ?)"
_TERMINAL_IN: Final = "state IN (" + ", ".join("?" for _ in _TERMINAL_STATES) + ")"


@attrs.frozen(kw_only=True)
class TaskRow:
    """A task as the store has it: the task (detached: its cancel scope and streams are the
    owner's, in the owner's process), who runs it, and whether a cancel was asked for."""

    task: A2ATask
    instance: str
    cancel_requested: bool


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _loaded(text: Any, default: Any) -> Any:
    if text is None:
        return default
    try:
        return json.loads(str(text))
    except ValueError:
        return default


def _row(values: Any) -> TaskRow:
    history = _loaded(values[7], [])
    artifacts = _loaded(values[8], [])
    status = _loaded(values[6], None)
    task = A2ATask(
        id=str(values[0]),
        context_id=str(values[1]),
        agent=str(values[2]),
        owner=str(values[3]),
        state=str(values[5]),
        status_message=status if isinstance(status, dict) else None,
        history=history if isinstance(history, list) else [],
        artifacts=artifacts if isinstance(artifacts, list) else [],
        created_at=float(values[9]),
        updated_at=float(values[10]),
    )
    return TaskRow(task=task, instance=str(values[4]), cancel_requested=values[11] is not None)


def size_of(task: A2ATask) -> int:
    """About the bytes a task's messages hold (their JSON)."""
    held = [*task.history, *task.artifacts, task.status_message]
    return sum(len(_json(item)) for item in held if item)


class TaskRecords:
    """``a2a_tasks`` in ``store`` (which must have run :mod:`caxton.a2a.schema`).

    Args:
        store: the store of record.
        notices: how the other instances hear of a changed row (nothing with DuckDB).
        instance_id: this instance (the ``instance`` of the rows it writes).
        max_tasks: rows kept (``a2a.max_tasks``).
        ttl_s: how long a finished row stays (``a2a.task_ttl``).
        live_window_s: how old a heartbeat may be for its instance to count as live (a task of
            an instance not live for twice this long is marked failed).
        clock: epoch seconds.
    """

    def __init__(
        self,
        store: Backend,
        *,
        notices: NoticeBus,
        instance_id: str,
        max_tasks: int,
        ttl_s: float,
        live_window_s: float = 6.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.notices = notices
        self.instance_id = instance_id
        self.max_tasks = max_tasks
        self.ttl_s = ttl_s
        self.live_window_s = live_window_s
        self._clock = clock
        self._postgres = store.dialect == "postgres"

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._postgres else text

    # -- writes --------------------------------------------------------------------------------

    async def insert(self, task: A2ATask) -> None:
        """Keep a new task's row, making room first (expired rows, then the oldest finished).

        Raises:
            RpcError: ``a2a.max_tasks`` tasks are running (on all instances together).
            ServiceUnavailable: the store does not answer.
        """
        count = self._sql("SELECT count(*) FROM a2a_tasks")
        expire = self._sql(f"DELETE FROM a2a_tasks WHERE {_TERMINAL_IN} AND updated_at < ?")
        oldest = self._sql(
            f"SELECT id FROM a2a_tasks WHERE {_TERMINAL_IN} ORDER BY updated_at LIMIT ?"
        )
        delete = self._sql("DELETE FROM a2a_tasks WHERE id = ?")
        insert = self._sql(
            f"INSERT INTO a2a_tasks ({_COLUMNS}, size_bytes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)"
        )
        values = (
            task.id,
            task.context_id,
            task.agent,
            task.owner,
            self.instance_id,
            task.state,
            _json(task.status_message) if task.status_message is not None else None,
            _json(task.history),
            _json(task.artifacts),
            task.created_at,
            task.updated_at,
            size_of(task),
        )
        horizon = self._clock() - self.ttl_s
        limit = self.max_tasks

        def write(conn: Any) -> bool:
            kept = int(conn.execute(count).fetchone()[0])
            if kept >= limit:
                conn.execute(expire, (*_TERMINAL_STATES, horizon))
                kept = int(conn.execute(count).fetchone()[0])
            if kept >= limit:
                gone = conn.execute(oldest, (*_TERMINAL_STATES, kept - limit + 1)).fetchall()
                for (task_id,) in gone:
                    conn.execute(delete, (task_id,))
                kept -= len(gone)
            if kept >= limit:
                return False
            conn.execute(insert, values)
            return True

        if not await self.store.execute_write_fn(write):
            raise internal_error(
                f"{limit} A2A tasks are running (a2a.max_tasks); try again when some have finished"
            )

    async def save(self, task: A2ATask, *, unless_ended: bool = False) -> bool:
        """Write the task's state, messages and time, and tell the other instances.

        Args:
            unless_ended: leave a row that has ended already as it is (for marking another
                instance's task failed: its owner may have finished it meanwhile).

        Returns:
            Whether a row was changed (``False``: it expired, or had ended).
        """
        guard = f" AND NOT {_TERMINAL_IN}" if unless_ended else ""
        update = self._sql(
            "UPDATE a2a_tasks SET state = ?, status_message = ?, history = ?, artifacts = ?, "
            f"size_bytes = ?, updated_at = ? WHERE id = ?{guard}"
        )
        values: tuple[Any, ...] = (
            task.state,
            _json(task.status_message) if task.status_message is not None else None,
            _json(task.history),
            _json(task.artifacts),
            size_of(task),
            task.updated_at,
            task.id,
        )
        if unless_ended:
            values = (*values, *_TERMINAL_STATES)
        notices, task_id = self.notices, task.id

        def write(conn: Any) -> bool:
            count = conn.execute(update, values).rowcount
            if count:
                notices.notify(conn, TASK_NOTICE, {"id": task_id})
            return bool(count)

        return await self.store.execute_write_fn(write)

    async def request_cancel(self, row: TaskRow) -> bool:
        """Ask the instance running ``row``'s task to cancel it; whether it was still running."""
        update = self._sql(
            f"UPDATE a2a_tasks SET cancel_requested_at = ? WHERE id = ? AND {_RUNNING_IN}"
        )
        values = (self._clock(), row.task.id, *_RUNNING_STATES)
        notices, payload = self.notices, {"id": row.task.id, "instance": row.instance}

        def write(conn: Any) -> bool:
            count = conn.execute(update, values).rowcount
            if count:
                notices.notify(conn, CANCEL_NOTICE, payload)
            return bool(count)

        return await self.store.execute_write_fn(write)

    async def expire(self) -> int:
        """Delete the rows of tasks that ended more than ``ttl_s`` ago; how many went."""
        select = self._sql(
            f"SELECT count(*) FROM a2a_tasks WHERE {_TERMINAL_IN} AND updated_at < ?"
        )
        delete = self._sql(f"DELETE FROM a2a_tasks WHERE {_TERMINAL_IN} AND updated_at < ?")
        params = (*_TERMINAL_STATES, self._clock() - self.ttl_s)

        def write(conn: Any) -> int:
            gone = int(conn.execute(select, params).fetchone()[0])
            if gone:
                conn.execute(delete, params)
            return gone

        return await self.store.execute_write_fn(write)

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, task_id: str) -> TaskRow | None:
        """The row of ``task_id`` (``None``: none, or it ended more than ``ttl_s`` ago)."""
        select = self._sql(f"SELECT {_COLUMNS} FROM a2a_tasks WHERE id = ?")

        def read(conn: Any) -> Any:
            return conn.execute(select, (task_id,)).fetchone()

        found = await self.store.execute_fn(read)
        if found is None:
            return None
        row = _row(found)
        if row.task.terminal and row.task.updated_at < self._clock() - self.ttl_s:
            return None
        return row

    async def page(
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
        clauses = ["agent = ?", "caller = ?", f"NOT ({_TERMINAL_IN} AND updated_at < ?)"]
        params: list[Any] = [agent, owner, *_TERMINAL_STATES, self._clock() - self.ttl_s]
        if context_id is not None:
            clauses.append("context_id = ?")
            params.append(context_id)
        if state is not None:
            clauses.append("state = ?")
            params.append(state)
        if updated_after is not None:
            clauses.append("updated_at > ?")
            params.append(updated_after)
        where = " WHERE " + " AND ".join(clauses)
        select = self._sql(
            f"SELECT {_COLUMNS} FROM a2a_tasks{where} "
            "ORDER BY updated_at DESC, created_at DESC, id LIMIT ? OFFSET ?"
        )
        count = self._sql(f"SELECT count(*) FROM a2a_tasks{where}")

        def read(conn: Any) -> tuple[list[Any], int]:
            rows = conn.execute(select, (*params, size, offset)).fetchall()
            total = int(conn.execute(count, params).fetchone()[0])
            return rows, total

        rows, total = await self.store.execute_fn(read)
        return [_row(values).task for values in rows], total

    async def cancel_requests(self) -> list[str]:
        """This instance's running tasks another instance asked to cancel."""
        select = self._sql(
            f"SELECT id FROM a2a_tasks WHERE instance = ? AND {_RUNNING_IN} "
            "AND cancel_requested_at IS NOT NULL LIMIT ?"
        )
        params = (self.instance_id, *_RUNNING_STATES, SWEEP_LIMIT)

        def read(conn: Any) -> list[str]:
            return [str(row[0]) for row in conn.execute(select, params).fetchall()]

        return await self.store.execute_fn(read)

    async def orphans(self) -> list[TaskRow]:
        """Running tasks whose instance is gone: with one process on the store (DuckDB), every
        running task of another instance id (an earlier run of this server); in a cluster,
        those of instances without a heartbeat for twice the live window (their rows' last
        change that old too, so a starting instance's first tasks are never taken for dead)."""
        clauses = [_RUNNING_IN, "instance <> ?"]
        params: list[Any] = [*_RUNNING_STATES, self.instance_id]
        if self.store.shared:
            grace = 2 * self.live_window_s
            clauses.append("updated_at < ?")
            params.append(self._clock() - grace)
            clauses.append(
                "instance NOT IN (SELECT id FROM cluster_instances "
                "WHERE last_heartbeat >= now() - make_interval(secs => ?))"
            )
            params.append(grace)
        select = self._sql(
            f"SELECT {_COLUMNS} FROM a2a_tasks WHERE {' AND '.join(clauses)} LIMIT ?"
        )

        def read(conn: Any) -> list[Any]:
            return list(conn.execute(select, (*params, SWEEP_LIMIT)).fetchall())

        return [_row(values) for values in await self.store.execute_fn(read)]


__all__ = ["CANCEL_NOTICE", "TASK_NOTICE", "TaskRecords", "TaskRow", "size_of"]
