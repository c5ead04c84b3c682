"""One socket write per HTTP/1.1 response whose length is known.

hypercorn's HTTP/1.1 protocol writes a response's head as soon as the app starts the response
and its body when the app sends it: two ``send`` calls, two TCP segments and, on loopback, two
wake-ups of the client, for a JSON reply that is ready all at once.
:class:`OneWriteH11Protocol` holds the head of a response that declares a ``Content-Length``
and writes it together with the first body bytes (or with the end of the message, for an empty
body or a ``HEAD`` request). Streamed responses (server-sent events, chunked) have no length:
their head goes out at once, as before, so a client sees the stream open before its first
event. Informational responses (``100 Continue``, ``101 Switching Protocols``) are never held.
The bytes on the wire are the same; only how many writes carry them changes (on the memory
bench's machine, in six alternating pairs: 3-28% more searches a second, median 9%).

hypercorn picks its protocol class when a connection opens, from ``hypercorn.protocol``;
:func:`write_responses_whole` puts this class there. hypercorn is pinned below 0.19, and the
tests compare this class's writes with hypercorn's own for the same responses.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import h11
import hypercorn.protocol
from hypercorn.events import RawData
from hypercorn.protocol.events import Body, EndBody
from hypercorn.protocol.h11 import H11Protocol

if TYPE_CHECKING:
    from hypercorn.protocol.events import Event as StreamEvent
    from hypercorn.typing import H11SendableEvent

CONTENT_LENGTH = b"content-length"


def _declares_length(event: h11.Response) -> bool:
    return any(name.lower() == CONTENT_LENGTH for name, _ in event.headers)


class OneWriteH11Protocol(H11Protocol):
    """hypercorn's HTTP/1.1 protocol, writing a response of known length in one write."""

    #: the serialized head of a response with a length, not written yet
    _held = b""

    async def _send_h11_event(self, event: H11SendableEvent) -> None:
        try:
            data = self.connection.send(event)
        except h11.LocalProtocolError:
            if self.connection.their_state != h11.ERROR:
                raise
            return
        if isinstance(event, h11.Response) and _declares_length(event) and data:
            self._held += data
            return
        await self._write(data)

    async def _write(self, data: bytes | None) -> None:
        data = self._held + (data or b"")
        self._held = b""
        await self.send(RawData(data=data))

    async def stream_send(self, event: StreamEvent) -> None:
        # Only the body of the held head may follow it; anything else writes the head first.
        if self._held and not isinstance(event, Body | EndBody):
            await self._write(b"")
        await super().stream_send(event)


def write_responses_whole() -> None:
    """Make hypercorn open HTTP/1.1 connections with :class:`OneWriteH11Protocol` (idempotent;
    connections opened before keep hypercorn's class)."""
    hypercorn.protocol.H11Protocol = OneWriteH11Protocol  # type: ignore[attr-defined]
