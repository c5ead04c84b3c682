"""The OpenAI chat completions wire format (also Ollama, vLLM and other compatible servers)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caxton.llm.client import HTTPClient
from caxton.llm.types import Finish, LLMEvent, TextDelta, Usage
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
    from caxton.llm.types import ChatRequest

_REASONS = {"tool_calls": "tool_calls", "function_call": "tool_calls"}


def openai_payload(settings: ProviderSettings, request: ChatRequest) -> dict[str, Any]:
    """The JSON body of ``POST /chat/completions`` for ``request``, streaming."""
    messages: list[dict[str, Any]] = []
    if request.system:
        messages.append({"role": "system", "content": request.system})
    for message in request.messages:
        if message.role == "tool":
            messages.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
        elif message.tool_calls:
            messages.append(
                {
                    "role": "assistant",
                    "content": message.content or None,
                    "tool_calls": [
                        {
                            "id": call.id,
                            "type": "function",
                            "function": {"name": call.name, "arguments": call.arguments},
                        }
                        for call in message.tool_calls
                    ],
                }
            )
        else:
            messages.append({"role": message.role, "content": message.content})
    payload: dict[str, Any] = {
        "model": settings.model,
        "messages": messages,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if request.tools:
        payload["tools"] = [
            {
                "type": "function",
                "function": {
                    "name": tool.name,
                    "description": tool.description,
                    "parameters": tool.parameters(),
                },
            }
            for tool in request.tools
        ]
    add_sampling(payload, settings, request, ("temperature", "max_tokens", "top_p"))
    return payload


class OpenAIStreamParser(FinishingParser):
    """Assembles ``chat.completion.chunk`` events; tool-call arguments arrive in fragments
    keyed by ``index`` and are emitted whole when the choice finishes."""

    def __init__(self) -> None:
        super().__init__()
        self._calls: dict[int, dict[str, Any]] = {}
        self._reason: str | None = None
        self._usage = Usage()
        self._model: str | None = None

    def _feed(self, event: SSEEvent) -> list[LLMEvent]:
        if event.data.strip() == "[DONE]":
            return self._finish()
        chunk = event_object(event, "chunk")
        if "error" in chunk:
            error = chunk["error"]
            text = error.get("message", error) if isinstance(error, dict) else error
            raise WireError(f"the stream reported an error: {text}")
        if isinstance(chunk.get("model"), str):
            self._model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self._usage = openai_usage(usage)
        events: list[LLMEvent] = []
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta") or {}
            content = delta.get("content")
            if isinstance(content, str) and content:
                events.append(TextDelta(content))
            for fragment in delta.get("tool_calls") or ():
                self._add_fragment(fragment)
            reason = choice.get("finish_reason")
            if reason:
                self._reason = _REASONS.get(reason, reason)
                events.extend(self._flush_calls())
        return events

    def end_of_stream(self) -> list[LLMEvent]:
        if self._finished:
            return []
        if self._reason is None:
            raise WireError("the stream ended before the reply was complete")
        return self._finish()

    def _add_fragment(self, fragment: Any) -> None:
        if not isinstance(fragment, dict):
            raise WireError(f"a tool_calls delta is not an object: {fragment!r}")
        call = self._calls.setdefault(
            int(fragment.get("index", 0)), {"id": "", "name": "", "arguments": []}
        )
        if fragment.get("id"):
            call["id"] = fragment["id"]
        function = fragment.get("function") or {}
        if function.get("name"):
            call["name"] = function["name"]
        if function.get("arguments"):
            call["arguments"].append(function["arguments"])

    def _flush_calls(self) -> list[LLMEvent]:
        events: list[LLMEvent] = []
        for index in sorted(self._calls):
            call = self._calls[index]
            events.append(assembled_tool_call(call["id"], call["name"], call["arguments"]))
        self._calls.clear()
        return events

    def _finish(self) -> list[LLMEvent]:
        events = self._flush_calls()
        self._finished = True
        events.append(Finish(reason=self._reason or "stop", usage=self._usage, model=self._model))
        return events


class OpenAIClient(HTTPClient):
    """``POST {base_url}/chat/completions`` with ``stream: true`` (providers openai, local)."""

    @classmethod
    def endpoint_for(cls, settings: ProviderSettings) -> str:
        return f"{settings.url}/chat/completions"

    def headers(self) -> dict[str, str]:
        headers = {"accept": "text/event-stream"}
        if self.settings.api_key:
            headers["authorization"] = f"Bearer {self.settings.api_key}"
        return headers

    def payload(self, request: ChatRequest) -> dict[str, Any]:
        return openai_payload(self.settings, request)

    def parser(self) -> OpenAIStreamParser:
        return OpenAIStreamParser()


def openai_usage(usage: dict[str, Any]) -> Usage:
    """OpenAI's ``usage`` object as :class:`Usage`: ``prompt_tokens`` include the
    ``prompt_tokens_details.cached_tokens`` read from its cache, taken out here."""
    details = usage.get("prompt_tokens_details")
    cached = int((details or {}).get("cached_tokens") or 0) if isinstance(details, dict) else 0
    prompt = int(usage.get("prompt_tokens") or 0)
    return Usage(
        input_tokens=max(0, prompt - cached),
        output_tokens=int(usage.get("completion_tokens") or 0),
        cache_read_tokens=cached,
    )
