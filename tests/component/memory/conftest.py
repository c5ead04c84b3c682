"""Fixtures for the memory component: the real model, real DuckDB files in tmp_path, and a real
PostgreSQL (tests/postgres.py) for the contract tests that run on both backends.

The model folder is assembled once per session (a plain sync fixture); each test loads it into
its own embedder, which takes well under a second.

``backend`` is parametrized over "duckdb", "postgres", "qdrant" (qdrant-client's local mode in
tmp_path) and "qdrant-server" (a real Qdrant at ``QDRANT_URL``, skipped when it is unset): a
:class:`MemoryBackend` whose ``start_store`` starts a store of that dialect, migrated for
memory, and whose ``memory`` builds the service with that dialect's SQL. Test modules that run
on each say so by overriding ``memory`` with ``backend_memory``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
import psycopg
import pytest
from postgres import TEMPLATE
from psycopg import sql as pgsql

from caxton.memory import (
    MEMORY_MIGRATIONS,
    MEMORY_POSTGRES_MIGRATIONS,
    Embedder,
    MemoryService,
    MemorySQL,
    assemble_default_model,
    postgres_sql,
    qdrant_memory,
    queries,
)
from caxton.store import Store
from caxton.store.backend import Backend
from caxton.store.postgres import PostgresStore
from caxton.store.qdrant import RELATIONS_SUFFIX, QdrantStore

if TYPE_CHECKING:
    import trio

    from caxton.memory.embedder import TextEncoder

BACKENDS = [
    "duckdb",
    pytest.param("postgres", marks=pytest.mark.postgres),
    "qdrant",
    "qdrant-server",
]

#: A real Qdrant server for the "qdrant-server" runs of the contract tests (issue #16); none can
#: be installed on the machines these tests were written on, so they skip without it.
QDRANT_URL = os.environ.get("QDRANT_URL")


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return assemble_default_model(tmp_path_factory.mktemp("models") / "all-MiniLM-L6-v2")


@pytest.fixture
async def embedder(nursery, model_dir):
    return await nursery.start(Embedder(cache_dir=model_dir, batch_size=32, cache_size=512).run)


@pytest.fixture
async def store(nursery, tmp_path):
    return await nursery.start(Store(tmp_path / "caxton.duckdb", migrations=MEMORY_MIGRATIONS).run)


@pytest.fixture
async def memory(nursery, store, embedder):
    return await nursery.start(MemoryService(store, embedder, max_entities=1000).run)


@attrs.frozen
class MemoryBackend:
    """One dialect for a test: where its databases are, and its memory SQL.

    Attributes:
        name: "duckdb", "postgres", "qdrant" (local mode) or "qdrant-server".
        sql: the dialect's memory SQL module.
        make_store: a (not yet running) store on the database ``name`` (None: the test's
            main database); the same name is the same database.
    """

    name: str
    sql: MemorySQL
    make_store: Callable[[str | None], Backend]

    async def start_store(self, nursery: trio.Nursery, database: str | None = None) -> Backend:
        """Start a store on ``database`` in ``nursery`` (stopped when the test ends)."""
        store = self.make_store(database)
        result: Backend = await nursery.start(store.run)  # type: ignore[attr-defined]
        return result

    async def start_memory(
        self,
        nursery: trio.Nursery,
        embedder: TextEncoder,
        database: str | None = None,
        **options: Any,
    ) -> MemoryService:
        """A running service over a new store on ``database``."""
        store = await self.start_store(nursery, database)
        service: MemoryService = await nursery.start(
            MemoryService(store, embedder, sql=self.sql, **options).run
        )
        return service


def _duckdb_backend(request: pytest.FixtureRequest) -> MemoryBackend:
    tmp_path = request.getfixturevalue("tmp_path")

    def make(database: str | None) -> Backend:
        return Store(tmp_path / f"{database or 'caxton'}.duckdb", migrations=MEMORY_MIGRATIONS)

    return MemoryBackend("duckdb", queries, make)


def _postgres_backend(request: pytest.FixtureRequest) -> MemoryBackend:
    main_url: str = request.getfixturevalue("postgres_url")
    server = request.getfixturevalue("postgres_server")
    main = psycopg.conninfo.conninfo_to_dict(main_url)["dbname"]
    created: dict[str, str] = {}

    def url_for(database: str | None) -> str:
        if database is None:
            return main_url
        if database not in created:
            name = f"{main}_{database}"
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute(
                    pgsql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                        pgsql.Identifier(name), pgsql.Identifier(TEMPLATE)
                    )
                )
            created[database] = server.url_for(name)
        return created[database]

    def drop() -> None:
        with psycopg.connect(server.url, autocommit=True) as conn:
            for database in created:
                conn.execute(
                    pgsql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                        pgsql.Identifier(f"{main}_{database}")
                    )
                )

    request.addfinalizer(drop)

    def make(database: str | None) -> Backend:
        return PostgresStore(url_for(database), migrations=MEMORY_POSTGRES_MIGRATIONS)

    return MemoryBackend("postgres", postgres_sql, make)


def _qdrant_local_backend(request: pytest.FixtureRequest) -> MemoryBackend:
    tmp_path = request.getfixturevalue("tmp_path")

    def make(database: str | None) -> Backend:
        return QdrantStore(path=tmp_path / f"qdrant-{database or 'caxton'}")

    return MemoryBackend("qdrant", qdrant_memory, make)


def _qdrant_server_backend(request: pytest.FixtureRequest) -> MemoryBackend:
    if not QDRANT_URL:
        pytest.skip("no Qdrant server: set QDRANT_URL to run the contract tests against one")
    url = QDRANT_URL
    api_key = os.environ.get("QDRANT_API_KEY")
    prefix = f"caxton-test-{uuid.uuid4().hex[:12]}"
    collections: set[str] = set()

    def drop() -> None:
        from qdrant_client import QdrantClient

        client = QdrantClient(url=url, api_key=api_key, check_compatibility=False)
        try:
            for name in collections:
                for collection in (name, name + RELATIONS_SUFFIX):
                    client.delete_collection(collection)
        finally:
            client.close()

    request.addfinalizer(drop)

    def make(database: str | None) -> Backend:
        name = f"{prefix}-{database or 'main'}"
        collections.add(name)
        return QdrantStore(url=url, api_key=api_key, collection=name)

    return MemoryBackend("qdrant-server", qdrant_memory, make)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> MemoryBackend:
    """A dialect to run the test on (see :class:`MemoryBackend`)."""
    if request.param == "duckdb":
        return _duckdb_backend(request)
    if request.param == "qdrant":
        return _qdrant_local_backend(request)
    if request.param == "qdrant-server":
        return _qdrant_server_backend(request)
    return _postgres_backend(request)


@pytest.fixture
async def backend_memory(nursery, backend, embedder):
    """The service of ``memory`` (``max_entities=1000``) on the parametrized backend."""
    return await backend.start_memory(nursery, embedder, max_entities=1000)
