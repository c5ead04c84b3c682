"""The conversations component's SQL on DuckDB (the embedded store, :class:`caxton.store.Store`).

A batch is one script, one call into DuckDB: its rows travel as one JSON array of arrays of
text, parsed by DuckDB and cast per column (binding eleven parameters per row costs ten times
more; arrays of text parse in three quarters of the time of objects), and every statement
called on its own would cost DuckDB ~0.4 ms and the writer thread a wait for the GIL.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, Final, cast

import duckdb

from caxton.messaging.conversation_sql import (
    ACTIVE,
    MESSAGE_COLUMNS,
    Batch,
    ConversationSummary,
    encode,
    message_from_row,
)

if TYPE_CHECKING:
    from collections.abc import Collection

    from caxton.messages import Message
    from caxton.store import Connection, Store
    from caxton.store.backend import Backend


def _sql_text(text: str) -> str:
    """``text`` as a SQL string literal (no backslash escapes in DuckDB's standard strings)."""
    return "'" + text.replace("'", "''") + "'"


_ROWS = "unnest(from_json({rows}::JSON, '[[\"VARCHAR\"]]')) AS r"
_INSERT_MESSAGES = (
    f"INSERT INTO conversation_messages ({MESSAGE_COLUMNS}) SELECT "
    "r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]::DOUBLE, r[11]::INTEGER "
    f"FROM (SELECT {_ROWS})"
)
_CONVERSATION_ROWS = (
    f"SELECT r[1] AS id, r[2]::DOUBLE AS first, r[3]::DOUBLE AS last, r[4]::BIGINT AS count "
    f"FROM (SELECT {_ROWS})"
)
_INSERT_CONVERSATIONS = (
    f"INSERT INTO conversations SELECT id, '{ACTIVE}', first, last, count "
    f"FROM ({_CONVERSATION_ROWS})"
)
_UPDATE_CONVERSATIONS = (
    "UPDATE conversations SET last_activity = greatest(last_activity, c.last), "
    f"message_count = message_count + c.count FROM ({_CONVERSATION_ROWS}) c "
    "WHERE conversations.conversation_id = c.id"
)
_UPSERT_CONVERSATIONS = (
    f"{_INSERT_CONVERSATIONS} ON CONFLICT (conversation_id) DO UPDATE SET "
    "last_activity = greatest(last_activity, excluded.last_activity), "
    "message_count = message_count + excluded.message_count"
)


def _write_batch(
    batch: Batch, fresh: Collection[str], stored: Collection[str], conn: Connection
) -> None:
    """Write ``batch`` in one transaction, as one script.

    Conversations in ``fresh`` are plain inserts, those in ``stored`` plain updates; the others
    are upserts, which cost DuckDB about twice as much as either.
    """
    groups: tuple[list[str], list[str], list[str]] = ([], [], [])
    for cid, (first, last, count) in batch.totals.items():
        group = 0 if cid in fresh else 1 if cid in stored else 2
        groups[group].append(encode((cid, first, last, count)))
    script = ["BEGIN", _INSERT_MESSAGES.format(rows=_sql_text("[" + ",".join(batch.rows) + "]"))]
    for statement, rows in zip(
        (_INSERT_CONVERSATIONS, _UPDATE_CONVERSATIONS, _UPSERT_CONVERSATIONS), groups, strict=True
    ):
        if rows:
            script.append(statement.format(rows=_sql_text("[" + ",".join(rows) + "]")))
    script.append("COMMIT")
    try:
        conn.execute(";\n".join(script))
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # (no transaction left open to roll back)
            conn.rollback()
        raise


def _summaries(conn: Connection, where: str, params: list[object]) -> list[ConversationSummary]:
    rows = conn.execute(
        "SELECT c.conversation_id, c.status, c.created_at, c.last_activity, c.message_count, "
        "(SELECT list(DISTINCT name ORDER BY name) FROM ("
        "  SELECT sender AS name FROM conversation_messages m"
        "  WHERE m.conversation_id = c.conversation_id"
        "  UNION ALL SELECT receiver FROM conversation_messages m"
        "  WHERE m.conversation_id = c.conversation_id) WHERE name IS NOT NULL) "
        f"FROM conversations c {where}",
        params,
    ).fetchall()
    return [
        ConversationSummary(
            conversation_id=str(r[0]),
            status=str(r[1]),
            created_at=float(r[2]),
            last_activity=float(r[3]),
            message_count=int(r[4]),
            participants=tuple(r[5] or ()),
        )
        for r in rows
    ]


class DuckDBConversationSQL:
    """:class:`~caxton.messaging.conversation_sql.ConversationSQL` for DuckDB.

    :meth:`write_batch` needs the DuckDB store itself (:class:`caxton.store.Store`): the batch
    script carries its own ``BEGIN`` and ``COMMIT``.
    """

    dialect: Final = "duckdb"

    async def write_batch(
        self, store: Backend, batch: Batch, fresh: Collection[str], stored: Collection[str]
    ) -> float:
        duck = cast("Store", store)

        def write(conn: Connection, fresh: Collection[str], stored: Collection[str]) -> float:
            started = time.thread_time()
            _write_batch(batch, fresh, stored, conn)
            return time.thread_time() - started

        try:
            return await duck.execute_write_fn(
                lambda conn: write(conn, fresh, stored), transaction=False
            )
        except duckdb.ConstraintException:
            # a "fresh" id was there after all (never expected): upsert them all
            return await duck.execute_write_fn(lambda conn: write(conn, (), ()), transaction=False)

    def set_status(self, conn: Any, conversation_id: str, status: str) -> bool:
        row = conn.execute(
            "UPDATE conversations SET status = ? WHERE conversation_id = ? "
            "RETURNING conversation_id",
            [status, conversation_id],
        ).fetchone()
        return row is not None

    def sweep(self, conn: Any, cutoff: float) -> list[str]:
        ids = [
            str(r[0])
            for r in conn.execute(
                "SELECT conversation_id FROM conversations WHERE last_activity < ?", [cutoff]
            ).fetchall()
        ]
        if ids:
            conn.execute(
                "DELETE FROM conversation_messages WHERE conversation_id IN "
                "(SELECT conversation_id FROM conversations WHERE last_activity < ?)",
                [cutoff],
            )
            conn.execute("DELETE FROM conversations WHERE last_activity < ?", [cutoff])
        return ids

    def status(self, conn: Any, conversation_id: str) -> str | None:
        row = conn.execute(
            "SELECT status FROM conversations WHERE conversation_id = ?", [conversation_id]
        ).fetchone()
        return None if row is None else str(row[0])

    def initiator(self, conn: Any, conversation_id: str) -> str | None:
        row = conn.execute(
            "SELECT sender FROM conversation_messages WHERE conversation_id = ? "
            "AND sender IS NOT NULL ORDER BY seq LIMIT 1",
            [conversation_id],
        ).fetchone()
        return None if row is None else str(row[0])

    def messages(
        self, conn: Any, conversation_id: str, limit: int, *, latest: bool
    ) -> list[Message]:
        order = "DESC" if latest else "ASC"
        rows = conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM conversation_messages "
            f"WHERE conversation_id = ? ORDER BY seq {order} LIMIT ?",
            [conversation_id, limit],
        ).fetchall()
        return [message_from_row(r) for r in rows]

    def summary(self, conn: Any, conversation_id: str) -> ConversationSummary | None:
        found = _summaries(conn, "WHERE c.conversation_id = ?", [conversation_id])
        return found[0] if found else None

    def page(
        self,
        conn: Any,
        *,
        status: str | None,
        participant: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[ConversationSummary], int]:
        clauses: list[str] = []
        params: list[object] = []
        if status is not None:
            clauses.append("c.status = ?")
            params.append(status)
        if participant is not None:
            clauses.append(
                "c.conversation_id IN (SELECT conversation_id FROM conversation_messages "
                "WHERE sender = ? OR receiver = ?)"
            )
            params.extend([participant, participant])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        total_row = conn.execute(f"SELECT count(*) FROM conversations c {where}", params).fetchone()
        rows = _summaries(
            conn,
            f"{where} ORDER BY c.last_activity DESC, c.conversation_id LIMIT ? OFFSET ?",
            [*params, limit, offset],
        )
        return rows, int(total_row[0]) if total_row else 0


DUCKDB_CONVERSATION_SQL: Final = DuckDBConversationSQL()
