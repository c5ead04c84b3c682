"""A sliding window of latencies for percentile gauges (the seed's `*_latency_p99` metrics)."""

from __future__ import annotations

import collections
import math


class LatencyWindow:
    """The last ``size`` samples, in seconds; not thread-safe (used from the trio thread).

    Args:
        size: how many recent samples the percentiles cover.
    """

    def __init__(self, size: int = 1000) -> None:
        if size < 1:
            raise ValueError(f"size must be at least 1, got {size}")
        self._samples: collections.deque[float] = collections.deque(maxlen=size)
        self.size = size
        self.count = 0

    def record(self, seconds: float) -> None:
        """Add one sample (the oldest drops out once the window is full)."""
        self._samples.append(seconds)
        self.count += 1

    def percentile(self, fraction: float) -> float:
        """The nearest-rank percentile of the window, in seconds (0.0 when empty).

        Args:
            fraction: 0.5 for the median, 0.99 for p99.
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(fraction * len(ordered)))
        return ordered[rank - 1]

    def __len__(self) -> int:
        return len(self._samples)
