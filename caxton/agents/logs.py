"""Per-agent log ring buffers behind ``caxton logs AGENT`` and ``GET …/agents/{name}/logs``."""

from __future__ import annotations

import collections
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LOGGER = logging.getLogger("caxton.agents")
LEVELS = ("debug", "info", "warn", "error")
KEPT_LINES = 1000


@attrs.frozen(kw_only=True)
class LogLine:
    agent: str
    level: str
    message: str
    timestamp: float = attrs.field(factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "level": self.level,
            "message": self.message,
            "timestamp": self.timestamp,
        }


def level_at_least(line: LogLine, level: str | None) -> bool:
    if level is None:
        return True
    return LEVELS.index(line.level) >= LEVELS.index(level)


class AgentLogs:
    """The last :data:`KEPT_LINES` lines of each agent, plus live followers."""

    def __init__(self, *, kept: int = KEPT_LINES) -> None:
        self.kept = kept
        self._lines: dict[str, collections.deque[LogLine]] = {}
        self._followers: dict[str, set[trio.MemorySendChannel[LogLine]]] = {}

    def write(self, agent: str, level: str, message: str) -> None:
        """Record a line for ``agent`` (also written to the server log)."""
        line = LogLine(agent=agent, level=level, message=message)
        lines = self._lines.setdefault(agent, collections.deque(maxlen=self.kept))
        lines.append(line)
        python_level = {"debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING}
        LOGGER.log(python_level.get(level, logging.ERROR), "[%s] %s", agent, message)
        for channel in list(self._followers.get(agent, ())):
            try:
                channel.send_nowait(line)
            except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
                # lagging, or its reader left (the follower is being removed)
                self._followers[agent].discard(channel)
                channel.close()

    def tail(self, agent: str, count: int, level: str | None = None) -> list[LogLine]:
        lines = [line for line in self._lines.get(agent, ()) if level_at_least(line, level)]
        return lines[-count:] if count > 0 else []

    @contextlib.asynccontextmanager
    async def follow(self, agent: str) -> AsyncIterator[trio.MemoryReceiveChannel[LogLine]]:
        """New lines of ``agent`` until the block exits (a follower that lags is dropped).

        Resource handling:
            The follower is removed when the block exits.
        """
        send, receive = trio.open_memory_channel[LogLine](256)
        self._followers.setdefault(agent, set()).add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._followers.get(agent, set()).discard(send)
            send.close()

    def forget(self, agent: str) -> None:
        self._lines.pop(agent, None)
