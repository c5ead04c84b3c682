"""The conversation tables, as store migrations (DuckDB and PostgreSQL).

* ``conversations`` — one row per conversation: status (active | closed), first and last
  activity (epoch seconds), message count.
* ``conversation_messages`` — every envelope in arrival order (``seq`` from a sequence);
  ``content`` is the JSON text of the content (a JSON string for text content). The
  participants are the senders and receivers of its messages.
"""

from __future__ import annotations

from caxton.store import Migration

CONVERSATION_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        feature="conversations",
        version=1,
        description="conversations and their messages",
        statements=(
            """
            CREATE TABLE conversations (
                conversation_id VARCHAR PRIMARY KEY,
                status VARCHAR NOT NULL,
                created_at DOUBLE NOT NULL,
                last_activity DOUBLE NOT NULL,
                message_count BIGINT NOT NULL
            )
            """,
            "CREATE SEQUENCE conversation_message_seq",
            """
            CREATE TABLE conversation_messages (
                seq BIGINT NOT NULL DEFAULT nextval('conversation_message_seq'),
                conversation_id VARCHAR NOT NULL,
                message_id VARCHAR NOT NULL,
                performative VARCHAR NOT NULL,
                sender VARCHAR,
                receiver VARCHAR,
                capability VARCHAR,
                content VARCHAR NOT NULL,
                reply_with VARCHAR,
                in_reply_to VARCHAR,
                created_at DOUBLE NOT NULL,
                hop INTEGER NOT NULL
            )
            """,
            "CREATE INDEX conversation_messages_conversation "
            "ON conversation_messages (conversation_id)",
        ),
    ),
)

#: The same tables on PostgreSQL (:class:`caxton.store.postgres.PostgresStore`): ``seq`` is an
#: identity column, and messages are indexed by conversation and arrival order, which is how
#: every read takes them; the sweep finds idle conversations by ``last_activity``.
CONVERSATION_POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        feature="conversations",
        version=1,
        description="conversations and their messages",
        statements=(
            """
            CREATE TABLE conversations (
                conversation_id TEXT PRIMARY KEY,
                status TEXT NOT NULL,
                created_at DOUBLE PRECISION NOT NULL,
                last_activity DOUBLE PRECISION NOT NULL,
                message_count BIGINT NOT NULL
            )
            """,
            "CREATE INDEX conversations_last_activity ON conversations (last_activity)",
            """
            CREATE TABLE conversation_messages (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                conversation_id TEXT NOT NULL,
                message_id TEXT NOT NULL,
                performative TEXT NOT NULL,
                sender TEXT,
                receiver TEXT,
                capability TEXT,
                content TEXT NOT NULL,
                reply_with TEXT,
                in_reply_to TEXT,
                created_at DOUBLE PRECISION NOT NULL,
                hop INTEGER NOT NULL
            )
            """,
            "CREATE INDEX conversation_messages_conversation "
            "ON conversation_messages (conversation_id, seq)",
            "CREATE INDEX conversation_messages_sender ON conversation_messages (sender)",
            "CREATE INDEX conversation_messages_receiver ON conversation_messages (receiver)",
        ),
    ),
)
