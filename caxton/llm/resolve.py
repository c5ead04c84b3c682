"""An agent's ``[llm]`` table merged with caxton.yaml ``llm:`` into endpoint settings.

Pure: no I/O. The rules, key by key (the README repeats them for operators):

- ``[performance.llm_config]`` (``max_tokens``, ``temperature``) wins over ``[llm]``, which
  wins over caxton.yaml ``llm:``.
- Sampling and limits (``temperature``, ``max_tokens``, ``top_p``, ``timeout``,
  ``max_retries``) are inherited from ``llm:`` whatever the provider.
- Where to connect and as whom (``model``, ``base_url``, ``api_key``) are inherited from
  ``llm:`` only when the agent names no provider or the same one: a key meant for one
  provider is never sent to another.
- ``api_key`` is inherited only when the agent's ``base_url`` is unset or, as written, the
  same URL the server's key was configured for (its ``llm.base_url``, else the provider's
  default): a credential is never sent to a URL it was not configured for (issue #13).
- Each ``fallback`` table inherits sampling and limits from the agent's primary settings,
  and connects only with what it names itself (or its provider's default URL).
- ``${VAR}`` in ``api_key`` and ``base_url`` is expanded from the environment the caller
  passes: the server's for files in agents_dir, only the variables named in
  ``security.agent_env_allowlist`` for agents deployed through the API.
- Each endpoint carries the secrets it resolved (its key, every expanded value) so that views,
  logs and errors can mask them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final, Protocol, TypeVar, cast

import attrs

from caxton.errors import CaxtonError
from caxton.llm.settings import (
    DEFAULT_BASE_URLS,
    LlmSpec,
    Provider,
    ProviderSettings,
    expand_env,
    referenced_values,
)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from caxton.config.model import LLMConfig

#: The longest a TCP/TLS connect may take before the provider counts as unreachable.
CONNECT_TIMEOUT_S: Final = 5.0
_PROVIDERS: Final = ("openai", "anthropic", "local")
T = TypeVar("T")


class SamplingOverrides(Protocol):
    """``[performance.llm_config]`` of an agent (``caxton.agents.spec.LlmOverrides``)."""

    @property
    def max_tokens(self) -> int | None: ...

    @property
    def temperature(self) -> float | None: ...


class LLMNotConfigured(CaxtonError):
    """No usable LLM endpoint: provider ``none``, no model, or an unset ``${VAR}``."""

    code = "LLM_UNAVAILABLE"
    http_status = 503


def resolve_chain(
    agent: str,
    spec: LlmSpec,
    defaults: LLMConfig,
    overrides: SamplingOverrides,
    environ: Mapping[str, str],
    *,
    env_hint: str = "",
) -> tuple[ProviderSettings, ...]:
    """The endpoints of ``agent``, primary first.

    Args:
        environ: where ``${VAR}`` values come from.
        env_hint: how to make a variable available, when one is missing (default: export it).

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
    key_url = _normal_url(server.base_url or DEFAULT_BASE_URLS.get(server.provider or "", ""))
    own_url = _expand(agent, "llm.base_url", own.base_url, environ, env_hint)
    same_url = own_url is None or _normal_url(own_url) == key_url
    primary = LlmSpec(
        provider=own.provider or server.provider,
        model=_first(own.model, server.model if same_provider else None),
        base_url=_first(own.base_url, server.base_url if same_provider else None),
        api_key=_first(own.api_key, server.api_key if same_provider and same_url else None),
        temperature=_first(overrides.temperature, own.temperature, server.temperature),
        max_tokens=_first(overrides.max_tokens, own.max_tokens, server.max_tokens),
        top_p=_first(own.top_p, server.top_p),
        timeout_s=_first(own.timeout_s, server.timeout_s),
        max_retries=_first(own.max_retries, server.max_retries),
    )
    chain = [_settings(agent, "llm", primary, environ, env_hint)]
    for index, table in enumerate(spec.fallback):
        merged = attrs.evolve(
            table,
            temperature=_first(table.temperature, primary.temperature),
            max_tokens=_first(table.max_tokens, primary.max_tokens),
            top_p=_first(table.top_p, primary.top_p),
            timeout_s=_first(table.timeout_s, primary.timeout_s),
            max_retries=_first(table.max_retries, primary.max_retries),
        )
        chain.append(_settings(agent, f"llm.fallback[{index}]", merged, environ, env_hint))
    return tuple(chain)


def _settings(
    agent: str, where: str, table: LlmSpec, environ: Mapping[str, str], env_hint: str
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
        base_url=_expand(agent, f"{where}.base_url", table.base_url, environ, env_hint),
        api_key=_expand(agent, f"{where}.api_key", table.api_key, environ, env_hint),
        temperature=table.temperature,
        max_tokens=table.max_tokens,
        top_p=table.top_p,
        timeout_s=timeout_s,
        connect_timeout_s=min(CONNECT_TIMEOUT_S, timeout_s),
        max_retries=table.max_retries if table.max_retries is not None else 2,
        secrets=tuple(
            secret
            for raw in (table.base_url, table.api_key)
            if raw
            for secret in referenced_values(raw, environ)
        ),
    )


def _expand(
    agent: str, key: str, value: str | None, environ: Mapping[str, str], env_hint: str
) -> str | None:
    if value is None:
        return None
    try:
        return expand_env(value, environ) or None
    except KeyError as exc:
        problem = str(exc.args[0])
        if env_hint:
            problem = problem.replace(" is not set", " is not set or not allow-listed")
        hint = env_hint or "export it before starting caxton (or write the value in the file)"
        raise LLMNotConfigured(
            f"agent {agent!r}: {key}: {problem}; {hint}",
            details={"agent": agent, "key": key},
        ) from None


def _normal_url(url: str) -> str:
    return url.strip().rstrip("/")


def _first(*values: T | None) -> T | None:
    for value in values:
        if value is not None:
            return value
    return None
