"""Errors of the LLM client layer; each names the provider and the URL it was talking to."""

from __future__ import annotations

from typing import Any

from caxton.errors import CaxtonError


class _LLMFailure(CaxtonError):
    """Common shape: ``provider`` and ``url`` are in the message and in ``details``."""

    def __init__(self, provider: str, url: str, problem: str, **details: Any) -> None:
        self.provider = provider
        self.url = url
        self.problem = problem
        super().__init__(
            f"LLM provider {provider!r} at {url}: {problem}",
            details={"provider": provider, "url": url, **details},
        )


class LLMUnavailable(_LLMFailure):
    """The provider cannot be reached: connection refused, DNS, rate limited, breaker open."""

    code = "LLM_UNAVAILABLE"
    http_status = 503


class LLMError(_LLMFailure):
    """The provider answered, but not with something usable (4xx, 5xx, a malformed stream)."""

    code = "LLM_ERROR"
    http_status = 502


class LLMTimeout(_LLMFailure):
    """The call did not finish within its ``timeout``."""

    code = "TIMEOUT"
    http_status = 504


LLMFailure = LLMUnavailable | LLMError | LLMTimeout
