"""The PostgreSQL store against a real PostgreSQL 18 with pgvector (tests/postgres.py).

Thread-backed (psycopg runs in worker threads), so these tests run on the real clock with
generous caps (STYLE 16).
"""

from __future__ import annotations

import functools
import random
import time

import psycopg
import psycopg.errors
import pytest
import trio
from postgres import load_postgres_tool
from psycopg import sql
from psycopg_pool import ConnectionPool

from caxton.errors import ServiceUnavailable, StartupError
from caxton.memory import postgres_sql
from caxton.store import Migration
from caxton.store.errors import (
    PostgresAuthFailed,
    PostgresDatabaseMissing,
    PostgresMigrationError,
    PostgresStoreClosed,
    PostgresUnreachable,
    StorageUnavailable,
    VectorExtensionMissing,
)
from caxton.store.migrations import plan
from caxton.store.postgres import PostgresStore, open_postgres_store, redact

NOTES = (
    Migration(
        feature="notes",
        version=1,
        description="notes table",
        statements=(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT NOT NULL)",
            # a second run of this migration would fail on the primary key
            "INSERT INTO notes VALUES (0, 'created by the migration')",
        ),
    ),
    Migration(
        feature="notes",
        version=2,
        description="slow step, so that a second instance waits on the lock",
        statements=("ALTER TABLE notes ADD COLUMN tag TEXT", "SELECT pg_sleep(0.3)"),
    ),
)

DIMENSIONS = 384
ITEMS = (
    Migration(
        feature="items",
        version=1,
        description="embeddings with an HNSW index",
        statements=(
            f"CREATE TABLE items (id INTEGER PRIMARY KEY, embedding vector({DIMENSIONS}) NOT NULL)",
            "CREATE INDEX items_embedding_hnsw ON items USING hnsw (embedding vector_cosine_ops)",
        ),
    ),
)


def with_credentials(url: str, *, user: str | None = None, password: str | None = None) -> str:
    parts = psycopg.conninfo.conninfo_to_dict(url)
    if user is not None:
        parts["user"] = user
    if password is not None:
        parts["password"] = password
    return psycopg.conninfo.make_conninfo(**{k: str(v) for k, v in parts.items()})


async def test_starts_migrates_serves_and_closes(postgres_url: str) -> None:
    with trio.fail_after(30):
        async with open_postgres_store(postgres_url, migrations=NOTES) as store:
            stats = store.statistics()
            assert stats.open
            assert stats.server_version is not None
            assert stats.server_version.startswith("18")
            assert stats.vector_version == "0.8.6"
            assert stats.schema_versions == {"notes": 2}
            assert "password" not in stats.database

            def add(conn: psycopg.Connection) -> int:
                conn.execute("INSERT INTO notes (id, body) VALUES (1, 'one'), (2, 'two')")
                row = conn.execute("SELECT count(*) FROM notes").fetchone()
                assert row is not None
                return int(row[0])

            assert await store.execute_write_fn(add) == 3

            def bodies(conn: psycopg.Connection) -> list[str]:
                return [r[0] for r in conn.execute("SELECT body FROM notes ORDER BY id")]

            assert await store.execute_fn(bodies) == ["created by the migration", "one", "two"]
            assert store.statistics().writes_total == 1
            assert store.statistics().reads_total == 1
        with pytest.raises(PostgresStoreClosed):
            await store.execute_fn(bodies)
        assert not store.statistics().open


async def test_a_failed_write_rolls_back_and_reads_cannot_write(postgres_url: str) -> None:
    with trio.fail_after(30):
        async with open_postgres_store(postgres_url, migrations=NOTES) as store:

            def add_then_fail(conn: psycopg.Connection) -> None:
                conn.execute("INSERT INTO notes (id, body) VALUES (5, 'lost')")
                raise ValueError("changed my mind")

            with pytest.raises(ValueError, match="changed my mind"):
                await store.execute_write_fn(add_then_fail)
            assert store.statistics().write_errors_total == 1

            def write_in_a_read(conn: psycopg.Connection) -> None:
                conn.execute("INSERT INTO notes (id, body) VALUES (6, 'refused')")

            with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
                await store.execute_fn(write_in_a_read)

            def count(conn: psycopg.Connection) -> int:
                row = conn.execute("SELECT count(*) FROM notes").fetchone()
                assert row is not None
                return int(row[0])

            assert await store.execute_fn(count) == 1


async def test_a_single_read_statement_runs_outside_a_transaction(postgres_url: str) -> None:
    """``read_statements`` of one fn: autocommit, so no BEGIN and COMMIT round trips (a read
    through ``execute_fn`` keeps its read-only transaction)."""

    def status(conn: psycopg.Connection) -> psycopg.pq.TransactionStatus:
        conn.execute("SELECT 1").fetchone()
        return conn.info.transaction_status

    with trio.fail_after(30):
        async with open_postgres_store(postgres_url, migrations=NOTES) as store:
            assert await store.read_statements([status]) == [psycopg.pq.TransactionStatus.IDLE]
            assert await store.execute_fn(status) == psycopg.pq.TransactionStatus.INTRANS
            assert await store.read_statements([status, status]) is None
            assert store.statistics().reads_total == 2


async def test_the_hnsw_settings_stay_on_a_session_only_outside_a_transaction(
    postgres_url: str,
) -> None:
    """A search outside a transaction sets ``hnsw.ef_search`` for the connection's session
    once (the next search with the same value sends nothing); inside one, for it alone."""

    def show(conn: psycopg.Connection) -> str:
        row = conn.execute("SHOW hnsw.ef_search").fetchone()
        assert row is not None
        return str(row[0])

    def set_then_show(ef_search: int, conn: psycopg.Connection) -> str:
        postgres_sql._set_ef_search(conn, ef_search)
        return show(conn)

    with trio.fail_after(30):
        # one connection, so that every call below finds the session the one before left
        async with open_postgres_store(postgres_url, migrations=ITEMS, pool_size=1) as store:
            single = store.read_statements
            assert await single([functools.partial(set_then_show, 123)]) == ["123"]
            assert await single([show]) == ["123"]
            assert await store.execute_fn(functools.partial(set_then_show, 77)) == "77"
            assert await single([show]) == ["123"]  # the transaction's own value went with it
            # Remembered per connection: the same value again sends nothing (the session's
            # value, changed behind the memo's back, stays), another value is set.
            await single([lambda conn: conn.execute("SET hnsw.ef_search = 50")])
            assert await single([functools.partial(set_then_show, 123)]) == ["50"]
            assert await single([functools.partial(set_then_show, 200)]) == ["200"]


async def test_two_instances_starting_together_migrate_once(postgres_url: str) -> None:
    stores = [PostgresStore(postgres_url, migrations=NOTES) for _ in range(2)]
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            for store in stores:
                nursery.start_soon(nursery.start, store.run)
            while not all(store.statistics().open for store in stores):
                await trio.sleep(0.01)

            def applied(conn: psycopg.Connection) -> list[tuple[str, int]]:
                rows = conn.execute("SELECT feature, version FROM schema_migrations ORDER BY 2")
                return [(str(r[0]), int(r[1])) for r in rows]

            assert await stores[1].execute_fn(applied) == [("notes", 1), ("notes", 2)]
            assert [store.statistics().schema_versions for store in stores] == [{"notes": 2}] * 2
            nursery.cancel_scope.cancel()


async def test_hnsw_cosine_round_trip(postgres_url: str) -> None:
    rng = random.Random(15)
    vectors = [[rng.gauss(0, 1) for _ in range(DIMENSIONS)] for _ in range(300)]

    def literal(vector: list[float]) -> str:
        return "[" + ",".join(f"{x:.6f}" for x in vector) + "]"

    with trio.fail_after(60):
        async with open_postgres_store(postgres_url, migrations=ITEMS) as store:

            def insert(conn: psycopg.Connection) -> None:
                with conn.cursor() as cursor:
                    cursor.executemany(
                        "INSERT INTO items (id, embedding) VALUES (%s, %s::vector)",
                        [(i, literal(v)) for i, v in enumerate(vectors)],
                    )

            await store.execute_write_fn(insert)
            # a query close to item 17 (in angle): the index must find 17 first
            query = literal([x * 3 + rng.gauss(0, 0.05) for x in vectors[17]])

            def search(conn: psycopg.Connection) -> tuple[list[tuple[int, float]], str]:
                conn.execute("SET LOCAL hnsw.ef_search = 100")
                conn.execute("SET LOCAL enable_seqscan = off")
                statement = (
                    "SELECT id, embedding <=> %(q)s::vector AS distance FROM items "
                    "ORDER BY embedding <=> %(q)s::vector LIMIT 5"
                )
                plan = "\n".join(
                    str(r[0]) for r in conn.execute("EXPLAIN " + statement, {"q": query})
                )
                rows = conn.execute(statement, {"q": query}).fetchall()
                return [(int(r[0]), float(r[1])) for r in rows], plan

            found, plan = await store.execute_fn(search)
            assert "items_embedding_hnsw" in plan
            assert found[0][0] == 17
            assert found[0][1] < 0.01
            assert [d for _, d in found] == sorted(d for _, d in found)


async def test_unreachable_server_fails_within_the_connect_timeout() -> None:
    port = load_postgres_tool().free_port()
    url = f"postgresql://caxton:secret-password@127.0.0.1:{port}/caxton"
    started = time.monotonic()
    with trio.fail_after(10), pytest.raises(PostgresUnreachable) as caught:
        async with open_postgres_store(url, connect_timeout_s=2):
            pass
    assert time.monotonic() - started < 3
    assert isinstance(caught.value, StartupError)
    message = caught.value.message
    assert f"127.0.0.1:{port}/caxton" in message
    assert "storage.postgres.url" in message
    assert "secret-password" not in message


async def test_wrong_password_is_named(postgres_url: str) -> None:
    url = with_credentials(postgres_url, password="not-the-password")
    with trio.fail_after(10), pytest.raises(PostgresAuthFailed) as caught:
        async with open_postgres_store(url):
            pass
    assert "password" in caught.value.message
    assert "not-the-password" not in caught.value.message
    assert caught.value.code == "POSTGRES_AUTH_FAILED"


async def test_missing_database_is_named(postgres_url: str) -> None:
    url = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    with trio.fail_after(10), pytest.raises(PostgresDatabaseMissing, match="CREATE DATABASE"):
        async with open_postgres_store(url):
            pass


async def test_a_database_without_vector_that_the_user_may_not_create(postgres_url: str) -> None:
    role = f"plain_{random.randrange(10**9)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP EXTENSION vector")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'plain-password'").format(sql.Identifier(role))
        )
    url = with_credentials(postgres_url, user=role, password="plain-password")
    with trio.fail_after(10), pytest.raises(VectorExtensionMissing) as caught:
        async with open_postgres_store(url):
            pass
    assert "CREATE EXTENSION vector" in caught.value.message
    assert role in caught.value.message


async def test_the_store_creates_vector_when_it_may(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP EXTENSION vector")
    with trio.fail_after(30):
        async with open_postgres_store(postgres_url) as store:
            assert store.statistics().vector_version == "0.8.6"


async def test_a_failing_migration_applies_nothing(postgres_url: str) -> None:
    broken = (
        Migration(
            feature="broken",
            version=1,
            description="second statement fails",
            statements=("CREATE TABLE half (id INTEGER)", "SELECT no_such_function()"),
        ),
    )
    with trio.fail_after(30), pytest.raises(PostgresMigrationError, match="broken v1"):
        async with open_postgres_store(postgres_url, migrations=broken):
            pass
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)


async def test_a_database_newer_than_this_build_is_refused(postgres_url: str) -> None:
    with trio.fail_after(30):
        async with open_postgres_store(postgres_url, migrations=NOTES):
            pass
        with pytest.raises(PostgresMigrationError, match="upgrade Caxton"):
            async with open_postgres_store(postgres_url, migrations=NOTES[:1]):
                pass


async def test_a_statement_over_the_timeout_is_storage_unavailable(postgres_url: str) -> None:
    store = PostgresStore(postgres_url, statement_timeout_s=0.2)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)

            def slow(conn: psycopg.Connection) -> None:
                conn.execute("SELECT pg_sleep(2)")

            with pytest.raises(StorageUnavailable) as caught:
                await store.execute_fn(slow)
            assert isinstance(caught.value, ServiceUnavailable)
            assert caught.value.code == "STORAGE_UNAVAILABLE"
            assert caught.value.http_status == 503
            # the connection is fine afterwards
            assert await store.execute_fn(lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)
            nursery.cancel_scope.cancel()


def kill_caxton_connections(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'caxton'"
        )


async def test_killed_connections_are_replaced(postgres_url: str) -> None:
    """A read right after its connection was used is not checked first; found dead, it runs
    again on another. A write's connection is checked before it starts."""
    with trio.fail_after(30):
        async with open_postgres_store(postgres_url, migrations=NOTES, pool_size=2) as store:
            assert await store.execute_fn(lambda conn: conn.execute("SELECT 1").fetchone()) == (1,)
            kill_caxton_connections(postgres_url)
            assert await store.execute_fn(lambda conn: conn.execute("SELECT 2").fetchone()) == (2,)
            kill_caxton_connections(postgres_url)
            assert await store.read_statements([select_one]) == [(1,)]
            kill_caxton_connections(postgres_url)
            await store.execute_write_fn(
                lambda conn: conn.execute("INSERT INTO notes (id, body) VALUES (9, 'kept')")
            )
            assert await store.execute_fn(
                lambda conn: conn.execute("SELECT body FROM notes WHERE id = 9").fetchone()
            ) == ("kept",)
            assert store.statistics().unavailable_total == 0


async def test_only_a_plain_write_checks_its_connection_first(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check is a round trip of its own: reads (however long the connection was idle) and
    idempotent writes go without it, since they may run again on another connection; a
    plain write, which must not run twice, is checked."""
    checked: list[object] = []
    check = ConnectionPool.check_connection

    def counting_check(conn: psycopg.Connection) -> None:
        checked.append(conn)
        check(conn)

    def insert(conn: psycopg.Connection) -> psycopg.pq.TransactionStatus:
        conn.execute(
            "INSERT INTO notes (id, body) VALUES (7, 'seven') "
            "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body"
        )
        return conn.info.transaction_status

    with trio.fail_after(30):
        async with open_postgres_store(postgres_url, migrations=NOTES, pool_size=2) as store:
            monkeypatch.setattr(ConnectionPool, "check_connection", counting_check)
            await trio.sleep(1.2)  # idle for longer than any "recently used" window
            assert await store.read_statements([select_one]) == [(1,)]
            assert await store.execute_fn(select_one) == (1,)
            await store.ping()
            # outside a transaction: the upsert committed on its own
            assert await store.idempotent_write(insert) == psycopg.pq.TransactionStatus.IDLE
            assert checked == []
            await store.execute_write_fn(insert)
            assert len(checked) == 1
            assert store.statistics().writes_total == 2


async def test_an_idempotent_write_runs_again_when_its_connection_died(postgres_url: str) -> None:
    runs: list[int] = []

    def upsert(conn: psycopg.Connection) -> None:
        runs.append(conn.info.backend_pid)
        conn.execute(
            "INSERT INTO notes (id, body) VALUES (8, 'eight') "
            "ON CONFLICT (id) DO UPDATE SET body = EXCLUDED.body"
        )

    with trio.fail_after(30):
        async with open_postgres_store(postgres_url, migrations=NOTES, pool_size=2) as store:
            await store.idempotent_write(upsert)
            kill_caxton_connections(postgres_url)
            await store.idempotent_write(upsert)
            assert await store.execute_fn(
                lambda conn: conn.execute("SELECT body FROM notes WHERE id = 8").fetchone()
            ) == ("eight",)
            # the second write found its connection dead and ran again on a new one
            assert len(runs) >= 3
            assert runs[-1] not in runs[:-1]
            stats = store.statistics()
            assert (stats.unavailable_total, stats.write_errors_total) == (0, 0)


def test_redact_drops_the_password() -> None:
    assert (
        redact("postgresql://u:pw@db.example:6432/caxton")
        == "postgresql://u@db.example:6432/caxton"
    )
    assert "pw" not in redact("host=h port=1 user=u password=pw dbname=d")


def select_one(conn: psycopg.Connection) -> object:
    return conn.execute("SELECT 1").fetchone()


@pytest.mark.postgres
@pytest.mark.slow
async def test_postgres_down_is_unavailable_then_recovers(own_postgres: object) -> None:
    tool = load_postgres_tool()
    directory = own_postgres.directory  # type: ignore[attr-defined]
    url: str = own_postgres.url  # type: ignore[attr-defined]

    with trio.fail_after(60):
        async with open_postgres_store(url, migrations=NOTES, connect_timeout_s=1) as store:
            assert await store.execute_fn(select_one) == (1,)
            await trio.to_thread.run_sync(tool.stop, directory)
            started = time.monotonic()
            with pytest.raises(StorageUnavailable):
                await store.execute_fn(select_one)
            assert time.monotonic() - started < 3  # the first finds out within the timeout
            for _ in range(20):  # the next ones at once, not a connect timeout each
                started = time.monotonic()
                with pytest.raises(StorageUnavailable, match="trying again every 1 s"):
                    await store.execute_write_fn(select_one)
                assert time.monotonic() - started < 0.5
            await trio.to_thread.run_sync(functools.partial(tool.start, directory, fsync=False))
            started = time.monotonic()
            while True:
                try:
                    assert await store.execute_fn(select_one) == (1,)
                    break
                except StorageUnavailable:
                    await trio.sleep(0.1)
            recovered_s = time.monotonic() - started
            assert recovered_s < 10
            assert store.statistics().unavailable_total >= 21


def test_plan_orders_and_checks_series_as_the_duckdb_store_does() -> None:
    assert plan(NOTES, {}) == list(NOTES)
    assert plan(NOTES, {"notes": 1}) == [NOTES[1]]
    assert plan((*ITEMS, *NOTES), {"notes": 2}) == list(ITEMS)
    with pytest.raises(ValueError, match=r"numbered 1\.\.1"):
        plan(NOTES[1:], {})
    with pytest.raises(ValueError, match="upgrade Caxton"):
        plan(NOTES[:1], {"notes": 2})


@pytest.mark.slow
async def test_an_outage_is_known_within_a_second_whatever_the_connect_timeout(
    own_postgres: object,
) -> None:
    """The pool waits its whole timeout for a connection it cannot make, and after an outage
    it reconnects only at its backoff's next attempt: calls connect on their own instead, so a
    refusal comes within about a second and a server that is back serves them at once."""
    tool = load_postgres_tool()
    directory = own_postgres.directory  # type: ignore[attr-defined]
    url: str = own_postgres.url  # type: ignore[attr-defined]

    with trio.fail_after(90):
        async with open_postgres_store(url, migrations=NOTES, connect_timeout_s=5) as store:
            assert await store.execute_fn(select_one) == (1,)
            await trio.to_thread.run_sync(tool.stop, directory)
            down = time.monotonic()
            while time.monotonic() - down < 6:  # past the connect timeout, probes included
                started = time.monotonic()
                with pytest.raises(StorageUnavailable):
                    await store.execute_write_fn(select_one)
                assert time.monotonic() - started < 1.8
                await trio.sleep(0.2)
            await trio.to_thread.run_sync(functools.partial(tool.start, directory, fsync=False))
            started = time.monotonic()
            while True:
                try:
                    assert await store.execute_fn(select_one) == (1,)
                    break
                except StorageUnavailable:
                    await trio.sleep(0.1)
            assert time.monotonic() - started < 2.5  # the next probe, not the pool's backoff
            for _ in range(10):  # and every call after it, pooled or not
                started = time.monotonic()
                assert await store.execute_fn(select_one) == (1,)
                assert time.monotonic() - started < 1.5
