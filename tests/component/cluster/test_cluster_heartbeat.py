"""Heartbeats against a real PostgreSQL (tests/postgres.py) and on the embedded store.

Thread-backed (psycopg and DuckDB run in worker threads), so these run on the real clock with
generous caps (STYLE 16) and small intervals.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import psycopg
import pytest
import trio
from psycopg_pool import ConnectionPool

from caxton.cluster import CLUSTER_POSTGRES_MIGRATIONS, Heartbeat
from caxton.components import running
from caxton.errors import StartupError
from caxton.store import open_store
from caxton.store.postgres import PostgresStore, open_postgres_store

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.store.backend import Backend

INTERVAL_S = 0.2


def heartbeat(store: Backend, instance_id: str, **extra: Any) -> Heartbeat:
    return Heartbeat(
        store,
        instance_id=instance_id,
        address=f"http://{instance_id}.example:8080",
        version="0.1.0",
        agents_fn=lambda: 2,
        interval_s=INTERVAL_S,
        **extra,
    )


def rows(url: str) -> dict[str, tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT id, agents, started_at, last_heartbeat FROM cluster_instances")
        return {str(row[0]): tuple(row[1:]) for row in found}


async def test_two_instances_see_each_other_and_a_clean_stop_leaves_at_once(
    postgres_url: str,
) -> None:
    with trio.fail_after(30):
        async with (
            open_postgres_store(postgres_url, migrations=CLUSTER_POSTGRES_MIGRATIONS) as one,
            open_postgres_store(postgres_url, migrations=CLUSTER_POSTGRES_MIGRATIONS) as two,
            trio.open_nursery() as nursery,
        ):
            a = await nursery.start(heartbeat(one, "a").run)
            assert a.backend == "postgres"
            async with trio.open_nursery() as b_nursery:
                b = await b_nursery.start(heartbeat(two, "b").run)
                seen_by_a = await a.live_instances()
                seen_by_b = await b.live_instances()
                assert [i.id for i in seen_by_a] == ["a", "b"]  # oldest first
                assert [i.is_self for i in seen_by_a] == [True, False]
                assert [i.is_self for i in seen_by_b] == [False, True]
                first = seen_by_a[1]
                assert first.address == "http://b.example:8080"
                assert first.agents == 2
                assert first.version == "0.1.0"
                assert first.started_at.utcoffset() is not None
                # beats refresh last_heartbeat, started_at stays
                await trio.sleep(INTERVAL_S * 2.5)
                again = {i.id: i for i in await a.live_instances()}["b"]
                assert again.started_at == first.started_at
                assert again.last_heartbeat > first.last_heartbeat
                assert b.statistics().beats_total >= 2
                b_nursery.cancel_scope.cancel()
            # a clean shutdown deletes the row: gone at once, not after three intervals
            assert [i.id for i in await a.live_instances()] == ["a"]
            assert set(rows(postgres_url)) == {"a"}
            nursery.cancel_scope.cancel()
    assert rows(postgres_url) == {}


async def test_beats_skip_the_connection_check_and_survive_killed_connections(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A beat is its statements alone (no check, no BEGIN and COMMIT: issue #21's idle cost);
    one that finds its connection dead runs again on another, so no beat is lost."""
    checks: list[object] = []
    monkeypatch.setattr(ConnectionPool, "check_connection", checks.append)
    with trio.fail_after(30):
        async with (
            open_postgres_store(postgres_url, migrations=CLUSTER_POSTGRES_MIGRATIONS) as store,
            trio.open_nursery() as nursery,
        ):
            beating = await nursery.start(heartbeat(store, "a").run)
            await trio.sleep(INTERVAL_S * 2.5)
            with psycopg.connect(postgres_url, autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = 'caxton'"
                )
            before = beating.statistics().beats_total
            await trio.sleep(INTERVAL_S * 2.5)
            stats = beating.statistics()
            assert stats.beats_total >= before + 2
            assert stats.beat_errors_total == 0
            assert checks == []
            nursery.cancel_scope.cancel()
    assert rows(postgres_url) == {}  # the clean stop's delete went the same way


async def test_an_instance_that_stops_beating_drops_out_after_three_intervals(
    postgres_url: str,
) -> None:
    with trio.fail_after(30):
        async with (
            open_postgres_store(postgres_url, migrations=CLUSTER_POSTGRES_MIGRATIONS) as store,
            trio.open_nursery() as nursery,
        ):
            a = await nursery.start(heartbeat(store, "a").run)
            async with trio.open_nursery() as crashing:
                await crashing.start(heartbeat(store, "crashed", clean_shutdown=False).run)
                assert {i.id for i in await a.live_instances()} == {"a", "crashed"}
                crashing.cancel_scope.cancel()
            stopped = time.monotonic()
            assert set(rows(postgres_url)) == {"a", "crashed"}  # no goodbye
            while "crashed" in {i.id for i in await a.live_instances()}:
                await trio.sleep(0.05)
            gone_after = time.monotonic() - stopped
            # its last beat was at most one interval before it stopped
            assert 3 * INTERVAL_S - INTERVAL_S - 0.1 <= gone_after <= 3 * INTERVAL_S + 1.0
            assert [i.id for i in await a.live_instances()] == ["a"]
            nursery.cancel_scope.cancel()


async def test_a_heartbeat_outlives_postgres_being_unavailable(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Beats that fail are logged once and do not stop the server; the next beat succeeds."""
    store = PostgresStore(
        postgres_url, migrations=CLUSTER_POSTGRES_MIGRATIONS, statement_timeout_s=0.3
    )
    with trio.fail_after(30):
        async with running(store.run), trio.open_nursery() as nursery:
            beat = heartbeat(store, "a")
            await nursery.start(beat.run)
            with psycopg.connect(postgres_url) as admin:
                # beats wait on the lock until the statement timeout cancels them
                admin.execute("LOCK TABLE cluster_instances IN ACCESS EXCLUSIVE MODE")
                await trio.sleep(1.5)
                admin.rollback()
            failing = beat.statistics()
            assert failing.beat_errors_total >= 2
            assert failing.failing_since is not None
            while beat.statistics().failing_since is not None:
                await trio.sleep(0.05)
            assert beat.statistics().beats_total > failing.beats_total
            warnings = [r for r in caplog.records if "heartbeat failed" in r.getMessage()]
            assert len(warnings) == 1
            nursery.cancel_scope.cancel()


async def test_the_embedded_cluster_is_this_instance_alone(tmp_path: Path) -> None:
    with trio.fail_after(30):
        async with open_store(tmp_path / "caxton.duckdb") as store, trio.open_nursery() as nursery:
            beat = await nursery.start(heartbeat(store, "solo").run)
            assert beat.backend == "embedded"
            (only,) = await beat.live_instances()
            assert only.to_json().keys() == {
                "id",
                "address",
                "version",
                "agents",
                "started_at",
                "last_heartbeat",
                "self",
            }
            assert only.id == "solo"
            assert only.is_self
            assert only.agents == 2
            assert only.started_at <= only.last_heartbeat
            assert beat.statistics().beats_total == 0  # nothing written

            def tables(conn: Any) -> list[str]:
                found = conn.execute("SELECT table_name FROM information_schema.tables")
                return [str(row[0]) for row in found.fetchall()]

            assert "cluster_instances" not in await store.execute_fn(tables)
            nursery.cancel_scope.cancel()


async def test_a_store_without_the_cluster_table_is_named_at_start(postgres_url: str) -> None:
    with trio.fail_after(30):
        async with open_postgres_store(postgres_url) as store:
            with pytest.raises(StartupError, match="CLUSTER_POSTGRES_MIGRATIONS"):
                async with running(heartbeat(store, "a").run):
                    pass
