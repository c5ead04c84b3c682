"""One write per HTTP/1.1 response of known length: hypercorn's own protocol and
:class:`OneWriteH11Protocol` given the same requests and app, their writes compared."""

from __future__ import annotations

import re
from typing import Any

import hypercorn.protocol
import pytest
import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config
from hypercorn.events import Closed, RawData
from hypercorn.protocol.h11 import H11Protocol
from hypercorn.trio.task_group import TaskGroup
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState

from caxton.http.response_writes import OneWriteH11Protocol, write_responses_whole

GET = b"GET /x HTTP/1.1\r\nHost: t\r\n\r\n"
DATE = re.compile(rb"\r\ndate: [^\r]*", re.IGNORECASE)
HEAD = b"HEAD /x HTTP/1.1\r\nHost: t\r\n\r\n"


def sized(body: bytes) -> list[dict[str, Any]]:
    return [
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(body))],
        },
        {"type": "http.response.body", "body": body},
    ]


STREAMED = [
    {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]},
    {"type": "http.response.body", "body": b"first", "more_body": True},
    {"type": "http.response.body", "body": b"second", "more_body": False},
]


async def writes_of(
    protocol_class: type[H11Protocol], request: bytes, messages: list[dict[str, Any]]
) -> tuple[list[bytes], list[bytes]]:
    """The writes ``protocol_class`` makes for one request answered with ``messages``, and
    the writes made before the app sent its first body message."""
    writes: list[bytes] = []
    before_body: list[bytes] = []
    done = trio.Event()

    async def send(event: object) -> None:
        if isinstance(event, RawData):
            writes.append(event.data)

    async def app(scope: dict[str, Any], receive: Any, app_send: Any) -> None:
        if scope["type"] != "http":
            return
        for message in messages:
            if message["type"] == "http.response.body" and not before_body:
                await trio.sleep(0.05)  # let what the head alone would cause happen
                before_body.extend(writes)
            await app_send(message)
        done.set()

    config = Config()
    async with TaskGroup() as task_group:
        protocol = protocol_class(
            ASGIWrapper(app),
            config,
            WorkerContext(None),
            task_group,
            ConnectionState({}),
            False,
            ("127.0.0.1", 5000),
            ("127.0.0.1", 80),
            send,
        )
        await protocol.initiate()
        with trio.fail_after(5):
            await protocol.handle(RawData(data=request))
            await done.wait()
            await trio.sleep(0.05)
        await protocol.handle(Closed())
    # the Date header may fall in another second between two runs
    return [DATE.sub(b"", w) for w in writes if w], [DATE.sub(b"", w) for w in before_body if w]


@pytest.mark.parametrize("body", [b"hello, world", b""])
async def test_a_response_of_known_length_is_one_write_of_the_same_bytes(body):
    theirs, _ = await writes_of(H11Protocol, GET, sized(body))
    ours, before_body = await writes_of(OneWriteH11Protocol, GET, sized(body))
    assert b"".join(ours) == b"".join(theirs)
    assert ours[0].startswith(b"HTTP/1.1 200 ")
    assert ours[0].endswith(b"\r\n\r\n" + body)
    assert len(theirs) == 2 if body else len(theirs) == 1
    assert len(ours) == 1
    assert before_body == []


async def test_a_head_response_is_written_at_the_end_of_the_message():
    theirs, _ = await writes_of(H11Protocol, HEAD, sized(b"not sent"))
    ours, _ = await writes_of(OneWriteH11Protocol, HEAD, sized(b"not sent"))
    assert ours == theirs
    assert len(ours) == 1
    assert b"content-length: 8" in ours[0]


async def test_a_streamed_response_writes_its_head_at_once():
    theirs, _ = await writes_of(H11Protocol, GET, STREAMED)
    ours, before_body = await writes_of(OneWriteH11Protocol, GET, STREAMED)
    assert ours == theirs
    assert len(before_body) == 1
    assert before_body[0].startswith(b"HTTP/1.1 200 ")
    assert b"transfer-encoding: chunked" in before_body[0].lower()


async def test_the_server_uses_it(monkeypatch):
    monkeypatch.setattr(hypercorn.protocol, "H11Protocol", H11Protocol)
    write_responses_whole()
    assert hypercorn.protocol.H11Protocol is OneWriteH11Protocol
