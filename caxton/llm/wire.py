"""What the provider modules share: the parser protocol, the error a parser raises, and the
steps both wire formats take alike (sampling settings, JSON events, assembled tool calls)."""

from __future__ import annotations

import abc
import json
from typing import TYPE_CHECKING, Any, Protocol

from caxton.llm.types import ToolCall

if TYPE_CHECKING:
    from collections.abc import Iterable

    from caxton.llm.settings import ProviderSettings
    from caxton.llm.sse import SSEEvent
    from caxton.llm.types import ChatRequest, LLMEvent


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


class FinishingParser(abc.ABC):
    """A :class:`StreamParser` that ignores whatever follows its ``Finish`` event."""

    def __init__(self) -> None:
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def feed(self, event: SSEEvent) -> list[LLMEvent]:
        if self._finished:
            return []
        return self._feed(event)

    @abc.abstractmethod
    def _feed(self, event: SSEEvent) -> list[LLMEvent]:
        """The events ``event`` completes, before the stream finished."""

    @abc.abstractmethod
    def end_of_stream(self) -> list[LLMEvent]:
        """The body ended: what is still pending, or :class:`WireError` if it was cut short."""


def add_sampling(
    payload: dict[str, Any], settings: ProviderSettings, request: ChatRequest, keys: Iterable[str]
) -> None:
    """Put each of ``keys`` into ``payload``: the request's value, else the settings', if any."""
    for key in keys:
        value = getattr(request, key)
        if value is None:
            value = getattr(settings, key)
        if value is not None:
            payload[key] = value


def event_object(event: SSEEvent, what: str) -> dict[str, Any]:
    """The JSON object an SSE event carries.

    Raises:
        WireError: the data is not JSON, or not an object (``what`` names the event in the text).
    """
    try:
        data = json.loads(event.data)
    except ValueError:
        raise WireError(f"a stream {what} is not JSON: {event.data[:200]!r}") from None
    if not isinstance(data, dict):
        raise WireError(f"a stream {what} is not a JSON object: {event.data[:200]!r}")
    return data


def assembled_tool_call(call_id: str, name: str, fragments: Iterable[str]) -> ToolCall:
    """The tool call whose arguments arrived as ``fragments`` of JSON text (none: ``{}``).

    Raises:
        WireError: the joined arguments are not a JSON object.
    """
    arguments = "".join(fragments) or "{}"
    try:
        return ToolCall(id=call_id, name=name, arguments=arguments)
    except ValueError as exc:
        raise WireError(f"tool call {name!r} has bad arguments: {exc}") from None
