"""Small helpers shared by the LLM tests."""

from __future__ import annotations

from caxton.llm import (
    AnthropicClient,
    Backoff,
    ChatRequest,
    Finish,
    Message,
    OpenAIClient,
    ProviderSettings,
    TextDelta,
    ToolCall,
)

FAST = Backoff(base_s=0.01, max_s=0.05)


def settings_for(provider, url, **extra):
    base_url = f"{url}/v1" if provider == "openai" else url
    values = {"model": "scripted-1", "timeout_s": 5.0, "max_retries": 2, **extra}
    return ProviderSettings(provider=provider, base_url=base_url, **values)


def client_for(provider, url, http, *, breaker=None, **extra):
    kind = OpenAIClient if provider == "openai" else AnthropicClient
    return kind(settings_for(provider, url, **extra), http=http, breaker=breaker, backoff=FAST)


def ask(text, **extra):
    return ChatRequest(messages=(Message(role="user", content=text),), **extra)


async def collect(client, request):
    async with client.stream(request) as events:
        return [event async for event in events]


def text_of(events):
    return "".join(event.text for event in events if isinstance(event, TextDelta))


def tool_calls_of(events):
    return [event for event in events if isinstance(event, ToolCall)]


def finish_of(events):
    assert isinstance(events[-1], Finish), events
    assert sum(isinstance(event, Finish) for event in events) == 1
    return events[-1]


async def collect_into(received, client, request):
    """Like :func:`collect`, but events land in ``received`` as they arrive (kept on error)."""
    async with client.stream(request) as events:
        async for event in events:
            received.append(event)
