"""An agent's ``[llm]`` table merged with caxton.yaml ``llm:`` into endpoint settings.

Pure: no I/O. The rules, key by key (the README repeats them for operators):

- ``[performance.llm_config]`` (``max_tokens``, ``temperature``) wins over ``[llm]``, which
  wins over caxton.yaml ``llm:``.
- Sampling and limits (``temperature``, ``max_tokens``, ``top_p``, ``timeout``,
  ``max_retries``) are inherited from ``llm:`` whatever the provider.
- Where to connect and as whom (``model``, ``base_url``, ``api_key``) are inherited from
  ``llm:`` only when the agent names no provider or the same one: a key meant for one
  provider is never sent to another.
- Each ``fallback`` table inherits sampling and limits from the agent's primary settings,
  and connects only with what it names itself (or its provider's default URL).
- ``${VAR}`` in ``api_key`` and ``base_url`` is expanded from the environment.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, TypeVar, cast

import attrs

from caxton.agents.spec import LlmSpec
from caxton.errors import CaxtonError
from caxton.llm.settings import Provider, ProviderSettings, expand_env

if TYPE_CHECKING:
    from collections.abc import Mapping

    from caxton.agents.spec import LlmOverrides
    from caxton.config.model import LLMConfig

#: The longest a TCP/TLS connect may take before the provider counts as unreachable.
CONNECT_TIMEOUT_S: Final = 5.0
_PROVIDERS: Final = ("openai", "anthropic", "local")
T = TypeVar("T")


class LLMNotConfigured(CaxtonError):
    """No usable LLM endpoint: provider ``none``, no model, or an unset ``${VAR}``."""

    code = "LLM_UNAVAILABLE"
    http_status = 503


def resolve_chain(
    agent: str,
    spec: LlmSpec,
    defaults: LLMConfig,
    overrides: LlmOverrides,
    environ: Mapping[str, str],
) -> tuple[ProviderSettings, ...]:
    """The endpoints of ``agent``, primary first.

    Raises:
        LLMNotConfigured: naming the agent, the key to set and where to set it.
    """
    server = LlmSpec(
        provider=defaults.provider,
        model=defaults.model,
        base_url=defaults.base_url,
        api_key=defaults.api_key,
        temperature=defaults.temperature,
        max_tokens=defaults.max_tokens,
        top_p=defaults.top_p,
        timeout_s=float(defaults.timeout),
        max_retries=defaults.max_retries,
    )
    own = spec
    same_provider = own.provider is None or own.provider == server.provider
    primary = LlmSpec(
        provider=own.provider or server.provider,
        model=_first(own.model, server.model if same_provider else None),
        base_url=_first(own.base_url, server.base_url if same_provider else None),
        api_key=_first(own.api_key, server.api_key if same_provider else None),
        temperature=_first(overrides.temperature, own.temperature, server.temperature),
        max_tokens=_first(overrides.max_tokens, own.max_tokens, server.max_tokens),
        top_p=_first(own.top_p, server.top_p),
        timeout_s=_first(own.timeout_s, server.timeout_s),
        max_retries=_first(own.max_retries, server.max_retries),
    )
    chain = [_settings(agent, "llm", primary, environ)]
    for index, table in enumerate(spec.fallback):
        merged = attrs.evolve(
            table,
            temperature=_first(table.temperature, primary.temperature),
            max_tokens=_first(table.max_tokens, primary.max_tokens),
            top_p=_first(table.top_p, primary.top_p),
            timeout_s=_first(table.timeout_s, primary.timeout_s),
            max_retries=_first(table.max_retries, primary.max_retries),
        )
        chain.append(_settings(agent, f"llm.fallback[{index}]", merged, environ))
    return tuple(chain)


def _settings(
    agent: str, where: str, table: LlmSpec, environ: Mapping[str, str]
) -> ProviderSettings:
    provider = table.provider or "none"
    if provider not in _PROVIDERS:
        raise LLMNotConfigured(
            f"agent {agent!r} has no LLM: {where}.provider is {provider!r}; set it to openai, "
            "anthropic or local in the agent file, or set llm.provider in caxton.yaml",
            details={"agent": agent, "key": f"{where}.provider", "provider": provider},
        )
    if not table.model:
        raise LLMNotConfigured(
            f"agent {agent!r}: {where}.model is not set for provider {provider!r}; name the "
            "model in the agent file or in caxton.yaml llm.model",
            details={"agent": agent, "key": f"{where}.model", "provider": provider},
        )
    timeout_s = table.timeout_s if table.timeout_s is not None else 60.0
    return ProviderSettings(
        provider=cast("Provider", provider),
        model=table.model,
        base_url=_expand(agent, f"{where}.base_url", table.base_url, environ),
        api_key=_expand(agent, f"{where}.api_key", table.api_key, environ),
        temperature=table.temperature,
        max_tokens=table.max_tokens,
        top_p=table.top_p,
        timeout_s=timeout_s,
        connect_timeout_s=min(CONNECT_TIMEOUT_S, timeout_s),
        max_retries=table.max_retries if table.max_retries is not None else 2,
    )


def _expand(agent: str, key: str, value: str | None, environ: Mapping[str, str]) -> str | None:
    if value is None:
        return None
    try:
        return expand_env(value, environ) or None
    except KeyError as exc:
        raise LLMNotConfigured(
            f"agent {agent!r}: {key}: {exc.args[0]}; export it before starting caxton "
            "(or write the value in the file)",
            details={"agent": agent, "key": key},
        ) from None


def _first(*values: T | None) -> T | None:
    for value in values:
        if value is not None:
            return value
    return None
