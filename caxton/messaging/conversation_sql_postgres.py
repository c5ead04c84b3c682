"""The conversations component's SQL on PostgreSQL (:class:`caxton.store.postgres.PostgresStore`).

A batch is one transaction of two statements: its messages go in by ``COPY`` and its
conversations by one upsert over arrays (``unnest``). Every conversation is upserted, whatever
this process believes of it: on a shared database another instance may have written or swept
the row meanwhile, and PostgreSQL's upsert costs no more than its insert. Upserts run in
conversation id order, so two instances writing the same conversations never deadlock.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, ClassVar, Final

from caxton.messaging.conversation_sql import (
    ACTIVE,
    MESSAGE_COLUMNS,
    Batch,
    SharedConversationSQL,
    message_values,
)

if TYPE_CHECKING:
    from collections.abc import Collection

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


class PostgresConversationSQL(SharedConversationSQL):
    """:class:`~caxton.messaging.conversation_sql.ConversationSQL` for PostgreSQL."""

    dialect: Final = "postgres"
    param: ClassVar[str] = "%s"

    async def write_batch(
        self, store: Backend, batch: Batch, fresh: Collection[str], stored: Collection[str]
    ) -> float:
        del fresh, stored  # every conversation is upserted (see the module docstring)
        return await store.execute_write_fn(lambda conn: _write_batch(batch, conn))

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


POSTGRES_CONVERSATION_SQL: Final = PostgresConversationSQL()
