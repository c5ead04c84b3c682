"""Backoff between attempts: exponential with jitter, or what ``Retry-After`` asks for."""

from __future__ import annotations

import email.utils
import random
import time

import attrs


@attrs.frozen(kw_only=True)
class Backoff:
    """Delay before retry number ``attempt`` (1-based): ``base_s * 2**(attempt-1)``, capped
    at ``max_s``, times a random factor in ``[1 - jitter, 1]`` so that many clients retrying
    the same provider do not arrive together."""

    base_s: float = 0.5
    max_s: float = 8.0
    jitter: float = 0.5

    def delay(self, attempt: int, *, retry_after_s: float | None = None) -> float:
        if retry_after_s is not None:
            return max(retry_after_s, 0.0)
        ceiling = min(self.max_s, self.base_s * 2.0 ** max(attempt - 1, 0))
        return ceiling * (1.0 - self.jitter * random.random())


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if value is None:
        return None
    value = value.strip()
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)
