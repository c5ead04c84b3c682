"""Settings of one LLM endpoint, as an agent file writes them (:class:`LlmSpec`) and resolved
(:class:`ProviderSettings`), and ``${VAR}`` expansion for API keys."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping

Provider = Literal["openai", "anthropic", "local"]

#: Where each provider lives when ``base_url`` is not set. ``local`` speaks the OpenAI
#: protocol at Ollama's default address.
DEFAULT_BASE_URLS: Final[Mapping[str, str]] = {
    "openai": "https://api.openai.com/v1",
    "anthropic": "https://api.anthropic.com",
    "local": "http://localhost:11434/v1",
}


@attrs.frozen(kw_only=True)
class LlmSpec:
    """``[llm]``: unset fields (``None``) take the server-wide ``llm:`` defaults of caxton.yaml."""

    provider: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    timeout_s: float | None = None
    max_retries: int | None = None
    fallback: tuple[LlmSpec, ...] = ()


_ENV_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def expand_env(value: str, environ: Mapping[str, str]) -> str:
    """Replace every ``${VAR}`` in ``value`` with ``environ[VAR]``.

    Raises:
        KeyError: a referenced variable is not set; the message names the variable only.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in environ:
            raise KeyError(f"environment variable {name} is not set")
        return environ[name]

    return _ENV_REFERENCE.sub(replace, value)


def referenced_values(value: str, environ: Mapping[str, str]) -> tuple[str, ...]:
    """The values that :func:`expand_env` substitutes into ``value`` (set ones only)."""
    return tuple(environ[name] for name in _ENV_REFERENCE.findall(value) if name in environ)


@attrs.frozen(kw_only=True)
class ProviderSettings:
    """One endpoint, fully resolved (defaults merged, ``${VAR}`` expanded).

    ``api_key`` is excluded from ``repr`` so that logging a settings value cannot leak it;
    ``secrets`` holds it and every value expanded from ``${VAR}``, which views and errors mask.
    Timeouts: ``timeout_s`` bounds the whole call, retries and streaming included;
    ``connect_timeout_s`` bounds each TCP/TLS connect.
    """

    provider: Provider
    model: str
    base_url: str | None = attrs.field(default=None, repr=False)  # may hold expanded secrets
    api_key: str | None = attrs.field(default=None, repr=False)
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    timeout_s: float = 60.0
    connect_timeout_s: float = 10.0
    max_retries: int = 2
    secrets: tuple[str, ...] = attrs.field(default=(), repr=False)

    @property
    def url(self) -> str:
        """The base URL actually used (``base_url`` or the provider's default), no trailing /."""
        return (self.base_url or DEFAULT_BASE_URLS[self.provider]).rstrip("/")
