"""The bounds on HTTP MCP replies, over in-memory byte streams (the wire is tested with a real
server in ``tests/component/config_agents/test_mcp_resilience.py``)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import httpx
import pytest

from caxton.agents.mcp_tools.replies import (
    REPLY_TOO_LARGE,
    BoundedReplies,
    _BoundedBody,
    _BoundedEvents,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class Chunks(httpx.AsyncByteStream):
    def __init__(self, *chunks: bytes) -> None:
        self.chunks = chunks
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            yield chunk

    async def aclose(self) -> None:
        self.closed = True


def owner(problems: list[str], limit: int = 1024) -> BoundedReplies:
    return BoundedReplies(limit, problems.append)


async def read(stream: httpx.AsyncByteStream) -> bytes:
    return b"".join([chunk async for chunk in stream])


def event(data: str) -> bytes:
    return f"event: message\r\ndata: {data}\r\n\r\n".encode()


async def test_events_within_the_bound_pass_unchanged_however_they_are_cut() -> None:
    problems: list[str] = []
    stream = event("a" * 500) + event("b" * 900) + b": comment\n\n"
    pieces = [stream[i : i + 7] for i in range(0, len(stream), 7)]
    inner = Chunks(*pieces)
    assert await read(_BoundedEvents(inner, owner(problems), 1, 4096)) == stream
    assert problems == []
    assert inner.closed


async def test_an_event_past_the_bound_in_one_chunk_ends_the_stream_with_an_error_event() -> None:
    problems: list[str] = []
    inner = Chunks(event("small") + event("x" * 2000) + event("never read"))
    body = await read(_BoundedEvents(inner, owner(problems), 7, 4096))
    first, error = body.split(b"\r\n\r\n", 1)
    assert first + b"\r\n\r\n" == event("small")
    assert b"never read" not in error
    answer = json.loads(error.split(b"data: ", 1)[1])
    assert answer["id"] == 7
    assert answer["error"]["code"] == REPLY_TOO_LARGE
    assert "larger than max_response_size (1KiB)" in answer["error"]["message"]
    assert problems == [answer["error"]["message"].split("; the reply")[0]]
    assert inner.closed


async def test_the_whole_stream_of_one_call_is_bounded_too() -> None:
    problems: list[str] = []
    inner = Chunks(*[event("p" * 100) for _ in range(50)])
    body = await read(_BoundedEvents(inner, owner(problems), "call-1", 2048))
    assert body.count(b"data: ppp") < 2048 // 100
    assert b'"id": "call-1"' in body
    assert "stream of one call grew past 2KiB" in problems[0]


async def test_the_get_stream_carries_no_call_and_ends_with_a_read_error() -> None:
    with pytest.raises(httpx.ReadError, match="max_response_size"):
        await read(_BoundedEvents(Chunks(b"data: " + b"x" * 5000), owner([]), None, None))


async def test_a_json_body_is_whole_within_the_bound_and_an_error_past_it() -> None:
    problems: list[str] = []
    body = b'{"jsonrpc": "2.0", "id": 3, "result": {}}'
    assert await read(_BoundedBody(Chunks(body[:10], body[10:]), owner(problems), 3)) == body
    big = Chunks(b"[" + b"1," * 1000, b"1]")
    answer = json.loads(await read(_BoundedBody(big, owner(problems), 3)))
    assert (answer["id"], answer["error"]["code"]) == (3, REPLY_TOO_LARGE)
    assert big.closed
    assert len(problems) == 1
