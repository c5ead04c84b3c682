"""The guest log budget and the line bucket (issue #13 item 4): pure accounting."""

from __future__ import annotations

from caxton.wasm.limits import DropNotes, LogBudget, TokenBucket


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_lines_are_cut_and_the_call_budget_is_kept() -> None:
    bucket = TokenBucket(rate_per_s=1000, burst=1000, clock=Clock())
    budget = LogBudget(bucket=bucket, max_bytes=100, max_line_bytes=40)
    assert [budget.admit(n) for n in (10, 50, 45, 30, 5)] == [10, 40, 40, 10, 0]
    assert budget.used_bytes == 100
    assert budget.dropped_bytes == 10 + 5 + 20 + 5
    assert budget.dropped_lines == 1
    assert budget.admit(0) == 0
    note = budget.note()
    assert note is not None
    assert "40 bytes of guest log dropped" in note


def test_nothing_dropped_means_no_note() -> None:
    budget = LogBudget(bucket=TokenBucket(rate_per_s=1, burst=5, clock=Clock()))
    assert budget.admit(10) == 10
    assert budget.note() is None


def test_the_bucket_refills_at_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate_per_s=10, burst=2, clock=clock)
    assert [bucket.take() for _ in range(3)] == [True, True, False]
    clock.now = 0.1
    assert [bucket.take() for _ in range(2)] == [True, False]
    clock.now = 10.0
    assert [bucket.take() for _ in range(3)] == [True, True, False]  # never more than the burst


def test_an_agents_drop_notes_come_at_most_once_a_second_with_the_totals() -> None:
    clock = Clock()
    notes = DropNotes(interval_s=1.0, clock=clock)
    assert notes.add(10, 1) == (10, 1, True)  # the first is noted at once
    assert notes.add(20, 2) is None  # a guest past its rate on every call: no note a call
    clock.now = 0.5
    assert notes.add(30, 0) is None
    clock.now = 1.0
    assert notes.add(5, 1) == (55, 3, False)  # everything since the last note
    clock.now = 5.0
    assert notes.add(7, 0) == (7, 0, True)
