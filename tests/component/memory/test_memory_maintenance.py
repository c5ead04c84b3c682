"""Scheduled memory maintenance over a real DuckDB file (real clock: the store uses threads).

Intervals are a fraction of a second; every wait is capped generously for a loaded machine.
"""

from __future__ import annotations

import functools
import logging

import pytest
import trio
from servers import loopback_config

from caxton.memory import MEMORY_MIGRATIONS, MemoryService
from caxton.memory.maintenance import MaintenanceSchedule, MemoryMaintenance, read_space
from caxton.metrics import Metrics
from caxton.server import serve
from caxton.store import open_store

pytestmark = pytest.mark.trio

CAP_S = 60


def runs(metrics: Metrics, kind: str, outcome: str) -> float:
    value = metrics.registry.get_sample_value(
        "caxton_memory_maintenance_runs_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


async def wait_for(condition, *, poll_s: float = 0.05) -> None:
    while not condition():
        await trio.sleep(poll_s)


async def make_dead_space(store) -> float:
    """Fill two tables, drop the first: its blocks become free space inside the file."""

    def fill(conn) -> None:
        for table in ("scratch_a", "scratch_b"):
            conn.execute(
                f"CREATE TABLE {table} AS SELECT md5(random()::VARCHAR) || "
                "md5(random()::VARCHAR) AS v FROM range(150000)"
            )

    await store.execute_write_fn(fill)
    await store.checkpoint()
    await store.execute_write_fn(lambda conn: conn.execute("DROP TABLE scratch_a"))
    await store.checkpoint()
    return (await store.execute_fn(read_space)).dead_fraction


async def test_analyze_and_vacuum_run_on_their_intervals(nursery, memory, caplog):
    caplog.set_level(logging.INFO, logger="caxton.memory.maintenance")
    metrics = Metrics()
    schedule = MaintenanceSchedule(
        analyze_interval_s=0.2, vacuum_interval_s=0.5, cleanup_threshold=0.0
    )
    maintenance = await nursery.start(MemoryMaintenance(memory, schedule, metrics=metrics).run)
    with trio.fail_after(CAP_S):
        await wait_for(
            lambda: (
                maintenance.statistics().compact_runs >= 2
                and maintenance.statistics().analyze_runs >= 4
            )
        )
    stats = maintenance.statistics()
    assert stats.failures == 0
    assert stats.skipped == 0
    assert runs(metrics, "analyze", "ok") == stats.analyze_runs
    assert runs(metrics, "compact", "ok") == stats.compact_runs
    # VACUUM runs on its own, slower clock: fewer compactions than ANALYZE runs
    assert stats.compact_runs < stats.analyze_runs
    assert "memory maintenance: ANALYZE in " in caplog.text
    assert "memory maintenance: checkpoint + VACUUM" in caplog.text
    assert "(vacuum_interval;" in caplog.text


async def test_dead_space_over_the_threshold_compacts_before_vacuum_interval(
    nursery, memory, caplog
):
    caplog.set_level(logging.INFO, logger="caxton.memory.maintenance")
    with trio.fail_after(CAP_S):
        dead = await make_dead_space(memory.store)
    assert dead >= 0.2, f"the test needs a fragmented file, got {dead:.2f}"
    metrics = Metrics()
    # the intervals are long, so only the dead-space check can start a compaction
    schedule = MaintenanceSchedule(
        analyze_interval_s=3600, vacuum_interval_s=86_400, cleanup_threshold=0.1
    )
    maintenance = MemoryMaintenance(memory, schedule, metrics=metrics)
    await nursery.start(maintenance.run)
    with trio.fail_after(CAP_S):
        due = await maintenance.tick(trio.current_time())
    assert (due.compact, due.reason, due.analyze) == (True, "cleanup_threshold", False)
    assert maintenance.statistics().compact_runs == 1
    assert maintenance.statistics().dead_fraction is not None
    assert runs(metrics, "compact", "ok") == 1
    assert metrics.registry.get_sample_value("caxton_memory_dead_space_ratio") is not None
    assert "(cleanup_threshold; file " in caplog.text


async def test_safe_mode_skips_maintenance_and_says_so(nursery, memory, caplog):
    caplog.set_level(logging.INFO, logger="caxton.memory.maintenance")
    metrics = Metrics()
    safe_mode = True
    schedule = MaintenanceSchedule(
        analyze_interval_s=0.1, vacuum_interval_s=0.1, cleanup_threshold=0.1
    )
    maintenance = await nursery.start(
        MemoryMaintenance(memory, schedule, metrics=metrics, paused=lambda: safe_mode).run
    )
    with trio.fail_after(CAP_S):
        await wait_for(lambda: maintenance.statistics().skipped >= 2)
    stats = maintenance.statistics()
    assert (stats.analyze_runs, stats.compact_runs) == (0, 0)
    assert runs(metrics, "analyze", "skipped") >= 2
    assert runs(metrics, "compact", "skipped") >= 2
    assert "memory maintenance skipped (compact and analyze due): safe mode is on" in caplog.text
    safe_mode = False  # lifted: the overdue jobs run at the next check
    with trio.fail_after(CAP_S):
        await wait_for(lambda: maintenance.statistics().compact_runs >= 1)
    assert maintenance.statistics().analyze_runs >= 1


async def test_a_failed_run_is_a_warning_and_is_tried_again(tmp_path, embedder, caplog):
    caplog.set_level(logging.INFO, logger="caxton.memory.maintenance")
    metrics = Metrics()
    schedule = MaintenanceSchedule(
        analyze_interval_s=0.1, vacuum_interval_s=0.3, cleanup_threshold=0.1
    )
    with trio.fail_after(CAP_S):
        async with trio.open_nursery() as nursery:
            async with open_store(tmp_path / "m.duckdb", migrations=MEMORY_MIGRATIONS) as store:
                memory = await nursery.start(MemoryService(store, embedder).run)
            # the store is closed now: every run fails, and the task keeps going
            maintenance = await nursery.start(
                MemoryMaintenance(memory, schedule, metrics=metrics).run
            )
            await wait_for(lambda: maintenance.statistics().failures >= 3)
            nursery.cancel_scope.cancel()
    assert runs(metrics, "analyze", "failed") >= 3
    assert maintenance.statistics().analyze_runs == 0
    failures = [r for r in caplog.records if "memory maintenance (" in r.getMessage()]
    assert failures
    assert all(r.levelno == logging.WARNING for r in failures)
    assert "failed, tried again in 100ms" in failures[0].getMessage()


async def test_a_server_runs_the_schedule_memory_cleanup_sets(nursery, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="caxton.memory.maintenance")
    loaded = loopback_config(
        tmp_path / "data",
        memory__cleanup__analyze_interval="300ms",
        memory__cleanup__vacuum_interval="600ms",
        memory__cleanup__cleanup_threshold=0.5,
    )
    with trio.fail_after(CAP_S):
        info = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    metrics = info.services.metrics
    with trio.fail_after(CAP_S):
        await wait_for(
            lambda: runs(metrics, "analyze", "ok") >= 1 and runs(metrics, "compact", "ok") >= 1
        )
        # safe mode holds the schedule back, and says so
        await info.services.safe_mode.set(True, reason="test")
        await wait_for(lambda: runs(metrics, "analyze", "skipped") >= 1)
        analyzed = runs(metrics, "analyze", "ok")
        await info.services.safe_mode.set(False)
        await wait_for(lambda: runs(metrics, "analyze", "ok") > analyzed)
    assert "safe mode is on" in caplog.text
    statuses = {s.name: s.state.value for s in info.services.components.statistics()}
    assert statuses["memory_maintenance"] == "running"
    info.stop()
