"""LLM clients for config agents: OpenAI-compatible and Anthropic, streamed, on httpx + trio.

A call is::

    async with client.stream(ChatRequest(messages=(Message(role="user", content="hi"),))) as events:
        async for event in events:  # TextDelta ... ToolCall ... Finish
            ...

:func:`make_client` builds the client for one resolved endpoint, or a :class:`FallbackClient`
for a primary and its fallbacks. Retries (429/5xx/connect errors, honouring ``Retry-After``)
happen only before the first event is delivered; a breaker per endpoint makes a dead provider
fail fast with ``LLM_UNAVAILABLE``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton.llm.anthropic import AnthropicClient
from caxton.llm.breaker import Breakers, BreakerState, BreakerStatistics, CircuitBreaker
from caxton.llm.client import HTTPClient, LLMClient
from caxton.llm.errors import LLMError, LLMTimeout, LLMUnavailable
from caxton.llm.fallback import FallbackClient
from caxton.llm.openai import OpenAIClient
from caxton.llm.redact import redact_url
from caxton.llm.retry import Backoff
from caxton.llm.settings import DEFAULT_BASE_URLS, Provider, ProviderSettings, expand_env
from caxton.llm.types import (
    ChatRequest,
    Finish,
    LLMEvent,
    Message,
    Role,
    TextDelta,
    ToolCall,
    ToolSpec,
    Usage,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    import httpx

__all__ = [
    "DEFAULT_BASE_URLS",
    "AnthropicClient",
    "Backoff",
    "BreakerState",
    "BreakerStatistics",
    "Breakers",
    "ChatRequest",
    "CircuitBreaker",
    "FallbackClient",
    "Finish",
    "HTTPClient",
    "LLMClient",
    "LLMError",
    "LLMEvent",
    "LLMTimeout",
    "LLMUnavailable",
    "Message",
    "OpenAIClient",
    "Provider",
    "ProviderSettings",
    "Role",
    "TextDelta",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "expand_env",
    "make_client",
]


def make_client(
    chain: Sequence[ProviderSettings],
    *,
    http: httpx.AsyncClient,
    breakers: Breakers,
    backoff: Backoff | None = None,
) -> LLMClient:
    """The client for ``chain[0]``, wrapped in a :class:`FallbackClient` when there are more.

    Args:
        chain: resolved settings, primary first (``local`` speaks the OpenAI protocol).
        http: shared HTTP client; the caller owns it.
        breakers: the server's breakers; each endpoint gets its own, shared across calls.
        backoff: retry delays when the provider gives no ``Retry-After``.
    """
    if not chain:
        raise ValueError("make_client needs at least one ProviderSettings")
    clients: list[LLMClient] = []
    for settings in chain:
        kind = AnthropicClient if settings.provider == "anthropic" else OpenAIClient
        # keyed (and shown in /api/v1/health) by the endpoint with its credentials masked
        shown = redact_url(kind.endpoint_for(settings), (settings.api_key, *settings.secrets))
        breaker = breakers.get(settings.provider, shown)
        clients.append(kind(settings, http=http, breaker=breaker, backoff=backoff))
    return clients[0] if len(clients) == 1 else FallbackClient(clients)
