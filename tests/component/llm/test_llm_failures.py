"""Retries, timeouts, unreachable providers, the breaker and the fallback chain."""

from __future__ import annotations

import logging

import pytest
import trio
from llm_helpers import ask, client_for, collect, collect_into, finish_of, settings_for, text_of

from caxton.llm import (
    Breakers,
    CircuitBreaker,
    FallbackClient,
    LLMError,
    LLMTimeout,
    LLMUnavailable,
    TextDelta,
    make_client,
)

PROVIDERS = ["openai", "anthropic"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_429_is_retried_after_the_retry_after_delay(provider, start_llm, http):
    rule = {"match": "busy", "fail": {"status": 429, "retry_after": 1, "times": 1}, "reply": "ok"}
    server = await start_llm({"rules": [rule]})
    client = client_for(provider, server.url, http)
    with trio.fail_after(5):
        started = trio.current_time()
        events = await collect(client, ask("busy now?"))
        elapsed = trio.current_time() - started
    assert text_of(events) == "ok"
    assert len(server.requests) == 2
    # Our own backoff is 10-50 ms here: only Retry-After explains a wait of a second.
    assert 0.95 <= elapsed < 2.5
    assert client.breaker.state == "closed"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_500_is_retried_until_it_succeeds(provider, start_llm, http):
    rule = {"match": "flaky", "fail": {"status": 500, "times": 2}, "reply": "recovered"}
    server = await start_llm({"rules": [rule]})
    with trio.fail_after(5):
        events = await collect(client_for(provider, server.url, http, max_retries=2), ask("flaky?"))
    assert text_of(events) == "recovered"
    assert finish_of(events).reason == "stop"
    assert len(server.requests) == 3


async def test_retries_stop_at_max_retries(start_llm, http):
    rule = {"match": "flaky", "fail": {"status": 500, "times": 5}, "reply": "recovered"}
    server = await start_llm({"rules": [rule]})
    client = client_for("openai", server.url, http, max_retries=1)
    with trio.fail_after(5), pytest.raises(LLMError) as caught:
        await collect(client, ask("flaky?"))
    assert len(server.requests) == 2
    assert caught.value.code == "LLM_ERROR"
    assert caught.value.http_status == 502
    assert "HTTP 500" in caught.value.message
    assert caught.value.details["status"] == 500


async def test_503_after_retries_is_unavailable(start_llm, http):
    server = await start_llm({"rules": [{"fail": {"status": 503}}]})
    client = client_for("anthropic", server.url, http, max_retries=1)
    with trio.fail_after(5), pytest.raises(LLMUnavailable, match="HTTP 503"):
        await collect(client, ask("anything"))
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_4xx_is_not_retried(provider, start_llm, http):
    server = await start_llm({"api_key": "sk-right"})
    client = client_for(provider, server.url, http, api_key="sk-wrong")
    with trio.fail_after(5), pytest.raises(LLMError, match="HTTP 401") as caught:
        await collect(client, ask("hello"))
    assert len(server.requests) == 1
    assert "invalid API key" in caught.value.message


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_no_retry_once_tokens_were_streamed(provider, start_llm, http):
    # openai: chunk 0 is the role, chunk 1 the first word; anthropic: message_start, ping,
    # content_block_start, first word.
    after = 2 if provider == "openai" else 4
    rule = {"match": "cut", "fail": {"drop_after_chunks": after}, "reply": "first second third"}
    server = await start_llm({"rules": [rule]})
    client = client_for(provider, server.url, http, max_retries=3)
    received = []
    with trio.fail_after(5), pytest.raises(LLMError, match="broke during the reply"):
        await collect_into(received, client, ask("cut me off"))
    assert received == [TextDelta("first ")]
    assert len(server.requests) == 1


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_drop_before_any_token_is_retried(provider, start_llm, http):
    rule = {"match": "cut", "fail": {"drop_after_chunks": 1, "times": 1}, "reply": "whole reply"}
    server = await start_llm({"rules": [rule]})
    with trio.fail_after(5):
        events = await collect(client_for(provider, server.url, http), ask("cut once"))
    assert text_of(events) == "whole reply"
    assert len(server.requests) == 2


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_a_slow_provider_times_out(provider, start_llm, http):
    server = await start_llm({"rules": [{"match": "slow", "delay_s": 10}]})
    client = client_for(provider, server.url, http, timeout_s=0.3)
    started = trio.current_time()
    with trio.fail_after(5), pytest.raises(LLMTimeout) as caught:
        await collect(client, ask("slow please"))
    assert trio.current_time() - started < 1.5
    assert caught.value.code == "TIMEOUT"
    assert caught.value.http_status == 504
    assert server.url in caught.value.message
    assert provider in caught.value.message


async def test_the_timeout_covers_a_stalled_stream(start_llm, http):
    server = await start_llm({"chunk_delay_s": 0.4})
    client = client_for("openai", server.url, http, timeout_s=0.6)
    received = []
    with trio.fail_after(5), pytest.raises(LLMTimeout):
        await collect_into(received, client, ask("a b c d e f g h"))
    assert 0 < len(received) < 8


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_connection_refused_is_unavailable_and_names_the_url(provider, refused_url, http):
    client = client_for(provider, refused_url, http, max_retries=1)
    with trio.fail_after(5), pytest.raises(LLMUnavailable) as caught:
        await collect(client, ask("anyone there?"))
    error = caught.value
    assert error.code == "LLM_UNAVAILABLE"
    assert error.http_status == 503
    assert refused_url in error.message
    assert repr(provider) in error.message
    assert "cannot connect" in error.message
    assert error.details["url"] == client.url
    assert error.details["provider"] == provider


async def test_breaker_opens_fails_fast_then_half_opens(start_llm, http):
    rule = {"match": "", "fail": {"status": 500}, "reply": "back"}
    server = await start_llm({"rules": [rule]})
    breaker = CircuitBreaker(failure_threshold=2, cooldown_s=0.3)
    client = client_for("openai", server.url, http, breaker=breaker, max_retries=0)
    with trio.fail_after(5):
        for _ in range(2):
            with pytest.raises(LLMError):
                await collect(client, ask("hi"))
        assert breaker.state == "open"
        assert len(server.requests) == 2

        started = trio.current_time()
        with pytest.raises(LLMUnavailable, match="circuit breaker open") as caught:
            await collect(client, ask("hi"))
        assert trio.current_time() - started < 0.010
        assert len(server.requests) == 2  # refused without touching the network
        assert server.url in caught.value.message
        assert caught.value.details["breaker"] == "open"
        assert breaker.statistics().rejected_calls == 1

        await trio.sleep(0.35)
        assert breaker.state == "half_open"
        server.script.rules[0].failures_left = 0  # the provider recovers
        events = await collect(client, ask("hi again"))
    assert text_of(events) == "back"
    assert breaker.state == "closed"
    assert breaker.statistics().consecutive_failures == 0


async def test_breaker_counts_connect_failures_across_retries(refused_url, http):
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=60)
    client = client_for("anthropic", refused_url, http, breaker=breaker, max_retries=5)
    with trio.fail_after(5), pytest.raises(LLMUnavailable, match="circuit breaker open"):
        await collect(client, ask("hi"))
    assert breaker.state == "open"
    assert breaker.statistics().total_failures == 3


async def test_fallback_uses_the_next_provider(start_llm, refused_url, http, caplog):
    server = await start_llm({"rules": [{"reply": "from the fallback"}]})
    chain = FallbackClient(
        [
            client_for("openai", refused_url, http, max_retries=0),
            client_for("anthropic", server.url, http),
        ]
    )
    with trio.fail_after(5), caplog.at_level(logging.WARNING, logger="caxton.llm"):
        events = await collect(chain, ask("hello"))
    assert text_of(events) == "from the fallback"
    assert finish_of(events).reason == "stop"
    assert [r.path for r in server.requests] == ["/v1/messages"]
    assert "falling back to anthropic" in caplog.text


async def test_fallback_does_not_switch_after_tokens(start_llm, http):
    primary = await start_llm(
        {"rules": [{"fail": {"drop_after_chunks": 2}, "reply": "one two three"}]}
    )
    secondary = await start_llm({"rules": [{"reply": "other"}]})
    chain = FallbackClient(
        [client_for("openai", primary.url, http), client_for("openai", secondary.url, http)]
    )
    with trio.fail_after(5), pytest.raises(LLMError):
        await collect(chain, ask("hello"))
    assert secondary.requests == []


async def test_fallback_chain_exhausted_names_every_provider(refused_url, start_llm, http):
    server = await start_llm({"rules": [{"fail": {"status": 503}}]})
    chain = FallbackClient(
        [
            client_for("openai", refused_url, http, max_retries=0),
            client_for("anthropic", server.url, http, max_retries=0),
        ]
    )
    with trio.fail_after(5), pytest.raises(LLMUnavailable) as caught:
        await collect(chain, ask("hello"))
    assert refused_url in caught.value.message
    assert server.url in caught.value.message
    assert "cannot connect" in caught.value.message
    assert "HTTP 503" in caught.value.message
    assert len(caught.value.details["attempts"]) == 2


async def test_make_client_shares_one_breaker_per_endpoint(start_llm, refused_url, http):
    server = await start_llm()
    breakers = Breakers(failure_threshold=1, cooldown_s=60)
    dead = settings_for("openai", refused_url, max_retries=0)
    alive = settings_for("anthropic", server.url)
    first = make_client([dead, alive], http=http, breakers=breakers)
    second = make_client([dead], http=http, breakers=breakers)
    assert isinstance(first, FallbackClient)
    with trio.fail_after(5):
        assert text_of(await collect(first, ask("hello"))) == "hello"
        # The first call opened the dead endpoint's breaker: the second client, another
        # agent's, fails fast on it.
        with pytest.raises(LLMUnavailable, match="circuit breaker open"):
            await collect(second, ask("hello"))
    assert breakers.get("openai", f"{refused_url}/v1/chat/completions").state == "open"
    assert breakers.get("anthropic", f"{server.url}/v1/messages").state == "closed"


async def test_local_provider_defaults_to_ollama(http):
    from caxton.llm import OpenAIClient, ProviderSettings

    client = OpenAIClient(ProviderSettings(provider="local", model="llama3"), http=http)
    assert client.url == "http://localhost:11434/v1/chat/completions"
