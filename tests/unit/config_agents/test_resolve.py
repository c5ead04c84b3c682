"""caxton.llm.resolve: an agent's [llm] merged with caxton.yaml llm: (pure)."""

from __future__ import annotations

import pytest

from caxton.agents.spec import LlmOverrides
from caxton.config.model import LLMConfig, Seconds
from caxton.llm.resolve import LLMNotConfigured, resolve_chain
from caxton.llm.settings import LlmSpec

SERVER = LLMConfig(
    provider="openai",
    model="gpt-server",
    api_key="${OPENAI_API_KEY}",
    temperature=0.7,
    max_tokens=500,
    timeout=Seconds(45.0),
)
ENV = {"OPENAI_API_KEY": "sk-server", "OTHER_KEY": "sk-other"}


def test_agent_keys_win_and_server_defaults_fill_the_rest() -> None:
    (primary,) = resolve_chain(
        "a", LlmSpec(model="gpt-agent", temperature=0.2), SERVER, LlmOverrides(), ENV
    )
    assert primary.provider == "openai"
    assert primary.model == "gpt-agent"
    assert primary.api_key == "sk-server"
    assert primary.temperature == 0.2
    assert primary.max_tokens == 500
    assert primary.timeout_s == 45.0
    assert primary.url == "https://api.openai.com/v1"


def test_performance_llm_config_overrides_the_llm_table() -> None:
    (primary,) = resolve_chain(
        "a",
        LlmSpec(max_tokens=900, temperature=0.9),
        SERVER,
        LlmOverrides(max_tokens=100, temperature=0.1),
        ENV,
    )
    assert (primary.max_tokens, primary.temperature) == (100, 0.1)


def test_credentials_never_cross_to_another_provider() -> None:
    (primary,) = resolve_chain(
        "a", LlmSpec(provider="local", model="llama3.2"), SERVER, LlmOverrides(), ENV
    )
    assert primary.api_key is None
    assert primary.url == "http://localhost:11434/v1"
    assert primary.temperature == 0.7  # sampling is still inherited


def test_fallbacks_inherit_sampling_but_connect_on_their_own() -> None:
    spec = LlmSpec(
        model="gpt-agent",
        temperature=0.3,
        fallback=(LlmSpec(provider="anthropic", model="claude", api_key="${OTHER_KEY}"),),
    )
    primary, fallback = resolve_chain("a", spec, SERVER, LlmOverrides(), ENV)
    assert primary.model == "gpt-agent"
    assert fallback.provider == "anthropic"
    assert fallback.api_key == "sk-other"
    assert fallback.temperature == 0.3
    assert fallback.url == "https://api.anthropic.com"


def test_api_key_is_not_in_repr() -> None:
    (primary,) = resolve_chain("a", LlmSpec(), SERVER, LlmOverrides(), ENV)
    assert "sk-server" not in repr(primary)


@pytest.mark.parametrize(
    ("spec", "server", "environ", "fragment"),
    [
        (LlmSpec(), LLMConfig(), {}, "llm.provider is 'none'"),
        (LlmSpec(provider="openai"), LLMConfig(), {}, "llm.model is not set"),
        (LlmSpec(), SERVER, {}, "environment variable OPENAI_API_KEY is not set"),
        (
            LlmSpec(model="m", fallback=(LlmSpec(provider="anthropic"),)),
            SERVER,
            ENV,
            "llm.fallback[0].model",
        ),
    ],
)
def test_unusable_settings_name_the_key(
    spec: LlmSpec, server: LLMConfig, environ: dict[str, str], fragment: str
) -> None:
    with pytest.raises(LLMNotConfigured) as caught:
        resolve_chain("helper", spec, server, LlmOverrides(), environ)
    assert fragment in caught.value.message
    assert "'helper'" in caught.value.message
    assert caught.value.http_status == 503


def test_the_server_key_goes_only_to_the_url_it_was_configured_for() -> None:
    def key_for(base_url: str | None) -> str | None:
        (primary,) = resolve_chain("a", LlmSpec(base_url=base_url), SERVER, LlmOverrides(), ENV)
        return primary.api_key

    assert key_for(None) == "sk-server"
    assert key_for("https://api.openai.com/v1/") == "sk-server"  # the provider's default
    assert key_for("https://attacker.example/v1") is None
    assert key_for("http://api.openai.com.attacker.example/v1") is None
    own = LlmSpec(base_url="https://attacker.example/v1", api_key="${OTHER_KEY}")
    (primary,) = resolve_chain("a", own, SERVER, LlmOverrides(), ENV)
    assert primary.api_key == "sk-other"  # the agent's own key is its own to send


def test_an_environment_value_is_a_secret_of_the_endpoint() -> None:
    spec = LlmSpec(base_url="https://proxy.example/${OTHER_KEY}/v1")
    (primary,) = resolve_chain("a", spec, SERVER, LlmOverrides(), ENV)
    assert "sk-other" in primary.secrets
    assert "sk-other" not in repr(primary)


def test_a_variable_outside_the_environment_given_names_the_allow_list() -> None:
    spec = LlmSpec(api_key="${OTHER_KEY}")
    with pytest.raises(LLMNotConfigured, match="not set or not allow-listed; ask an admin"):
        resolve_chain("a", spec, SERVER, LlmOverrides(), {}, env_hint="ask an admin")
