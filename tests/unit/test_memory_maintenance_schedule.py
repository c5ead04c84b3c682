"""The memory maintenance schedule (pure): which jobs ``memory.cleanup`` makes due, and when."""

from __future__ import annotations

import pytest

from caxton.config import load_config
from caxton.memory.maintenance import (
    DatabaseSpace,
    DueJobs,
    LastRuns,
    MaintenanceSchedule,
    due_jobs,
    next_wake_at,
)

HOUR = 3600.0
DEFAULTS = MaintenanceSchedule(
    analyze_interval_s=12 * HOUR, vacuum_interval_s=24 * HOUR, cleanup_threshold=0.1
)
START = LastRuns(analyzed_at=0.0, compacted_at=0.0)


def test_the_schedule_comes_from_memory_cleanup() -> None:
    text = (
        "memory:\n  cleanup:\n    vacuum_interval: 2h\n    analyze_interval: 30m\n"
        "    cleanup_threshold: 0.25\n"
    )
    config = load_config(None, text=text, environ={}).config
    schedule = MaintenanceSchedule.from_config(config.memory.cleanup)
    assert schedule == MaintenanceSchedule(
        analyze_interval_s=1800.0, vacuum_interval_s=7200.0, cleanup_threshold=0.25
    )
    assert schedule.check_interval_s == 1800.0
    defaults = load_config(None, environ={}).config.memory.cleanup
    assert MaintenanceSchedule.from_config(defaults) == DEFAULTS
    assert DEFAULTS.check_interval_s == HOUR  # dead space is measured hourly by default


def test_nothing_is_due_before_an_interval_passes_on_a_tidy_file() -> None:
    assert due_jobs(DEFAULTS, now=HOUR, last=START, dead_fraction=0.05) == DueJobs(
        analyze=False, compact=False
    )


def test_analyze_every_analyze_interval() -> None:
    due = due_jobs(DEFAULTS, now=12 * HOUR, last=START, dead_fraction=0.0)
    assert (due.analyze, due.compact) == (True, False)
    after = LastRuns(analyzed_at=12 * HOUR, compacted_at=0.0)
    assert not due_jobs(DEFAULTS, now=13 * HOUR, last=after, dead_fraction=0.0).any


def test_compaction_every_vacuum_interval_with_analyze_when_both_are_due() -> None:
    due = due_jobs(DEFAULTS, now=24 * HOUR, last=START, dead_fraction=0.0)
    assert due == DueJobs(analyze=True, compact=True, reason="vacuum_interval")


def test_dead_space_at_the_threshold_compacts_early() -> None:
    due = due_jobs(DEFAULTS, now=HOUR, last=START, dead_fraction=0.1)
    assert due == DueJobs(analyze=False, compact=True, reason="cleanup_threshold")
    assert not due_jobs(DEFAULTS, now=HOUR, last=START, dead_fraction=0.099).any


def test_an_early_compaction_that_gave_nothing_back_is_not_repeated_every_check() -> None:
    stuck = LastRuns(analyzed_at=0.0, compacted_at=HOUR, dead_after_compaction=0.3)
    assert not due_jobs(DEFAULTS, now=2 * HOUR, last=stuck, dead_fraction=0.3).any
    # once more space has died since, it runs again
    assert due_jobs(DEFAULTS, now=2 * HOUR, last=stuck, dead_fraction=0.31).compact
    # a compaction that left little behind does not hold the next one back
    tidy = LastRuns(analyzed_at=0.0, compacted_at=HOUR, dead_after_compaction=0.02)
    assert due_jobs(DEFAULTS, now=2 * HOUR, last=tidy, dead_fraction=0.15).compact
    # and the regular interval runs whatever the last one left
    assert due_jobs(DEFAULTS, now=25 * HOUR, last=stuck, dead_fraction=0.3).compact


@pytest.mark.parametrize(
    ("schedule", "dead", "expected"),
    [
        (
            MaintenanceSchedule(analyze_interval_s=0, vacuum_interval_s=1, cleanup_threshold=0.1),
            0.0,
            (False, True),
        ),
        (
            MaintenanceSchedule(analyze_interval_s=1, vacuum_interval_s=0, cleanup_threshold=0.1),
            0.0,
            (True, False),
        ),
        (
            MaintenanceSchedule(analyze_interval_s=1, vacuum_interval_s=0, cleanup_threshold=0),
            0.9,
            (True, False),
        ),
        (
            MaintenanceSchedule(analyze_interval_s=0, vacuum_interval_s=0, cleanup_threshold=0.5),
            0.9,
            (False, True),
        ),
    ],
)
def test_zero_turns_a_job_off(
    schedule: MaintenanceSchedule, dead: float, expected: tuple[bool, bool]
) -> None:
    due = due_jobs(schedule, now=10 * HOUR, last=START, dead_fraction=dead)
    assert (due.analyze, due.compact) == expected


def test_all_off_still_checks_dead_space_hourly() -> None:
    off = MaintenanceSchedule(analyze_interval_s=0, vacuum_interval_s=0, cleanup_threshold=0.1)
    assert off.check_interval_s == HOUR
    assert next_wake_at(off, now=5.0, last=START) == 5.0 + HOUR


def test_the_task_wakes_at_the_next_due_interval_or_the_next_check() -> None:
    short = MaintenanceSchedule(analyze_interval_s=90, vacuum_interval_s=200, cleanup_threshold=0.1)
    assert short.check_interval_s == 90
    assert next_wake_at(short, now=0.0, last=START) == 90
    last = LastRuns(analyzed_at=90.0, compacted_at=0.0)
    assert next_wake_at(short, now=90.0, last=last) == 180  # check before the vacuum at 200
    # after a run at 180 the vacuum at 200 comes before the next check at 270
    last = LastRuns(analyzed_at=180.0, compacted_at=0.0)
    assert next_wake_at(short, now=180.0, last=last) == 200


def test_a_failed_or_skipped_job_is_retried_at_the_next_check_not_at_once() -> None:
    short = MaintenanceSchedule(analyze_interval_s=90, vacuum_interval_s=200, cleanup_threshold=0.1)
    overdue = LastRuns(analyzed_at=0.0, compacted_at=0.0)  # the run at 200 did not succeed
    assert next_wake_at(short, now=200.0, last=overdue) == 290
    assert due_jobs(short, now=290.0, last=overdue, dead_fraction=0.0).compact


def test_dead_fraction_is_free_over_total_blocks() -> None:
    assert DatabaseSpace(total_blocks=55, free_blocks=11).dead_fraction == pytest.approx(0.2)
    assert DatabaseSpace(total_blocks=0, free_blocks=0).dead_fraction == 0.0
