"""The sans-IO pieces: SSE decoding, stream parsers, backoff, breaker, request values.

No sockets here; the breaker runs on a hand-driven clock.
"""

from __future__ import annotations

import json

import pytest

from caxton.llm import Backoff, CircuitBreaker, Finish, Message, TextDelta, ToolCall, ToolSpec
from caxton.llm.anthropic import AnthropicStreamParser
from caxton.llm.openai import OpenAIStreamParser
from caxton.llm.retry import parse_retry_after
from caxton.llm.sse import SSEDecoder, SSEEvent
from caxton.llm.wire import WireError

STREAM = (
    b": comment\r\n"
    b"event: first\r\ndata: one\r\n\r\n"
    b"data: two\ndata: lines\n\n"
    b"data: caf\xc3\xa9\r\r"
    b"data:no-space\n\n"
)
EXPECTED = [
    SSEEvent("first", "one"),
    SSEEvent("message", "two\nlines"),
    SSEEvent("message", "café"),
    SSEEvent("message", "no-space"),
]


def test_sse_decoder_whole():
    assert SSEDecoder().feed(STREAM) == EXPECTED


@pytest.mark.parametrize("size", [1, 2, 3, 5, 7])
def test_sse_decoder_any_split(size):
    decoder = SSEDecoder()
    events = []
    for start in range(0, len(STREAM), size):
        events += decoder.feed(STREAM[start : start + size])
    assert events == EXPECTED


def _openai(data):
    return SSEEvent("message", json.dumps(data))


def test_openai_parser_assembles_interleaved_tool_calls():
    parser = OpenAIStreamParser()
    out = []
    fragments = [
        {"index": 0, "id": "a", "function": {"name": "one", "arguments": '{"x"'}},
        {"index": 1, "id": "b", "function": {"name": "two", "arguments": ""}},
        {"index": 1, "function": {"arguments": '{"y": 2}'}},
        {"index": 0, "function": {"arguments": ": 1}"}},
    ]
    for fragment in fragments:
        out += parser.feed(
            _openai({"choices": [{"index": 0, "delta": {"tool_calls": [fragment]}}]})
        )
    assert out == []
    out += parser.feed(
        _openai({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    )
    out += parser.feed(
        _openai({"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}})
    )
    out += parser.feed(SSEEvent("message", "[DONE]"))
    assert out[:2] == [
        ToolCall(id="a", name="one", arguments='{"x": 1}'),
        ToolCall(id="b", name="two", arguments='{"y": 2}'),
    ]
    assert out[2].reason == "tool_calls"
    assert (out[2].usage.input_tokens, out[2].usage.output_tokens) == (3, 4)
    assert parser.finished


def test_openai_parser_rejects_broken_streams():
    with pytest.raises(WireError, match="not JSON"):
        OpenAIStreamParser().feed(SSEEvent("message", "{oops"))
    with pytest.raises(WireError, match="quota"):
        OpenAIStreamParser().feed(_openai({"error": {"message": "quota exceeded"}}))
    parser = OpenAIStreamParser()
    parser.feed(_openai({"choices": [{"index": 0, "delta": {"content": "hi"}}]}))
    with pytest.raises(WireError, match="ended before"):
        parser.end_of_stream()
    bad = OpenAIStreamParser()
    bad.feed(
        _openai(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "a",
                                    "function": {"name": "f", "arguments": '{"x": '},
                                }
                            ]
                        },
                    }
                ]
            }
        )
    )
    with pytest.raises(WireError, match="bad arguments"):
        bad.feed(_openai({"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}))


def test_openai_stream_without_done_ends_cleanly_after_finish_reason():
    parser = OpenAIStreamParser()
    parser.feed(
        _openai({"choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": "length"}]})
    )
    assert parser.end_of_stream() == [Finish(reason="length")]


def test_anthropic_parser_errors_and_overload():
    with pytest.raises(WireError) as caught:
        AnthropicStreamParser().feed(
            SSEEvent(
                "error",
                json.dumps(
                    {"type": "error", "error": {"type": "overloaded_error", "message": "busy"}}
                ),
            )
        )
    assert caught.value.overloaded
    parser = AnthropicStreamParser()
    parser.feed(
        SSEEvent(
            "message_start",
            json.dumps({"type": "message_start", "message": {"usage": {"input_tokens": 5}}}),
        )
    )
    with pytest.raises(WireError, match="message_stop"):
        parser.end_of_stream()
    assert parser.feed(
        SSEEvent(
            "x",
            json.dumps(
                {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "text_delta", "text": "a"},
                }
            ),
        )
    ) == [TextDelta("a")]


def test_backoff_grows_is_capped_and_jittered():
    backoff = Backoff(base_s=1.0, max_s=4.0, jitter=0.5)
    for attempt, ceiling in [(1, 1.0), (2, 2.0), (3, 4.0), (6, 4.0)]:
        delays = {backoff.delay(attempt) for _ in range(20)}
        assert all(ceiling * 0.5 <= d <= ceiling for d in delays)
        assert len(delays) > 1
    assert backoff.delay(5, retry_after_s=12.0) == 12.0


def test_parse_retry_after():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(" 0.5 ") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412490.0) == 0.0


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_breaker_states_on_a_fake_clock():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=3, cooldown_s=10, clock=clock)
    for _ in range(2):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "closed"
    breaker.record_success()  # a success resets the count
    for _ in range(3):
        assert breaker.allow()
        breaker.record_failure()
    assert breaker.state == "open"
    assert not breaker.allow()
    clock.now += 9.9
    assert breaker.statistics().seconds_until_half_open == pytest.approx(0.1)
    assert not breaker.allow()
    clock.now += 0.1
    assert breaker.state == "half_open"
    assert breaker.allow()  # the trial
    assert not breaker.allow()  # only one at a time
    breaker.record_failure()  # the trial failed: open for another cool-down
    assert breaker.state == "open"
    clock.now += 10
    assert breaker.allow()
    breaker.release()  # e.g. cancelled: the next caller may try
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state == "closed"
    stats = breaker.statistics()
    assert (stats.total_failures, stats.rejected_calls) == (6, 3)


def test_request_values_are_validated():
    with pytest.raises(ValueError, match="tool_call_id"):
        Message(role="tool", content="x")
    with pytest.raises(ValueError, match="only assistant"):
        Message(role="user", tool_calls=(ToolCall(id="a", name="f"),))
    with pytest.raises(ValueError, match="JSON object"):
        ToolCall(id="a", name="f", arguments="[1]")
    with pytest.raises(ValueError, match="JSON text"):
        ToolSpec(name="f", parameters_json="{")
