"""The store component against real DuckDB files in tmp_path.

Thread-backed (DuckDB runs in worker threads), so these tests run on the real clock with
generous caps (STYLE 16).
"""

from __future__ import annotations

import functools
import subprocess
import sys
import textwrap
import threading

import duckdb
import pytest
import trio
import trio.testing

from caxton.errors import DataDirLockedError, StartupError
from caxton.ops.verify import check_database
from caxton.store import (
    Migration,
    MigrationError,
    Store,
    StoreClosed,
    StoreLockedError,
    StoreOpenError,
    open_store,
)
from caxton.store.migrations import plan

NOTES_V1 = Migration(
    feature="notes",
    version=1,
    description="notes table",
    statements=("CREATE TABLE notes (id INTEGER PRIMARY KEY, body VARCHAR NOT NULL)",),
)
NOTES_V2 = Migration(
    feature="notes",
    version=2,
    description="notes.tag",
    statements=("ALTER TABLE notes ADD COLUMN tag VARCHAR",),
)
TAGS_V1 = Migration(
    feature="tags",
    version=1,
    description="tags table",
    statements=("CREATE TABLE tags (name VARCHAR PRIMARY KEY)",),
)


def insert_note(note_id: int, body: str):
    def fn(conn: duckdb.DuckDBPyConnection) -> int:
        conn.execute("INSERT INTO notes (id, body) VALUES (?, ?)", [note_id, body])
        row = conn.execute("SELECT count(*) FROM notes").fetchone()
        assert row is not None
        return int(row[0])

    return fn


def count_notes(conn: duckdb.DuckDBPyConnection) -> int:
    row = conn.execute("SELECT count(*) FROM notes").fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.trio
async def test_migrations_apply_once_and_in_order(tmp_path):
    path = tmp_path / "caxton.duckdb"
    with trio.fail_after(20):
        async with open_store(path, migrations=[NOTES_V1, TAGS_V1]) as store:
            assert store.statistics().schema_versions == {"notes": 1, "tags": 1}
            await store.execute_write_fn(insert_note(1, "first"))
        # Reopen with a new migration: only v2 runs, data survives.
        async with open_store(path, migrations=[NOTES_V2, NOTES_V1, TAGS_V1]) as store:
            assert store.statistics().schema_versions == {"notes": 2, "tags": 1}
            rows = await store.execute_fn(
                lambda c: c.execute("SELECT id, body, tag FROM notes").fetchall()
            )
            assert rows == [(1, "first", None)]
            recorded = await store.execute_fn(
                lambda c: c.execute(
                    "SELECT feature, version FROM schema_migrations ORDER BY feature, version"
                ).fetchall()
            )
            assert recorded == [("notes", 1), ("notes", 2), ("tags", 1)]


def test_plan_refuses_gaps_and_newer_databases():
    with pytest.raises(ValueError, match=r"numbered 1\.\.1"):
        plan([NOTES_V2], {})
    with pytest.raises(ValueError, match="only knows versions up to 1"):
        plan([NOTES_V1], {"notes": 2})
    assert plan([NOTES_V1, NOTES_V2], {"notes": 1}) == [NOTES_V2]


@pytest.mark.trio
async def test_failing_migration_is_rolled_back_and_named(tmp_path):
    bad = Migration(
        feature="notes",
        version=2,
        description="broken",
        statements=("ALTER TABLE notes ADD COLUMN x INTEGER", "SELEC nonsense"),
    )
    path = tmp_path / "caxton.duckdb"
    with trio.fail_after(20):
        async with open_store(path, migrations=[NOTES_V1]):
            pass
        with pytest.raises(MigrationError, match="notes v2 \\(broken\\)") as info:
            async with open_store(path, migrations=[NOTES_V1, bad]):
                pass  # pragma: no cover
        assert isinstance(info.value, StartupError)
        async with open_store(path, migrations=[NOTES_V1]) as store:
            columns = await store.execute_fn(
                lambda c: [r[0] for r in c.execute("DESCRIBE notes").fetchall()]
            )
            assert columns == ["id", "body"]


@pytest.mark.trio
async def test_write_commits_before_returning_and_errors_roll_back(tmp_path):
    path = tmp_path / "caxton.duckdb"
    with trio.fail_after(20):
        async with open_store(path, migrations=[NOTES_V1]) as store:
            assert await store.execute_write_fn(insert_note(1, "a")) == 1

            def half_then_fail(conn: duckdb.DuckDBPyConnection) -> None:
                conn.execute("INSERT INTO notes VALUES (2, 'b')")
                raise KeyError("boom")

            with pytest.raises(KeyError, match="boom"):
                await store.execute_write_fn(half_then_fail)
            assert await store.execute_fn(count_notes) == 1
            stats = store.statistics()
            assert stats.writes_total == 2
            assert stats.write_errors_total == 1


@pytest.mark.trio
async def test_concurrent_writers_are_serialised(tmp_path):
    """Many tasks updating one row: the single writer means no DuckDB write conflict."""
    path = tmp_path / "caxton.duckdb"
    counter = Migration(
        feature="counter",
        version=1,
        description="counter",
        statements=("CREATE TABLE counter (n INTEGER)", "INSERT INTO counter VALUES (0)"),
    )

    def bump(conn: duckdb.DuckDBPyConnection) -> None:
        conn.execute("UPDATE counter SET n = n + 1")

    with trio.fail_after(30):
        async with open_store(path, migrations=[counter], readers=3) as store:
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(store.execute_write_fn, bump)
                for _ in range(20):
                    nursery.start_soon(
                        store.execute_fn, lambda c: c.execute("SELECT n FROM counter").fetchall()
                    )
            rows = await store.execute_fn(lambda c: c.execute("SELECT n FROM counter").fetchall())
            assert rows == [(40,)]


@pytest.mark.trio
async def test_data_survives_close_and_reopen(tmp_path):
    path = tmp_path / "caxton.duckdb"
    with trio.fail_after(20):
        async with open_store(path, migrations=[NOTES_V1]) as store:
            for i in range(5):
                await store.execute_write_fn(insert_note(i, f"note {i}"))
        # Checkpointed on close: no WAL is left behind.
        assert not (tmp_path / "caxton.duckdb.wal").exists()
        async with open_store(path, migrations=[NOTES_V1]) as store:
            assert await store.execute_fn(count_notes) == 5


def test_acknowledged_write_survives_a_killed_process(tmp_path):
    """A write that returned is on disk even if the process dies before any shutdown."""
    path = tmp_path / "caxton.duckdb"
    script = textwrap.dedent(
        f"""
        import os, trio
        from caxton.store import Migration, Store
        M = Migration(feature="notes", version=1, description="n",
                      statements=("CREATE TABLE notes (id INTEGER, body VARCHAR)",))
        async def main():
            store = Store({str(path)!r}, migrations=[M])
            async with trio.open_nursery() as n:
                await n.start(store.run)
                await store.execute_write_fn(
                    lambda c: c.execute("INSERT INTO notes VALUES (1, 'kept')"))
                os._exit(0)
        trio.run(main)
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    con = duckdb.connect(str(path))
    try:
        assert con.execute("SELECT body FROM notes").fetchall() == [("kept",)]
    finally:
        con.close()


@pytest.mark.trio
async def test_closed_store_refuses_calls_and_fails_queued_writes(tmp_path):
    path = tmp_path / "caxton.duckdb"
    store = Store(path, migrations=[NOTES_V1])
    with pytest.raises(StoreClosed):
        await store.execute_fn(count_notes)
    release = threading.Event()
    results: list[object] = []

    def slow(conn: duckdb.DuckDBPyConnection) -> str:
        release.wait(10)
        conn.execute("INSERT INTO notes VALUES (1, 'slow')")
        return "slow done"

    async def call(fn):
        try:
            results.append(await store.execute_write_fn(fn))
        except StoreClosed as exc:
            results.append(exc)

    with trio.fail_after(20):
        async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
            await nursery.start(store.run)
            outer.start_soon(call, slow)
            await trio.testing.wait_all_tasks_blocked()
            outer.start_soon(call, insert_note(2, "queued"))
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()
            release.set()
    # The running write finished and was reported; the queued one was refused.
    assert results[0] == "slow done"
    assert isinstance(results[1], StoreClosed)
    with pytest.raises(StoreClosed):
        await store.execute_write_fn(insert_note(3, "late"))
    with pytest.raises(RuntimeError, match="only be called once"):
        await store.run()
    async with open_store(path, migrations=[NOTES_V1]) as again:
        assert await again.execute_fn(count_notes) == 1


class _CancelAfterHandOff:
    """The store's send channel, cancelling ``scope`` in the same step as it hands a request
    to the waiting writer: the writer then resumes with the request but cancelled."""

    def __init__(self, channel, scope: trio.CancelScope) -> None:
        self.channel = channel
        self.scope = scope

    async def send(self, request) -> None:
        self.channel.send_nowait(request)  # the writer waits in receive: handed at once
        self.scope.cancel()
        await trio.sleep(0)  # noqa: ASYNC115 - a plain checkpoint, as the real send takes

    async def aclose(self) -> None:
        await self.channel.aclose()


@pytest.mark.trio
async def test_a_write_handed_over_as_the_store_stops_is_refused_not_lost(tmp_path):
    """The writer took the request from its queue, but the store was cancelled before the
    write reached the worker thread: the caller hears StoreClosed (once it waited forever, and
    a shielded caller, a conversation flush at shutdown, held the server's stop)."""
    store = Store(tmp_path / "caxton.duckdb", migrations=[NOTES_V1])
    results: list[object] = []
    with trio.fail_after(10):
        async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await trio.testing.wait_all_tasks_blocked()  # the writer waits in receive
            store._send = _CancelAfterHandOff(store._send, nursery.cancel_scope)

            async def call() -> None:
                try:
                    results.append(await store.execute_write_fn(insert_note(1, "late")))
                except StoreClosed as exc:
                    results.append(exc)

            outer.start_soon(call)
    assert len(results) == 1
    assert isinstance(results[0], StoreClosed)
    async with open_store(tmp_path / "caxton.duckdb", migrations=[NOTES_V1]) as again:
        assert await again.execute_fn(count_notes) == 0


def note_ids(conn: duckdb.DuckDBPyConnection) -> list[int]:
    return [int(row[0]) for row in conn.execute("SELECT id FROM notes ORDER BY id").fetchall()]


@pytest.mark.trio
async def test_statements_read_side_by_side_only_when_they_see_one_state(tmp_path):
    """read_statements: results in order when nothing wrote meanwhile; None when a write ran
    while they did (the caller then reads in one transaction), or when too few readers are
    free; a single read always answers; an error is raised as itself."""
    path = tmp_path / "caxton.duckdb"
    with trio.fail_after(30):
        async with open_store(path, migrations=[NOTES_V1], readers=3) as store:
            await store.execute_write_fn(insert_note(1, "a"))
            assert await store.read_statements([note_ids, count_notes]) == [[1], 1]
            assert await store.read_statements([count_notes]) == [1]

            # A write that commits while the first read is still running.
            reading, written = threading.Event(), threading.Event()

            def held_read(conn: duckdb.DuckDBPyConnection) -> list[int]:
                reading.set()
                assert written.wait(10)
                return note_ids(conn)

            async def write_meanwhile() -> None:
                await trio.to_thread.run_sync(reading.wait, 10)
                await store.execute_write_fn(insert_note(2, "b"))
                written.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_meanwhile)
                assert await store.read_statements([held_read, count_notes]) is None
            assert await store.read_statements([note_ids, count_notes]) == [[1, 2], 2]

            # Two of three readers busy: two statements are not run side by side.
            release = threading.Event()
            async with trio.open_nursery() as nursery:
                for _ in range(2):
                    nursery.start_soon(store.execute_fn, lambda c: release.wait(10))
                await trio.testing.wait_all_tasks_blocked()
                assert await store.read_statements([note_ids, count_notes]) is None
                assert await store.read_statements([count_notes]) == [2]
                release.set()

            def broken(conn: duckdb.DuckDBPyConnection) -> None:
                conn.execute("SELECT * FROM no_such_table")

            with pytest.raises(duckdb.CatalogException, match="no_such_table"):
                await store.read_statements([count_notes, broken])
    with pytest.raises(StoreClosed):
        await store.read_statements([count_notes])


@pytest.mark.trio
async def test_cancelled_queued_write_never_runs(tmp_path):
    path = tmp_path / "caxton.duckdb"
    release = threading.Event()
    with trio.fail_after(20):
        async with open_store(path, migrations=[NOTES_V1]) as store:

            def slow(conn: duckdb.DuckDBPyConnection) -> None:
                release.wait(10)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(store.execute_write_fn, slow)
                await trio.testing.wait_all_tasks_blocked()
                with trio.move_on_after(0.05) as scope:
                    await store.execute_write_fn(insert_note(1, "dropped"))
                assert scope.cancelled_caught
                release.set()
            await store.execute_write_fn(insert_note(2, "kept"))
            rows = await store.execute_fn(lambda c: c.execute("SELECT id FROM notes").fetchall())
            assert rows == [(2,)]


@pytest.mark.trio
async def test_not_a_database_is_a_startup_error(tmp_path):
    path = tmp_path / "caxton.duckdb"
    path.write_bytes(b"definitely not duckdb" * 500)
    with trio.fail_after(20), pytest.raises(StoreOpenError, match=r"caxton\.duckdb") as info:
        async with open_store(path):
            pass  # pragma: no cover
    assert "backup restore" in info.value.message


def test_file_held_by_another_process_is_reported(tmp_path):
    path = tmp_path / "caxton.duckdb"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import duckdb, sys; c = duckdb.connect({str(path)!r}); "
            "print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )

    async def attempt() -> None:
        with trio.fail_after(20):
            async with open_store(path):
                pass  # pragma: no cover

    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(StoreLockedError) as info:
            trio.run(attempt)
        assert isinstance(info.value, DataDirLockedError)
        assert "another process" in info.value.message
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=30)
        if holder.stdout is not None:
            holder.stdout.close()


@pytest.mark.trio
async def test_verify_reports_tables_and_missing_migrations(tmp_path):
    migrations = [NOTES_V1, TAGS_V1]
    path = tmp_path / "caxton.duckdb"
    with trio.fail_after(20):
        async with open_store(path, migrations=migrations) as store:
            await store.execute_write_fn(insert_note(1, "a"))
            tables, findings = await store.execute_fn(
                functools.partial(check_database, comprehensive=True, migrations=migrations)
            )
            assert findings == []
            assert tables["notes"] == 1
            assert tables["tags"] == 0
            assert store.statistics().schema_versions == {"notes": 1, "tags": 1}
            assert store.size_bytes() > 0

            await store.execute_write_fn(
                lambda c: c.execute("DELETE FROM schema_migrations WHERE feature = 'tags'")
            )
            _, findings = await store.execute_fn(
                functools.partial(check_database, comprehensive=False, migrations=migrations)
            )
            assert [(f.severity, f.message) for f in findings] == [
                ("error", "migration tags v1 (tags table) is not applied")
            ]
