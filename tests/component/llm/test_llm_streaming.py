"""Streaming replies, tool calls and wire payloads of both providers against the scripted server."""

from __future__ import annotations

import json

import httpx
import pytest
import trio
from llm_helpers import ask, client_for, collect, finish_of, text_of, tool_calls_of

from caxton.llm import ChatRequest, Message, TextDelta, ToolCall, ToolSpec

PROVIDERS = ["openai", "anthropic"]

WEATHER_TOOL = ToolSpec(
    name="get_weather",
    description="Current weather for a city",
    parameters_json=json.dumps(
        {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    ),
)
ARGUMENTS = {"city": "Paris", "days": 3, "units": "metric", "notes": "long enough to split"}


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_streams_text_in_order_and_finishes_with_usage(provider, start_llm, http):
    reply = "The quick brown fox jumps over the lazy dog."
    server = await start_llm({"rules": [{"match": "fox", "reply": reply}]})
    client = client_for(provider, server.url, http, temperature=0.2, top_p=0.9)
    with trio.fail_after(5):
        events = await collect(
            client, ask("tell me about the fox", system="Be brief.", max_tokens=77)
        )
    deltas = [event for event in events if isinstance(event, TextDelta)]
    assert len(deltas) > 3  # streamed in pieces, not in one block
    assert text_of(events) == reply
    finish = finish_of(events)
    assert finish.reason == "stop"
    assert finish.usage.input_tokens > 0
    assert finish.usage.output_tokens > 0
    [received] = server.requests
    body = received.body
    assert body["stream"] is True
    assert body["model"] == "scripted-1"
    assert body["max_tokens"] == 77
    assert body["temperature"] == 0.2
    assert body["top_p"] == 0.9
    if provider == "openai":
        assert received.path == "/v1/chat/completions"
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    else:
        assert received.path == "/v1/messages"
        assert body["system"] == "Be brief."
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "tell me about the fox"}]}
        ]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_default_reply_echoes_the_last_user_message(provider, start_llm, http):
    server = await start_llm()
    with trio.fail_after(5):
        events = await collect(client_for(provider, server.url, http), ask("echo me back"))
    assert text_of(events) == "echo me back"


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_call_arguments_are_assembled_from_fragments(provider, start_llm, http):
    rule = {
        "match": "weather",
        "reply": "Let me look.",
        "tool_call": {"id": "call_7", "name": "get_weather", "arguments": ARGUMENTS},
    }
    server = await start_llm({"rules": [rule]})
    request = ChatRequest(
        messages=(Message(role="user", content="weather in Paris?"),), tools=(WEATHER_TOOL,)
    )
    with trio.fail_after(5):
        events = await collect(client_for(provider, server.url, http), request)
    assert text_of(events) == "Let me look."
    [call] = tool_calls_of(events)
    assert call.id == "call_7"
    assert call.name == "get_weather"
    assert call.parsed_arguments() == ARGUMENTS
    assert finish_of(events).reason == "tool_calls"
    # The tool went out in the provider's own shape.
    tool = server.requests[0].body["tools"][0]
    if provider == "openai":
        assert tool["type"] == "function"
        assert tool["function"]["name"] == "get_weather"
        assert tool["function"]["parameters"] == WEATHER_TOOL.parameters()
    else:
        assert tool["name"] == "get_weather"
        assert tool["input_schema"] == WEATHER_TOOL.parameters()


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_two_tool_calls_in_one_reply(provider, start_llm, http):
    calls = [
        {"id": "a", "name": "first", "arguments": {"n": 1}},
        {"id": "b", "name": "second", "arguments": {"n": 2, "text": "x" * 30}},
    ]
    server = await start_llm({"rules": [{"match": "both", "tool_calls": calls}]})
    with trio.fail_after(5):
        events = await collect(client_for(provider, server.url, http), ask("call both"))
    assert [(c.id, c.name, c.parsed_arguments()) for c in tool_calls_of(events)] == [
        ("a", "first", {"n": 1}),
        ("b", "second", {"n": 2, "text": "x" * 30}),
    ]
    assert text_of(events) == ""


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_tool_results_go_back_in_the_provider_format(provider, start_llm, http):
    server = await start_llm({"rules": [{"match": "18 degrees", "reply": "It is mild."}]})
    call = ToolCall(id="call_1", name="get_weather", arguments='{"city": "Paris"}')
    request = ChatRequest(
        messages=(
            Message(role="user", content="weather in Paris?"),
            Message(role="assistant", content="Checking.", tool_calls=(call,)),
            Message(role="tool", content="18 degrees and cloudy", tool_call_id="call_1"),
        ),
        tools=(WEATHER_TOOL,),
    )
    with trio.fail_after(5):
        events = await collect(client_for(provider, server.url, http), request)
    assert text_of(events) == "It is mild."
    messages = server.requests[0].body["messages"]
    if provider == "openai":
        assert messages[1] == {
            "role": "assistant",
            "content": "Checking.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        }
        assert messages[2] == {
            "role": "tool",
            "tool_call_id": "call_1",
            "content": "18 degrees and cloudy",
        }
    else:
        assert messages[1] == {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Checking."},
                {
                    "type": "tool_use",
                    "id": "call_1",
                    "name": "get_weather",
                    "input": {"city": "Paris"},
                },
            ],
        }
        assert messages[2] == {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18 degrees and cloudy"}
            ],
        }


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_leaving_early_closes_the_stream(provider, start_llm, http):
    server = await start_llm({"chunk_delay_s": 0.05})
    client = client_for(provider, server.url, http)
    with trio.fail_after(5):
        async with client.stream(ask("one two three four five six seven eight")) as events:
            first = await events.__anext__()
        assert isinstance(first, TextDelta)
        # The connection went back (closed); the next call works on the same pool.
        assert text_of(await collect(client, ask("again"))) == "again"


@pytest.mark.parametrize(
    ("path", "body", "expected"),
    [
        (
            "/v1/chat/completions",
            {"model": "m", "messages": [{"role": "user", "content": "plain"}]},
            "plain",
        ),
        (
            "/v1/messages",
            {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "plain"}]},
            "plain",
        ),
    ],
)
async def test_server_answers_without_streaming(path, body, expected, start_llm, http):
    server = await start_llm()
    with trio.fail_after(5):
        response = await http.post(server.url + path, json=body)
    assert response.status_code == 200
    data = response.json()
    if path.endswith("completions"):
        assert data["choices"][0]["message"]["content"] == expected
        assert data["usage"]["prompt_tokens"] == 1
    else:
        assert data["content"] == [{"type": "text", "text": expected}]
        assert data["stop_reason"] == "end_turn"


async def test_server_refuses_a_wrong_api_key(start_llm, http):
    server = await start_llm({"api_key": "sk-right"})
    with trio.fail_after(5):
        response = await http.post(
            server.url + "/v1/messages",
            json={"messages": []},
            headers={"x-api-key": "sk-wrong"},
        )
    assert response.status_code == 401
    assert response.json()["error"]["type"] == "authentication_error"
    assert server.requests[0].authorized is False
    assert isinstance(response, httpx.Response)
