"""The HTTP edge of a default install (authentication off): what a web page, a rebound
domain, a deep JSON document, an oversized frame or a caller posing as an agent meets."""

from __future__ import annotations

import contextlib
import functools
import json
import logging
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from security_servers import copy_echo, ws_handshake
from servers import loopback_config
from trio_websocket import ConnectionClosed
from wsclient import open_ws

from caxton.http.params import MAX_JSON_DEPTH, MAX_JSON_KEYS
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

EVIL = "https://evil.example"
ENTITY = {"name": "n", "entity_type": "t", "observations": ["o"]}


@pytest.fixture
def start_open(nursery: trio.Nursery, tmp_path: Path) -> Callable[..., Awaitable[ServerInfo]]:
    """Start a server with authentication off and the echo agent; keywords override config."""
    count = 0

    async def start(**extra: object) -> ServerInfo:
        nonlocal count
        count += 1
        base = tmp_path / f"open-{count}"
        copy_echo(base / "agents")
        loaded = loopback_config(base / "data", server__agents_dir=str(base / "agents"), **extra)
        info: ServerInfo = await nursery.start(
            functools.partial(serve, loaded, handle_signals=False)
        )
        return info

    return start


@pytest.fixture
async def open_server(start_open: Callable[..., Awaitable[ServerInfo]]) -> ServerInfo:
    return await start_open()


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert error["request_id"]
    return error


async def test_json_routes_take_only_json_bodies(open_server: ServerInfo) -> None:
    """A cross-site form post (text/plain, no preflight) cannot reach a JSON route."""
    body = json.dumps({"content": 'name = "x"'}).encode()
    async with httpx.AsyncClient(base_url=open_server.api_urls[0]) as client:
        for content_type in ("text/plain", "application/x-www-form-urlencoded", None):
            headers = {"Content-Type": content_type} if content_type else {}
            for path in ("/api/v1/agents", "/api/v1/agents/validate", "/api/v1/memory/entities"):
                refused = await client.post(path, content=body, headers=headers)
                error = _error(refused, 415, "UNSUPPORTED_MEDIA_TYPE")
                assert "Content-Type: application/json" in error["message"]
        assert (await client.get("/api/v1/agents")).json()["total"] == 1  # nothing deployed
        checked = await client.post(
            "/api/v1/agents/validate",
            content=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
        )
        assert checked.status_code == 200
        # a route whose body is optional still takes an empty body of any type
        restarted = await client.post("/api/v1/agents/echo/rollback", content=b"")
        assert restarted.status_code != 415


async def test_only_loopback_or_allowed_hosts_are_served(
    start_open: Callable[..., Awaitable[ServerInfo]],
) -> None:
    """DNS rebinding: a page on evil.example resolving to 127.0.0.1 sends Host: evil.example."""
    info = await start_open(server__allowed_hosts=["caxton.internal"])
    port = info.api_urls[0].rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
        for host in ("evil.example", f"evil.example:{port}", "127.0.0.1.evil.example", "[::2]"):
            refused = await client.get("/api/v1/agents", headers={"Host": host})
            error = _error(refused, 421, "HOST_NOT_ALLOWED")
            assert "server.allowed_hosts" in error["message"]
            posted = await client.post(
                "/api/v1/memory/entities", json=ENTITY, headers={"Host": host}
            )
            _error(posted, 421, "HOST_NOT_ALLOWED")
        for host in (
            "localhost",
            f"localhost:{port}",
            "127.0.0.1",
            f"[::1]:{port}",
            "caxton.internal:1",
        ):
            answer = await client.get("/api/v1/agents", headers={"Host": host})
            assert answer.status_code == 200, (host, answer.text)
        # probes answer whatever the Host (container and load-balancer health checks)
        assert (await client.get("/health", headers={"Host": "10.1.2.3"})).status_code == 200
        assert (await client.get("/ready", headers={"Host": "10.1.2.3"})).status_code == 200
    with trio.fail_after(20):
        rebound = await ws_handshake(info.api_urls[0], "/ws/events", {}, host_header="evil.example")
    assert rebound == 421


async def test_foreign_origins_are_refused_on_unsafe_methods_and_websockets(
    open_server: ServerInfo,
) -> None:
    base = open_server.api_urls[0]
    async with httpx.AsyncClient(base_url=base) as client:
        for origin in (EVIL, "null", "http://127.0.0.1:1"):
            refused = await client.post(
                "/api/v1/memory/entities", json=ENTITY, headers={"Origin": origin}
            )
            assert (
                "security.cors.allowed_origins"
                in _error(refused, 403, "ORIGIN_NOT_ALLOWED")["message"]
            )
            deleted = await client.delete("/api/v1/agents/echo", headers={"Origin": origin})
            _error(deleted, 403, "ORIGIN_NOT_ALLOWED")
            restarted = await client.post("/api/v1/agents/echo/restart", headers={"Origin": origin})
            _error(restarted, 403, "ORIGIN_NOT_ALLOWED")
        # reading is fine (the browser's same-origin rule keeps the answer from the page)
        assert (await client.get("/api/v1/agents", headers={"Origin": EVIL})).status_code == 200
        # same origin (a page served by this server) and no Origin (CLI, curl) are fine
        same = await client.post("/api/v1/memory/entities", json=ENTITY, headers={"Origin": base})
        assert same.status_code == 201, same.text
        assert (await client.get("/api/v1/memory/entities/n")).status_code == 200
    with trio.fail_after(30):
        assert await ws_handshake(base, "/ws/events", {"Origin": EVIL}) == 403
        assert await ws_handshake(base, "/ws/agents/echo", {"Origin": EVIL}) == 403
        assert await ws_handshake(base, "/ws/events", {"Origin": "null"}) == 403
        assert await ws_handshake(base, "/ws/events", {}) == 101
        netloc = base.removeprefix("http://")
        own = await ws_handshake(base, "/ws/events", {"Origin": base}, host_header=netloc)
        assert own == 101


async def test_allowed_cors_origins_may_post_and_open_websockets(
    start_open: Callable[..., Awaitable[ServerInfo]],
) -> None:
    info = await start_open(security__cors__allowed_origins=[EVIL])
    async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
        posted = await client.post("/api/v1/memory/entities", json=ENTITY, headers={"Origin": EVIL})
        assert posted.status_code == 201
        assert posted.headers["Access-Control-Allow-Origin"] == EVIL
        other = await client.post(
            "/api/v1/memory/entities", json=ENTITY, headers={"Origin": "https://other.example"}
        )
        _error(other, 403, "ORIGIN_NOT_ALLOWED")
    with trio.fail_after(20):
        assert await ws_handshake(info.api_urls[0], "/ws/events", {"Origin": EVIL}) == 101


def _nested(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth - 1):
        value = [value]
    return value


def _deep_text(depth: int) -> str:
    return "[" * depth + "]" * depth


async def test_deep_or_wide_json_is_a_400_naming_the_limit(open_server: ServerInfo) -> None:
    deep = _deep_text(1000)
    bodies = {
        "/api/v1/agents/validate": '{"content": ' + deep + "}",
        "/api/v1/agents": '{"content": ' + deep + "}",
        "/api/v1/messages": '{"receiver": "echo", "content": {"x": ' + deep + "}}",
        "/api/v1/agents/echo/messages": '{"content": {"x": ' + deep + "}}",
        "/api/v1/memory/entities": '{"entities": ' + deep + "}",
        "/api/v1/memory/import": '{"entities": ' + deep + "}",
        "/api/v1/agents/echo/rollback": '{"version": ' + deep + "}",
        "/api/v1/admin/safe-mode": '{"enabled": ' + deep + "}",
    }
    json_type = {"Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=open_server.api_urls[0], timeout=30) as client:
        for path, body in bodies.items():
            refused = await client.post(path, content=body.encode(), headers=json_type)
            error = _error(refused, 400, "JSON_TOO_COMPLEX")
            assert f"deeper than {MAX_JSON_DEPTH} levels" in error["message"], path
            assert error["details"]["limit"] == "MAX_JSON_DEPTH"
        # just past the bound parses but is refused; at the bound it is an ordinary request
        over = {"receiver": "echo", "content": {"x": _nested(MAX_JSON_DEPTH)}}
        _error(await client.post("/api/v1/messages", json=over), 400, "JSON_TOO_COMPLEX")
        at = {"receiver": "echo", "content": {"x": _nested(MAX_JSON_DEPTH - 2)}}
        assert (await client.post("/api/v1/messages", json=at)).status_code == 200
        wide = {"content": {str(i): i for i in range(MAX_JSON_KEYS + 1)}}
        error = _error(
            await client.post("/api/v1/agents/echo/messages", json=wide), 400, "JSON_TOO_COMPLEX"
        )
        assert str(MAX_JSON_KEYS) in error["message"]
        jsonl = (
            b'{"kind": "metadata", "version": "1.0"}\n{"kind": "entity", "x": '
            + deep.encode()
            + b"}\n"
        )
        imported = await client.post(
            "/api/v1/memory/import", content=jsonl, headers={"Content-Type": "application/x-ndjson"}
        )
        _error(imported, 400, "JSON_TOO_COMPLEX")
        assert (await client.get("/health")).status_code == 200


async def _ws_answer(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.get_message())
    while frame["type"] == "chunk":
        frame = json.loads(await ws.get_message())
    return frame


async def test_websocket_frames_are_parsed_within_bounds_and_never_pose_as_agents(
    open_server: ServerInfo,
) -> None:
    url = open_server.api_urls[0].replace("http://", "ws://") + "/ws/agents/echo"
    with trio.fail_after(30):
        async with open_ws(url) as ws:
            await ws.send_message('{"content": ' + _deep_text(1000) + "}")
            error = await _ws_answer(ws)
            assert (error["type"], error["error"]["code"]) == ("error", "JSON_TOO_COMPLEX")
            await ws.send_message(json.dumps({"content": "hi", "sender": "echo"}))
            posing = await _ws_answer(ws)
            assert (posing["type"], posing["error"]["code"]) == ("error", "FORBIDDEN")
            await ws.send_message(json.dumps({"content": "hi", "sender": "mallory"}))
            done = await _ws_answer(ws)
            assert done["type"] == "done"
    async with httpx.AsyncClient(base_url=open_server.api_urls[0]) as client:
        listed = (await client.get("/api/v1/conversations")).json()
        [conversation] = listed["conversations"]
        shown = (
            await client.get(f"/api/v1/conversations/{conversation['conversation_id']}")
        ).json()
    assert [m["sender"] for m in shown["messages"]] == ["client", "echo"]


async def test_a_frame_over_max_request_size_is_refused_and_never_forwarded(
    start_open: Callable[..., Awaitable[ServerInfo]],
) -> None:
    info = await start_open(server__max_request_size="1MB")
    url = info.api_urls[0].replace("http://", "ws://") + "/ws/agents/echo"
    frame = json.dumps({"content": "x" * 5_000_000})
    closed_with: int | None = None
    with trio.fail_after(60):
        async with open_ws(url) as ws:
            with contextlib.suppress(ConnectionClosed):
                await ws.send_message(frame)
            try:
                answer = await _ws_answer(ws)
            except ConnectionClosed as closed:
                closed_with = closed.reason.code if closed.reason else None
            else:
                assert answer["type"] == "error", answer
    assert closed_with in (None, 1009)
    async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
        assert (await client.get("/api/v1/conversations")).json()["total"] == 0
        performance = (await client.get("/api/v1/agents/performance")).json()["agents"]
    assert all(agent["messages"] == 0 for agent in performance), performance


async def test_websocket_frames_take_rate_limit_tokens(
    start_open: Callable[..., Awaitable[ServerInfo]],
) -> None:
    # explicitly enabled, limits apply to loopback callers too; 6 a minute keeps the bucket
    # from refilling during the test on a slow machine
    info = await start_open(
        security__rate_limiting__enabled=True,
        security__rate_limiting__requests_per_minute=6,
        security__rate_limiting__burst_size=3,
    )
    url = info.api_urls[0].replace("http://", "ws://") + "/ws/agents/echo"
    answers = []
    with trio.fail_after(30):
        async with open_ws(url) as ws:  # the handshake takes one token
            for _ in range(3):
                await ws.send_message(json.dumps({"content": "hi"}))
                answers.append(await _ws_answer(ws))
    assert [a["type"] for a in answers] == ["done", "done", "error"]
    assert answers[2]["error"]["code"] == "RATE_LIMITED"


async def test_rate_limits_apply_without_authentication_when_enabled(
    start_open: Callable[..., Awaitable[ServerInfo]],
) -> None:
    info = await start_open(
        security__rate_limiting__enabled=True,
        security__rate_limiting__requests_per_minute=6,
        security__rate_limiting__burst_size=2,
    )
    async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
        answers = [await client.get("/api/v1/agents") for _ in range(3)]
        assert [a.status_code for a in answers] == [200, 200, 429]
        assert answers[0].headers["X-RateLimit-Limit"] == "6"
        _error(answers[2], 429, "RATE_LIMITED")
        assert int(answers[2].headers["Retry-After"]) >= 1
        assert (await client.get("/health")).status_code == 200
        report = (await client.get("/api/v1/health")).json()
    assert report["security"]["rate_limiting"] is True


async def test_callers_cannot_pose_as_agents(open_server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=open_server.api_urls[0]) as client:
        posing = await client.post(
            "/api/v1/messages", json={"receiver": "echo", "content": "hi", "sender": "echo"}
        )
        assert "echo" in _error(posing, 403, "FORBIDDEN")["message"]
        direct = await client.post(
            "/api/v1/agents/echo/messages", json={"content": "hi", "sender": "echo"}
        )
        _error(direct, 403, "FORBIDDEN")
        labelled = await client.post(
            "/api/v1/messages", json={"receiver": "echo", "content": "hi", "sender": "mallory"}
        )
        assert labelled.status_code == 200
        cid = labelled.json()["conversation_id"]
        forged = await client.post(
            "/api/v1/messages",
            json={
                "receiver": "echo",
                "content": "hi",
                "conversation_id": cid,
                "in_reply_to": "m-that-does-not-exist",
                "performative": "inform",
            },
        )
        assert "in_reply_to" in _error(forged, 403, "FORBIDDEN")["message"]
        shown = (await client.get(f"/api/v1/conversations/{cid}")).json()
        reply = shown["messages"][1]
        answered = await client.post(
            "/api/v1/messages",
            json={
                "receiver": "echo",
                "content": "thanks",
                "conversation_id": cid,
                "in_reply_to": reply["message_id"],
                "performative": "inform",
            },
        )
        assert answered.status_code == 200, answered.text
        shown = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert [m["sender"] for m in shown["messages"]] == ["client", "echo", "client", "echo"]


async def test_early_413s_under_pipelined_sends_log_no_error(
    start_open: Callable[..., Awaitable[ServerInfo]], caplog: pytest.LogCaptureFixture
) -> None:
    """hypercorn's reader closes the connection without its send lock while the 413 goes out."""
    info = await start_open(server__max_request_size=1000)
    host, port = info.api_urls[0].removeprefix("http://").rsplit(":", 1)
    head = (
        b"POST /api/v1/agents/validate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n"
    )
    answers: list[bytes] = []

    async def one() -> None:
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            # the declared body, then another request pipelined after it
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await stream.send_all(head + b"x" * 5000 + head)
                for _ in range(20):
                    await stream.send_all(b"y" * 5000)
            data = b""
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                while chunk := await stream.receive_some(65536):
                    data += chunk
            answers.append(data)

    caplog.set_level(logging.INFO)
    with trio.fail_after(90):
        for _ in range(5):
            async with trio.open_nursery() as nursery:
                for _ in range(40):
                    nursery.start_soon(one)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors[:3]]
    assert any(a.startswith(b"HTTP/1.1 413") for a in answers)
    # hypercorn answers 400 itself when it meets the pipelined bytes before the app answers
    assert all(not a or a.startswith((b"HTTP/1.1 413", b"HTTP/1.1 400")) for a in answers)
    async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
        assert (await client.get("/health")).status_code == 200


async def test_events_socket_frames_take_rate_limit_tokens(
    start_open: Callable[..., Awaitable[ServerInfo]],
) -> None:
    info = await start_open(
        security__rate_limiting__enabled=True,
        security__rate_limiting__requests_per_minute=6,
        security__rate_limiting__burst_size=2,
    )
    url = info.api_urls[0].replace("http://", "ws://") + "/ws/events"
    with trio.fail_after(30):
        async with open_ws(url) as ws:  # the handshake takes one token, the first frame one
            await ws.send_message("ping")
            await ws.send_message("ping")
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert closed.value.reason is not None
    assert closed.value.reason.code == 1008


async def test_an_agent_named_client_never_sees_callers_as_itself(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    copy_echo(agents)
    toml = (agents / "echo.toml").read_text().replace('name = "echo"', 'name = "client"')
    (agents / "client.toml").write_text(toml)
    loaded = loopback_config(tmp_path / "data", server__agents_dir=str(agents))
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
        with trio.fail_after(30):
            while (await client.get("/api/v1/agents")).json()["total"] < 2:
                await trio.sleep(0.1)
        posing = await client.post(
            "/api/v1/messages", json={"receiver": "echo", "content": "hi", "sender": "client"}
        )
        _error(posing, 403, "FORBIDDEN")
        sent = await client.post("/api/v1/messages", json={"receiver": "client", "content": "hi"})
        assert sent.status_code == 200, sent.text
        cid = sent.json()["conversation_id"]
        shown = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert [m["sender"] for m in shown["messages"]] == ["client:anonymous", "client"]
