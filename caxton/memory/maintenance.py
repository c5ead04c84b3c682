"""The maintenance task of memory: ANALYZE and compaction on the schedule ``memory.cleanup`` sets.

* every ``analyze_interval``: ``ANALYZE`` (query statistics);
* every ``vacuum_interval``: compaction, that is ``CHECKPOINT`` then ``VACUUM`` (plus ``ANALYZE``
  when it is due too);
* in between, every :meth:`MaintenanceSchedule.check_interval_s`: the share of free blocks in
  the DuckDB file (``PRAGMA database_size``); at or above ``cleanup_threshold`` the compaction
  runs early. On PostgreSQL (autovacuum keeps the tables) there is no such figure: the
  compaction runs on its interval only, and is an ``ANALYZE`` of the memory tables.

An interval or threshold of 0 turns that job off. Intervals count from the server's start.
The decision is the pure :func:`due_jobs` (and :func:`next_wake_at`); :class:`MemoryMaintenance`
is the trio shell that sleeps, measures and runs the work through the store's writer.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import attrs
import trio

from caxton.errors import CaxtonError
from caxton.units import format_duration

if TYPE_CHECKING:
    from collections.abc import Callable

    from duckdb import DuckDBPyConnection as Connection

    from caxton.config.model import CleanupConfig
    from caxton.memory.service import MemoryService
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.memory.maintenance")

#: The dead-space check runs at least this often (when no interval is shorter).
MAX_CHECK_INTERVAL_S = 3600.0
#: ... and never more often than this, whatever the settings say.
MIN_CHECK_INTERVAL_S = 0.05


@attrs.frozen(kw_only=True)
class MaintenanceSchedule:
    """The ``memory.cleanup`` settings, in seconds; 0 turns a job off."""

    analyze_interval_s: float
    vacuum_interval_s: float
    cleanup_threshold: float

    @classmethod
    def from_config(cls, config: CleanupConfig) -> MaintenanceSchedule:
        return cls(
            analyze_interval_s=float(config.analyze_interval),
            vacuum_interval_s=float(config.vacuum_interval),
            cleanup_threshold=float(config.cleanup_threshold),
        )

    @property
    def check_interval_s(self) -> float:
        """How often the task wakes to measure dead space and retry skipped or failed jobs:
        the shortest interval that is on, at most an hour."""
        intervals = [i for i in (self.analyze_interval_s, self.vacuum_interval_s) if i > 0]
        return max(MIN_CHECK_INTERVAL_S, min([*intervals, MAX_CHECK_INTERVAL_S]))


@attrs.frozen(kw_only=True)
class LastRuns:
    """When each job last succeeded (``trio.current_time()`` clock), and the dead fraction
    the last compaction left behind (None before the first one)."""

    analyzed_at: float
    compacted_at: float
    dead_after_compaction: float | None = None


@attrs.frozen(kw_only=True)
class DueJobs:
    """Which jobs to run now; ``reason`` says why the compaction is due (or is "")."""

    analyze: bool
    compact: bool
    reason: str = ""

    @property
    def any(self) -> bool:
        return self.analyze or self.compact


def due_jobs(
    schedule: MaintenanceSchedule, *, now: float, last: LastRuns, dead_fraction: float | None
) -> DueJobs:
    """Which jobs are due at ``now`` (pure).

    The compaction is due when ``vacuum_interval`` has passed since the last one, or early when
    ``dead_fraction`` (free blocks / total blocks; None when not measured) reaches
    ``cleanup_threshold``. A compaction cannot always give space back (DuckDB reuses free
    blocks but truncates only the file's tail), so when the last compaction already left at
    least the threshold behind, the early one waits until the dead space has grown past what
    that compaction left.
    """
    analyze = (
        schedule.analyze_interval_s > 0 and now - last.analyzed_at >= schedule.analyze_interval_s
    )
    reason = ""
    if schedule.vacuum_interval_s > 0 and now - last.compacted_at >= schedule.vacuum_interval_s:
        reason = "vacuum_interval"
    elif (
        schedule.cleanup_threshold > 0
        and dead_fraction is not None
        and dead_fraction >= schedule.cleanup_threshold
    ):
        left = last.dead_after_compaction
        if left is None or left < schedule.cleanup_threshold or dead_fraction > left:
            reason = "cleanup_threshold"
    return DueJobs(analyze=analyze, compact=bool(reason), reason=reason)


def next_wake_at(schedule: MaintenanceSchedule, *, now: float, last: LastRuns) -> float:
    """When the task wakes next (pure): the next interval that falls due, or one check interval
    from ``now`` if that is sooner. A job already overdue (it failed or was skipped) is tried
    again at the next check, not at once."""
    candidates = [now + schedule.check_interval_s]
    for interval, at in (
        (schedule.analyze_interval_s, last.analyzed_at),
        (schedule.vacuum_interval_s, last.compacted_at),
    ):
        if interval > 0 and at + interval > now:
            candidates.append(at + interval)
    return min(candidates)


@attrs.frozen(kw_only=True)
class DatabaseSpace:
    """``PRAGMA database_size`` of the store's database."""

    total_blocks: int
    free_blocks: int

    @property
    def dead_fraction(self) -> float:
        """Free blocks over total blocks (0.0 for an empty or in-memory database)."""
        return self.free_blocks / self.total_blocks if self.total_blocks > 0 else 0.0


def read_space(conn: Connection) -> DatabaseSpace:
    """The block counts of the current database (a read, for :meth:`Store.execute_fn`)."""
    row = conn.execute(
        "SELECT total_blocks, free_blocks FROM pragma_database_size() "
        "WHERE database_name = current_database()"
    ).fetchone()
    if row is None:
        return DatabaseSpace(total_blocks=0, free_blocks=0)
    return DatabaseSpace(total_blocks=int(row[0] or 0), free_blocks=int(row[1] or 0))


@attrs.frozen(kw_only=True)
class MaintenanceStatistics:
    """Counters of the maintenance task (runs that succeeded, failed, or waited for safe mode)."""

    analyze_runs: int
    compact_runs: int
    failures: int
    skipped: int
    checks: int
    dead_fraction: float | None


class MemoryMaintenance:
    """Keeps the memory database's statistics fresh and its file compact (``memory.cleanup``).

    Args:
        memory: the memory service; the work is :meth:`MemoryService.optimize` (the store's
            writer runs it, so it never overlaps a write).
        schedule: the intervals and the dead-space threshold.
        metrics: counts runs in ``caxton_memory_maintenance_runs_total{kind,outcome}``.
        paused: while it returns True (safe mode), due jobs are skipped and tried again at the
            next check.
    """

    def __init__(
        self,
        memory: MemoryService,
        schedule: MaintenanceSchedule,
        *,
        metrics: Metrics | None = None,
        paused: Callable[[], bool] = lambda: False,
    ) -> None:
        self.memory = memory
        self.schedule = schedule
        self.paused = paused
        self._runs = (
            metrics.counter(
                "caxton_memory_maintenance_runs",
                "Scheduled memory maintenance runs, by kind (analyze, compact) and outcome "
                "(ok, failed, skipped while safe mode is on).",
                ["kind", "outcome"],
            )
            if metrics is not None
            else None
        )
        if metrics is not None:
            metrics.gauge(
                "caxton_memory_dead_space_ratio",
                "Free blocks over total blocks of the memory database at the last check.",
            ).set_function(lambda: self._dead_fraction or 0.0)
        self._last: LastRuns | None = None
        self._dead_fraction: float | None = None
        self._counts = {"analyze": 0, "compact": 0, "failures": 0, "skipped": 0, "checks": 0}

    async def run(
        self, *, task_status: trio.TaskStatus[MemoryMaintenance] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Run the schedule until cancelled; a failed run is logged and tried again at the
        next check.

        Cancellation:
            A run in progress finishes in the writer (DuckDB statements cannot be
            interrupted); cancellation takes effect when it returns.
        """
        now = trio.current_time()
        self._last = LastRuns(analyzed_at=now, compacted_at=now)
        task_status.started(self)
        while True:
            await trio.sleep_until(next_wake_at(self.schedule, now=now, last=self._last))
            now = trio.current_time()
            await self.tick(now)

    async def tick(self, now: float) -> DueJobs:
        """Measure dead space, then run what is due at ``now`` (never raises a CaxtonError)."""
        assert self._last is not None, "run() sets the first LastRuns"
        dead = await self._measure()
        due = due_jobs(self.schedule, now=now, last=self._last, dead_fraction=dead)
        if not due.any:
            return due
        kinds = [k for k, on in (("compact", due.compact), ("analyze", due.analyze)) if on]
        if self.paused():
            self._counts["skipped"] += 1
            for kind in kinds:
                self._count(kind, "skipped")
            LOGGER.info(
                "memory maintenance skipped (%s due): safe mode is on; it runs once safe "
                "mode is lifted",
                " and ".join(kinds),
            )
            return due
        await self._run_jobs(due, kinds, now)
        return due

    async def _measure(self) -> float | None:
        if self.schedule.cleanup_threshold <= 0:
            return None
        self._counts["checks"] += 1
        try:
            space = await self.memory.store.execute_fn(self.memory.sql.database_space)
        except Exception as exc:  # a failed check must not stop the schedule
            LOGGER.warning(
                "memory maintenance could not measure dead space (tried again next check): %s",
                _describe(exc),
            )
            return None
        if space is None:  # a server database (PostgreSQL) vacuums itself: nothing to measure
            return None
        self._dead_fraction = space.dead_fraction
        return self._dead_fraction

    async def _run_jobs(self, due: DueJobs, kinds: list[str], now: float) -> None:
        assert self._last is not None
        try:
            report = await self.memory.optimize(
                checkpoint=due.compact, vacuum=due.compact, analyze=due.analyze
            )
        except Exception as exc:  # duckdb.Error, StoreClosed, OSError...: never stop the server
            self._counts["failures"] += 1
            for kind in kinds:
                self._count(kind, "failed")
            LOGGER.warning(
                "memory maintenance (%s) failed, tried again in %s: %s",
                " and ".join(kinds),
                format_duration(self.schedule.check_interval_s),
                _describe(exc),
            )
            return
        left = self._last.dead_after_compaction
        if due.compact:
            left = await self._measure()
            self._counts["compact"] += 1
        if due.analyze:
            self._counts["analyze"] += 1
        for kind in kinds:
            self._count(kind, "ok")
        self._last = LastRuns(
            analyzed_at=now if due.analyze else self._last.analyzed_at,
            compacted_at=now if due.compact else self._last.compacted_at,
            dead_after_compaction=left,
        )
        LOGGER.info(
            "memory maintenance: %s in %.3f s%s",
            _what_ran(report.checkpointed or report.vacuumed, report.analyzed),
            report.seconds,
            f" ({due.reason}; file {report.size_before_bytes} -> {report.size_after_bytes} bytes)"
            if due.compact
            else "",
            extra={
                "jobs": kinds,
                "reason": due.reason or None,
                "seconds": round(report.seconds, 3),
                "size_before_bytes": report.size_before_bytes,
                "size_after_bytes": report.size_after_bytes,
            },
        )

    def _count(self, kind: str, outcome: str) -> None:
        if self._runs is not None:
            self._runs.labels(kind=kind, outcome=outcome).inc()

    def statistics(self) -> MaintenanceStatistics:
        """A snapshot of the task's counters."""
        return MaintenanceStatistics(
            analyze_runs=self._counts["analyze"],
            compact_runs=self._counts["compact"],
            failures=self._counts["failures"],
            skipped=self._counts["skipped"],
            checks=self._counts["checks"],
            dead_fraction=None if self._dead_fraction is None else round(self._dead_fraction, 4),
        )


def _what_ran(compacted: bool, analyzed: bool) -> str:
    done = [
        step for step, ran in (("checkpoint + VACUUM", compacted), ("ANALYZE", analyzed)) if ran
    ]
    # PostgreSQL: the server checkpoints and autovacuum compacts; nothing was left to do
    return " and ".join(done) or "nothing to do (the database compacts itself)"


def _describe(exc: Exception) -> str:
    if isinstance(exc, CaxtonError):
        return exc.message
    return f"{type(exc).__name__}: {exc}"
