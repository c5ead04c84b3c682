"""API keys reach the provider and nothing else: not the logs, not errors, not reprs."""

from __future__ import annotations

import logging

import pytest
import trio
from llm_helpers import FAST, ask, client_for, collect, settings_for, text_of

from caxton.llm import AnthropicClient, LLMError, LLMUnavailable, OpenAIClient, expand_env

KEY = "sk-caxton-test-9f8e7d6c5b4a"
WRONG_KEY = "sk-caxton-wrong-1a2b3c4d5e"


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
async def test_api_key_is_sent_but_never_logged(provider, start_llm, refused_url, http, caplog):
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included
    rules = [
        {"match": "busy", "fail": {"status": 429, "retry_after": 0, "times": 1}, "reply": "ok"},
        {"match": "flaky", "fail": {"status": 500, "times": 1}, "reply": "ok"},
    ]
    server = await start_llm({"api_key": KEY, "rules": rules})
    api_key = expand_env("${CAXTON_TEST_KEY}", {"CAXTON_TEST_KEY": KEY})
    good = client_for(provider, server.url, http, api_key=api_key)
    bad = client_for(provider, server.url, http, api_key=WRONG_KEY)
    dead = client_for(provider, refused_url, http, api_key=KEY, max_retries=1)
    errors: list[Exception] = []
    with trio.fail_after(5):
        assert text_of(await collect(good, ask("hello"))) == "hello"
        assert text_of(await collect(good, ask("busy?"))) == "ok"
        assert text_of(await collect(good, ask("flaky?"))) == "ok"
        with pytest.raises(LLMError) as refused:
            await collect(bad, ask("hello"))
        errors.append(refused.value)
        with pytest.raises(LLMUnavailable) as unreachable:
            await collect(dead, ask("hello"))
        errors.append(unreachable.value)
    # The server saw the key (it authorised three calls and refused the wrong one) ...
    assert [r.authorized for r in server.requests] == [True, True, True, True, True, False]
    # ... and the logs were not silent, so the check below means something.
    assert "retry 1 of 2" in caplog.text
    assert "HTTP Request: POST" in caplog.text  # httpx's own debug/info lines were captured
    for secret in (KEY, WRONG_KEY):
        assert secret not in caplog.text
        for record in caplog.records:
            assert secret not in repr(vars(record))
        for error in errors:
            assert secret not in str(error)
            assert secret not in repr(error.details)
        assert secret not in repr(good.settings)
        assert secret not in repr(bad.settings)


async def test_a_key_echoed_by_the_provider_is_redacted(http):
    """A provider's error body that repeats the key does not carry it into our error."""
    client = OpenAIClient(settings_for("openai", "http://127.0.0.1:9", api_key=KEY), http=http)
    error = client.error(f"HTTP 401: key {KEY} is invalid")
    assert KEY not in error.message
    assert "***" in error.message
    anthropic = AnthropicClient(
        settings_for("anthropic", "http://127.0.0.1:9", api_key=KEY), http=http, backoff=FAST
    )
    assert KEY not in anthropic.unavailable(f"rate limited: {KEY}").message


def test_expand_env_names_a_missing_variable_only():
    with pytest.raises(KeyError, match="OPENAI_API_KEY is not set"):
        expand_env("${OPENAI_API_KEY}", {})
    assert expand_env("Bearer ${A}-${B}", {"A": "x", "B": "y"}) == "Bearer x-y"
    assert expand_env("plain", {}) == "plain"
