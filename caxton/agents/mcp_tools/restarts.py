"""When a stdio MCP server that exited is started again: the backoff and the bound (pure).

A server that exits or crashes is restarted after a delay that doubles with each restart
within :data:`WINDOW_S` (0.5s, 1s, 2s... at most :data:`MAX_DELAY_S`); once ``max_restarts``
restarts fall within the window it is not restarted again, and stays failed until the agent
reloads. So a server that crashes now and then keeps coming back, and one that crashes at
every start costs a handful of starts, never a tight loop.
"""

from __future__ import annotations

from typing import Final

import attrs

FIRST_DELAY_S: Final = 0.5
MAX_DELAY_S: Final = 30.0
#: Restarts older than this no longer count against ``max_restarts``.
WINDOW_S: Final = 600.0


@attrs.frozen(kw_only=True)
class RestartBudget:
    """The restarts of one server so far (their times, on a monotonic clock)."""

    max_restarts: int
    #: when the restarts within the window began
    times: tuple[float, ...] = ()
    #: every restart since the version loaded
    count: int = 0

    def recent(self, now: float) -> int:
        return sum(1 for at in self.times if now - at < WINDOW_S)

    def delay(self, now: float) -> float | None:
        """Seconds to wait before the next restart, or ``None``: no restart is left."""
        recent = self.recent(now)
        if recent >= self.max_restarts:
            return None
        return float(min(FIRST_DELAY_S * 2**recent, MAX_DELAY_S))

    def restarted(self, now: float) -> RestartBudget:
        """The budget once a restart began at ``now`` (times out of the window dropped)."""
        kept = tuple(at for at in self.times if now - at < WINDOW_S)
        return attrs.evolve(self, times=(*kept, now), count=self.count + 1)
