"""The Anthropic Messages API wire format (``POST /v1/messages``, streamed)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from caxton.llm.client import HTTPClient
from caxton.llm.types import Finish, TextDelta, Usage
from caxton.llm.wire import (
    FinishingParser,
    WireError,
    add_sampling,
    assembled_tool_call,
    event_object,
)

if TYPE_CHECKING:
    from caxton.llm.settings import ProviderSettings
    from caxton.llm.sse import SSEEvent
    from caxton.llm.types import ChatRequest, LLMEvent, Message

API_VERSION: Final = "2023-06-01"
#: The Messages API requires ``max_tokens``; this is used when neither request nor settings set it.
DEFAULT_MAX_TOKENS: Final = 1024
_REASONS: Final = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}


def _blocks(message: Message) -> list[dict[str, Any]]:
    if message.role == "tool":
        return [
            {"type": "tool_result", "tool_use_id": message.tool_call_id, "content": message.content}
        ]
    blocks: list[dict[str, Any]] = []
    if message.content:
        blocks.append({"type": "text", "text": message.content})
    blocks.extend(
        {"type": "tool_use", "id": call.id, "name": call.name, "input": call.parsed_arguments()}
        for call in message.tool_calls
    )
    return blocks


def anthropic_payload(settings: ProviderSettings, request: ChatRequest) -> dict[str, Any]:
    """The JSON body of ``POST /v1/messages`` for ``request``, streaming.

    Tool results travel as ``user`` turns, and consecutive turns of one role are merged, since
    the API wants user and assistant to alternate.
    """
    messages: list[dict[str, Any]] = []
    for message in request.messages:
        role = "assistant" if message.role == "assistant" else "user"
        blocks = _blocks(message)
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    payload: dict[str, Any] = {
        "model": settings.model,
        "messages": messages,
        "stream": True,
        "max_tokens": request.max_tokens or settings.max_tokens or DEFAULT_MAX_TOKENS,
    }
    if request.system:
        payload["system"] = request.system
    if request.tools:
        payload["tools"] = [
            {"name": tool.name, "description": tool.description, "input_schema": tool.parameters()}
            for tool in request.tools
        ]
    add_sampling(payload, settings, request, ("temperature", "top_p"))
    return payload


class AnthropicStreamParser(FinishingParser):
    """Assembles ``message_start`` … ``message_stop``; a ``tool_use`` block's
    ``input_json_delta`` fragments are joined and emitted at its ``content_block_stop``."""

    def __init__(self) -> None:
        super().__init__()
        self._tools: dict[int, dict[str, Any]] = {}
        self._reason = "stop"
        self._input_tokens = 0
        self._output_tokens = 0
        self._cache_read_tokens = 0
        self._cache_write_tokens = 0
        self._model: str | None = None

    def _feed(self, event: SSEEvent) -> list[LLMEvent]:
        data = event_object(event, "event")
        kind = data.get("type", event.event)
        if kind == "message_start":
            message = data.get("message") or {}
            usage = message.get("usage") or {}
            self._input_tokens = int(usage.get("input_tokens") or 0)
            self._output_tokens = int(usage.get("output_tokens") or 0)
            self._cache_read_tokens = int(usage.get("cache_read_input_tokens") or 0)
            self._cache_write_tokens = int(usage.get("cache_creation_input_tokens") or 0)
            if isinstance(message.get("model"), str):
                self._model = message["model"]
        elif kind == "content_block_start":
            block = data.get("content_block") or {}
            if block.get("type") == "tool_use":
                self._tools[int(data.get("index", 0))] = {
                    "id": block.get("id", ""),
                    "name": block.get("name", ""),
                    "parts": [],
                }
            elif block.get("type") == "text" and block.get("text"):
                return [TextDelta(block["text"])]
        elif kind == "content_block_delta":
            return self._delta(int(data.get("index", 0)), data.get("delta") or {})
        elif kind == "content_block_stop":
            return self._stop_block(int(data.get("index", 0)))
        elif kind == "message_delta":
            reason = (data.get("delta") or {}).get("stop_reason")
            if reason:
                self._reason = _REASONS.get(reason, reason)
            usage = data.get("usage") or {}
            if "output_tokens" in usage:
                self._output_tokens = int(usage["output_tokens"] or 0)
        elif kind == "message_stop":
            self._finished = True
            usage = Usage(
                input_tokens=self._input_tokens,
                output_tokens=self._output_tokens,
                cache_read_tokens=self._cache_read_tokens,
                cache_write_tokens=self._cache_write_tokens,
            )
            return [Finish(reason=self._reason, usage=usage, model=self._model)]
        elif kind == "error":
            error = data.get("error") or {}
            raise WireError(
                f"the stream reported {error.get('type', 'an error')}: {error.get('message', '')}",
                overloaded=error.get("type") == "overloaded_error",
            )
        return []

    def end_of_stream(self) -> list[LLMEvent]:
        if not self._finished:
            raise WireError("the stream ended before message_stop")
        return []

    def _delta(self, index: int, delta: dict[str, Any]) -> list[LLMEvent]:
        if delta.get("type") == "text_delta" and delta.get("text"):
            return [TextDelta(delta["text"])]
        if delta.get("type") == "input_json_delta":
            tool = self._tools.get(index)
            if tool is None:
                raise WireError(f"input_json_delta for block {index}, which is not a tool_use")
            tool["parts"].append(delta.get("partial_json", ""))
        return []

    def _stop_block(self, index: int) -> list[LLMEvent]:
        tool = self._tools.pop(index, None)
        if tool is None:
            return []
        return [assembled_tool_call(tool["id"], tool["name"], tool["parts"])]


class AnthropicClient(HTTPClient):
    """``POST {base_url}/v1/messages`` with ``stream: true``."""

    @classmethod
    def endpoint_for(cls, settings: ProviderSettings) -> str:
        return f"{settings.url}/v1/messages"

    def headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream", "anthropic-version": API_VERSION}
        if self.settings.api_key:
            headers["x-api-key"] = self.settings.api_key
        return headers

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        return anthropic_payload(self.settings, request)

    def parser(self) -> AnthropicStreamParser:
        return AnthropicStreamParser()
