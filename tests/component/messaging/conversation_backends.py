"""Both stores the conversations component runs on, for tests parametrized over them.

``conversation_backend`` (a fixture in the test modules that import :func:`backend_fixture`)
is a :class:`ConversationBackend`: ``open()`` starts a store migrated for conversations (a DuckDB
file in tmp_path, or a fresh PostgreSQL database; opening twice opens the same database again),
and ``conversations(store, ...)`` builds the component with that dialect's SQL.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import attrs
import pytest

from caxton.messaging import CONVERSATION_MIGRATIONS, Conversations
from caxton.messaging.conversation_sql import ConversationSQL
from caxton.messaging.conversation_sql_duckdb import DUCKDB_CONVERSATION_SQL
from caxton.messaging.conversation_sql_postgres import POSTGRES_CONVERSATION_SQL
from caxton.messaging.schema import CONVERSATION_POSTGRES_MIGRATIONS
from caxton.store import open_store
from caxton.store.backend import Backend
from caxton.store.postgres import open_postgres_store

BACKENDS = ["duckdb", pytest.param("postgres", marks=pytest.mark.postgres)]


@attrs.frozen
class ConversationBackend:
    name: str
    open: Callable[[], AbstractAsyncContextManager[Backend]]
    sql: ConversationSQL

    def conversations(self, store: Backend, **options: Any) -> Conversations:
        return Conversations(store, sql=self.sql, **options)


def make_backend(request: pytest.FixtureRequest) -> ConversationBackend:
    if request.param == "duckdb":
        path = request.getfixturevalue("tmp_path") / "db.duckdb"
        return ConversationBackend(
            "duckdb",
            lambda: open_store(path, migrations=CONVERSATION_MIGRATIONS),
            DUCKDB_CONVERSATION_SQL,
        )
    url: str = request.getfixturevalue("postgres_url")
    return ConversationBackend(
        "postgres",
        lambda: open_postgres_store(url, migrations=CONVERSATION_POSTGRES_MIGRATIONS),
        POSTGRES_CONVERSATION_SQL,
    )
