"""The token bucket, on a hand-stepped clock."""

from __future__ import annotations

import pytest

from caxton.security.ratelimit import TokenBucketLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refill_at_the_sustained_rate() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(requests_per_minute=60, burst_size=3, clock=clock)
    decisions = [limiter.check("key:a") for _ in range(4)]
    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert decisions[0].limit == 60
    refused = decisions[3]
    assert refused.retry_after_s == 1
    assert refused.reset_s == 3  # one token a second, three to fill
    assert refused.headers() == {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": "3",
        "Retry-After": "1",
    }
    assert "Retry-After" not in decisions[0].headers()
    clock.now += 0.5
    assert not limiter.check("key:a").allowed
    clock.now += 0.5
    assert limiter.check("key:a").allowed
    clock.now += 60
    assert limiter.check("key:a").remaining == 2  # never more than the burst


def test_callers_have_separate_buckets() -> None:
    limiter = TokenBucketLimiter(requests_per_minute=1, burst_size=1, clock=Clock())
    assert limiter.check("key:a").allowed
    assert not limiter.check("key:a").allowed
    assert limiter.check("ip:127.0.0.1").allowed
    slow = limiter.check("key:a")
    assert slow.retry_after_s == 60


def test_idle_buckets_are_dropped_past_the_cap() -> None:
    clock = Clock()
    limiter = TokenBucketLimiter(requests_per_minute=60, burst_size=5, clock=clock, max_buckets=3)
    for i in range(10):
        limiter.check(f"ip:10.0.0.{i}")
        clock.now += 0.01
    assert limiter.tracked() <= 3
    for _ in range(5):
        limiter.check("key:busy")
    clock.now += 10  # every other bucket is full again and dropped
    limiter.check("ip:new")
    assert limiter.tracked() <= 3
    assert not limiter.check("key:busy").remaining > 5


@pytest.mark.parametrize(("rpm", "burst"), [(0, 1), (1, 0)])
def test_limits_below_one_are_refused(rpm: int, burst: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        TokenBucketLimiter(requests_per_minute=rpm, burst_size=burst)
