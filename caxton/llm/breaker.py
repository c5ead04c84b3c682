"""A circuit breaker per provider endpoint, so that a dead provider fails fast.

``closed``: calls go through; ``failure_threshold`` consecutive failed attempts open it.
``open``: calls are refused at once until ``cooldown_s`` has passed.
``half_open``: one trial call goes through (the others are still refused); its success
closes the breaker, its failure opens it for another cool-down.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Callable

BreakerState = Literal["closed", "open", "half_open"]


@attrs.frozen(kw_only=True)
class BreakerStatistics:
    state: BreakerState
    consecutive_failures: int
    total_failures: int
    rejected_calls: int
    seconds_until_half_open: float


class CircuitBreaker:
    """Args:
    failure_threshold: consecutive failures that open the breaker.
    cooldown_s: how long it stays open before letting a trial call through.
    clock: a monotonic clock in seconds (trio's by default).
    """

    def __init__(
        self,
        *,
        failure_threshold: int = 5,
        cooldown_s: float = 30.0,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive = 0
        self._total = 0
        self._rejected = 0
        self._opened_at: float | None = None
        self._trial_in_flight = False

    @property
    def state(self) -> BreakerState:
        if self._opened_at is None:
            return "closed"
        if self._clock() - self._opened_at >= self.cooldown_s:
            return "half_open"
        return "open"

    def allow(self) -> bool:
        """May a call start now? In ``half_open`` only the first caller gets ``True``; it must
        then report :meth:`record_success`, :meth:`record_failure` or :meth:`release`."""
        state = self.state
        if state == "closed":
            return True
        if state == "half_open" and not self._trial_in_flight:
            self._trial_in_flight = True
            return True
        self._rejected += 1
        return False

    def record_success(self) -> None:
        self._consecutive = 0
        self._opened_at = None
        self._trial_in_flight = False

    def record_failure(self) -> None:
        self._consecutive += 1
        self._total += 1
        if self._trial_in_flight or self._consecutive >= self.failure_threshold:
            self._opened_at = self._clock()
        self._trial_in_flight = False

    def release(self) -> None:
        """The call ended without telling anything about the provider's health (cancelled,
        rate limited): a half-open breaker lets the next caller try."""
        self._trial_in_flight = False

    def statistics(self) -> BreakerStatistics:
        remaining = 0.0
        if self._opened_at is not None:
            remaining = max(self._opened_at + self.cooldown_s - self._clock(), 0.0)
        return BreakerStatistics(
            state=self.state,
            consecutive_failures=self._consecutive,
            total_failures=self._total,
            rejected_calls=self._rejected,
            seconds_until_half_open=remaining,
        )


class Breakers:
    """One :class:`CircuitBreaker` per endpoint (provider and URL), shared by every client of
    that endpoint so that all agents using a dead provider fail fast together."""

    def __init__(self, *, failure_threshold: int = 5, cooldown_s: float = 30.0) -> None:
        self.failure_threshold = failure_threshold
        self.cooldown_s = cooldown_s
        self._breakers: dict[tuple[str, str], CircuitBreaker] = {}

    def get(self, provider: str, url: str) -> CircuitBreaker:
        key = (provider, url)
        breaker = self._breakers.get(key)
        if breaker is None:
            breaker = CircuitBreaker(
                failure_threshold=self.failure_threshold, cooldown_s=self.cooldown_s
            )
            self._breakers[key] = breaker
        return breaker

    def statistics(self) -> dict[tuple[str, str], BreakerStatistics]:
        return {key: breaker.statistics() for key, breaker in self._breakers.items()}
