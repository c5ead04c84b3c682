"""What the provider modules share: the parser protocol and the error a parser raises."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from caxton.llm.sse import SSEEvent
    from caxton.llm.types import LLMEvent


class WireError(Exception):
    """The stream broke the provider's protocol, or carried an error event.

    ``overloaded`` marks errors that say the provider is busy rather than that the request was
    wrong; the client reports those as unavailable.
    """

    def __init__(self, message: str, *, overloaded: bool = False) -> None:
        super().__init__(message)
        self.overloaded = overloaded


class StreamParser(Protocol):
    """Turns one provider's SSE events into :data:`~caxton.llm.types.LLMEvent` values."""

    def feed(self, event: SSEEvent) -> list[LLMEvent]:
        """Events completed by ``event``; the last one of a stream is a ``Finish``."""
        ...

    @property
    def finished(self) -> bool:
        """Whether the ``Finish`` event has been produced."""
        ...

    def end_of_stream(self) -> list[LLMEvent]:
        """The body ended: what is still pending, or :class:`WireError` if it was cut short."""
        ...
