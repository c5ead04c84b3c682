"""The conversations component's SQL on PostgreSQL (:class:`caxton.store.postgres.PostgresStore`).

A batch is one transaction of two statements: its messages go in by ``COPY`` and its
conversations by one upsert over arrays (``unnest``). Every conversation is upserted, whatever
this process believes of it: on a shared database another instance may have written or swept
the row meanwhile, and PostgreSQL's upsert costs no more than its insert. Upserts run in
conversation id order, so two instances writing the same conversations never deadlock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Final

from caxton.messaging.conversation_sql import (
    ACTIVE,
    MESSAGE_COLUMNS,
    Batch,
    ConversationSummary,
    message_from_row,
    message_values,
)

if TYPE_CHECKING:
    from collections.abc import Collection

    from caxton.messages import Message
    from caxton.store.backend import Backend

_COPY_MESSAGES = f"COPY conversation_messages ({MESSAGE_COLUMNS}) FROM STDIN"
_UPSERT_CONVERSATIONS = (
    "INSERT INTO conversations "
    "(conversation_id, status, created_at, last_activity, message_count) "
    f"SELECT id, '{ACTIVE}', first, last, count FROM "
    "unnest(%s::text[], %s::float8[], %s::float8[], %s::bigint[]) AS t(id, first, last, count) "
    "ON CONFLICT (conversation_id) DO UPDATE SET "
    "created_at = least(conversations.created_at, excluded.created_at), "
    "last_activity = greatest(conversations.last_activity, excluded.last_activity), "
    "message_count = conversations.message_count + excluded.message_count"
)
_SUMMARY_COLUMNS = (
    "c.conversation_id, c.status, c.created_at, c.last_activity, c.message_count, "
    "(SELECT array_agg(DISTINCT n.name ORDER BY n.name) FROM ("
    "  SELECT sender AS name FROM conversation_messages m"
    "  WHERE m.conversation_id = c.conversation_id"
    "  UNION ALL SELECT receiver FROM conversation_messages m"
    "  WHERE m.conversation_id = c.conversation_id) n WHERE n.name IS NOT NULL)"
)


def _write_batch(batch: Batch, conn: Any) -> float:
    started = time.thread_time()
    with conn.cursor() as cursor:
        with cursor.copy(_COPY_MESSAGES) as copy:
            for message in batch.messages:
                copy.write_row(message_values(message))
        ids = sorted(batch.totals)
        totals = [batch.totals[cid] for cid in ids]
        cursor.execute(
            _UPSERT_CONVERSATIONS,
            [
                ids,
                [float(t[0]) for t in totals],
                [float(t[1]) for t in totals],
                [int(t[2]) for t in totals],
            ],
        )
    return time.thread_time() - started


def _summaries(conn: Any, where: str, params: list[object]) -> list[ConversationSummary]:
    rows = conn.execute(f"SELECT {_SUMMARY_COLUMNS} FROM conversations c {where}", params)
    return [
        ConversationSummary(
            conversation_id=str(r[0]),
            status=str(r[1]),
            created_at=float(r[2]),
            last_activity=float(r[3]),
            message_count=int(r[4]),
            participants=tuple(r[5] or ()),
        )
        for r in rows.fetchall()
    ]


class PostgresConversationSQL:
    """:class:`~caxton.messaging.conversation_sql.ConversationSQL` for PostgreSQL."""

    dialect: Final = "postgres"

    async def write_batch(
        self, store: Backend, batch: Batch, fresh: Collection[str], stored: Collection[str]
    ) -> float:
        del fresh, stored  # every conversation is upserted (see the module docstring)
        return await store.execute_write_fn(lambda conn: _write_batch(batch, conn))

    def set_status(self, conn: Any, conversation_id: str, status: str) -> bool:
        row = conn.execute(
            "UPDATE conversations SET status = %s WHERE conversation_id = %s "
            "RETURNING conversation_id",
            [status, conversation_id],
        ).fetchone()
        return row is not None

    def sweep(self, conn: Any, cutoff: float) -> list[str]:
        ids = [
            str(r[0])
            for r in conn.execute(
                "DELETE FROM conversations WHERE last_activity < %s RETURNING conversation_id",
                [cutoff],
            ).fetchall()
        ]
        if ids:
            conn.execute("DELETE FROM conversation_messages WHERE conversation_id = ANY(%s)", [ids])
        return ids

    def status(self, conn: Any, conversation_id: str) -> str | None:
        row = conn.execute(
            "SELECT status FROM conversations WHERE conversation_id = %s", [conversation_id]
        ).fetchone()
        return None if row is None else str(row[0])

    def initiator(self, conn: Any, conversation_id: str) -> str | None:
        row = conn.execute(
            "SELECT sender FROM conversation_messages WHERE conversation_id = %s "
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
            f"WHERE conversation_id = %s ORDER BY seq {order} LIMIT %s",
            [conversation_id, limit],
        ).fetchall()
        return [message_from_row(r) for r in rows]

    def summary(self, conn: Any, conversation_id: str) -> ConversationSummary | None:
        found = _summaries(conn, "WHERE c.conversation_id = %s", [conversation_id])
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
            clauses.append("c.status = %s")
            params.append(status)
        if participant is not None:
            clauses.append(
                "c.conversation_id IN (SELECT conversation_id FROM conversation_messages "
                "WHERE sender = %s OR receiver = %s)"
            )
            params.extend([participant, participant])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        total_row = conn.execute(f"SELECT count(*) FROM conversations c {where}", params).fetchone()
        rows = _summaries(
            conn,
            f"{where} ORDER BY c.last_activity DESC, c.conversation_id LIMIT %s OFFSET %s",
            [*params, limit, offset],
        )
        return rows, int(total_row[0]) if total_row else 0


POSTGRES_CONVERSATION_SQL: Final = PostgresConversationSQL()
