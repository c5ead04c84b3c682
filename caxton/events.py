"""The in-process event hub behind ``WS /ws/events``.

Publishers (registry, watcher, router) call :meth:`EventHub.publish`, which never blocks:
each subscriber has its own bounded memory channel, and a subscriber that falls behind by a
full buffer is dropped (its stream ends) instead of slowing the publisher down.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

LOGGER = logging.getLogger("caxton.events")

#: Event types of DESIGN §7.
EVENT_TYPES = frozenset(
    {
        "agent_deployed",
        "agent_updated",
        "agent_status_changed",
        "agent_deleted",
        "agent_reload_failed",
        "message_routed",
        "execution_error",
        # issue #18: a call refused because an agent's or a key's daily budget is spent
        "budget_exceeded",
    }
)


@attrs.frozen(kw_only=True)
class Event:
    """``{"type", "agent", "data", "timestamp"}`` on the wire."""

    type: str = attrs.field(validator=attrs.validators.in_(EVENT_TYPES))
    agent: str | None = None
    data: dict[str, Any] = attrs.field(factory=dict)
    timestamp: float = attrs.field(factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "agent": self.agent,
            "data": self.data,
            "timestamp": self.timestamp,
        }


class EventHub:
    """Fan-out of events to any number of subscribers.

    Args:
        buffer: events a subscriber may lag behind before it is dropped.
    """

    def __init__(self, *, buffer: int = 256) -> None:
        self.buffer = buffer
        self._subscribers: set[trio.MemorySendChannel[Event]] = set()
        self.dropped = 0

    def publish(self, event: Event) -> None:
        """Deliver ``event`` to every subscriber now; drop subscribers whose buffer is full."""
        for channel in list(self._subscribers):
            try:
                channel.send_nowait(event)
            except trio.WouldBlock:
                LOGGER.warning(
                    "dropping an events subscriber that fell %d events behind", self.buffer
                )
                self._subscribers.discard(channel)
                channel.close()
                self.dropped += 1
            except trio.ClosedResourceError:
                self._subscribers.discard(channel)

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[trio.MemoryReceiveChannel[Event]]:
        """Receive events published from now on until the block exits.

        The channel ends (``async for`` stops) if this subscriber was dropped for being slow.

        Resource handling:
            The subscription is removed when the block exits, also on cancellation.
        """
        send, receive = trio.open_memory_channel[Event](self.buffer)
        self._subscribers.add(send)
        try:
            async with receive:
                yield receive
        finally:
            self._subscribers.discard(send)
            send.close()

    def statistics(self) -> dict[str, int]:
        return {"subscribers": len(self._subscribers), "dropped": self.dropped}
