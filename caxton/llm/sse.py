"""A sans-IO decoder for ``text/event-stream`` (the SSE wire format both providers stream)."""

from __future__ import annotations

import attrs


@attrs.frozen
class SSEEvent:
    """One dispatched event: ``event`` is ``"message"`` unless the stream named it."""

    event: str
    data: str


class SSEDecoder:
    """Feed bytes as they arrive; get back the events they complete.

    Handles ``\\n``, ``\\r\\n`` and ``\\r`` line ends split anywhere across chunks, multi-line
    ``data:``, comments (``:`` lines) and UTF-8 split across chunks.
    """

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[str] = []

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        self._buffer += chunk
        events: list[SSEEvent] = []
        while True:
            cut = _line_end(self._buffer)
            if cut is None:
                return events
            end, after = cut
            line = self._buffer[:end].decode("utf-8", errors="replace")
            self._buffer = self._buffer[after:]
            event = self._line(line)
            if event is not None:
                events.append(event)

    def _line(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = SSEEvent(self._event or "message", "\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if field == "event":
            self._event = value
        elif field == "data":
            self._data.append(value)
        return None


def _line_end(buffer: bytes) -> tuple[int, int] | None:
    """Position of the first line end and of the byte after it; ``None`` if incomplete."""
    for index, byte in enumerate(buffer):
        if byte == 0x0A:
            return index, index + 1
        if byte == 0x0D:
            if index + 1 == len(buffer):
                return None  # a \r at the end may be the first half of \r\n
            return index, index + (2 if buffer[index + 1] == 0x0A else 1)
    return None
