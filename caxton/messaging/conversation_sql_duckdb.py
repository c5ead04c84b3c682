"""The conversations component's SQL on DuckDB (the embedded store, :class:`caxton.store.Store`).

A batch is one script, one call into DuckDB: its rows travel as one JSON array of arrays of
text, parsed by DuckDB and cast per column (binding eleven parameters per row costs ten times
more; arrays of text parse in three quarters of the time of objects), and every statement
called on its own would cost DuckDB ~0.4 ms and the writer thread a wait for the GIL.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, ClassVar, Final, cast

import duckdb

from caxton.messaging.conversation_sql import (
    ACTIVE,
    MESSAGE_COLUMNS,
    Batch,
    SharedConversationSQL,
    encode,
)

if TYPE_CHECKING:
    from collections.abc import Collection

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


class DuckDBConversationSQL(SharedConversationSQL):
    """:class:`~caxton.messaging.conversation_sql.ConversationSQL` for DuckDB.

    :meth:`write_batch` needs the DuckDB store itself (:class:`caxton.store.Store`): the batch
    script carries its own ``BEGIN`` and ``COMMIT``.
    """

    dialect: Final = "duckdb"
    param: ClassVar[str] = "?"

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


DUCKDB_CONVERSATION_SQL: Final = DuckDBConversationSQL()
