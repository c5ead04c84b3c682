"""The HTTP surface of a server running in this process, over real loopback sockets."""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from servers import read_response_head

from caxton.http.app import create_app

if TYPE_CHECKING:
    from caxton.server import ServerInfo


def _split(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split("/")[0].rsplit(":", 1)
    return host, int(port)


async def test_health_ready_and_report(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        assert (await client.get("/health")).json() == {"status": "ok"}
        ready = await client.get("/ready")
        assert ready.status_code == 200
        report = (await client.get("/api/v1/health")).json()
    assert report["status"] == "healthy"
    assert report["version"]
    assert report["uptime_seconds"] >= 0
    assert {c["name"]: c["state"] for c in report["components"]} == {
        "metrics": "running",
        "store": "running",
        "embedder": "running",
        "memory": "running",
        "wasm": "running",
        "llm": "running",
        "registry": "running",
        "conversations": "running",
        "a2a_remote_agents": "running",
        "router": "running",
        "a2a": "running",
        "maintenance": "running",
        "memory_maintenance": "running",
        "mcp_clients": "running",
        "watcher": "running",
        "http": "running",
    }


async def test_the_console_files_are_cached_for_good_and_the_page_revalidated(
    server: ServerInfo,
) -> None:
    """A reload asks for the page alone: the files it names carry this server's release and
    never change; a file named without it (or under an older release) is revalidated."""
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        page = await client.get("/ui")
        (main,) = re.findall(r'src="(/ui/v/[0-9a-f]+/js/main\.js)"', page.text)
        released = await client.get(main)
        imported = await client.get(main.replace("js/main.js", "js/pages/agents.js"))
        plain = await client.get("/ui/js/main.js")
        older = await client.get("/ui/v/0123456789abcdef/js/main.js")
        prefixed_page = await client.get(main.replace("js/main.js", "index.html"))
        again = await client.get("/ui", headers={"If-None-Match": page.headers["ETag"]})
        long = await client.get("/ui/v/" + "a" * 64 + "/" + "x" * 4000)
    assert page.headers["Cache-Control"] == "no-cache"
    for cached in (released, imported):
        assert cached.status_code == 200
        assert cached.headers["Cache-Control"] == "public, max-age=31536000, immutable"
        assert "default-src 'self'" in cached.headers["Content-Security-Policy"]
    for revalidated in (plain, older):
        assert revalidated.status_code == 200
        assert revalidated.headers["Cache-Control"] == "no-cache"
        assert revalidated.content == released.content
    assert prefixed_page.status_code == 404
    assert again.status_code == 304
    assert long.status_code == 404
    assert len(long.text) < 1000  # the name is cut in the message and its details


async def test_ready_is_503_while_stopping(server: ServerInfo) -> None:
    server.stop()
    # hypercorn stops accepting; an already-open connection can still ask
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        try:
            response = await client.get("/ready")
        except httpx.TransportError:
            return  # the listener already closed: not ready either
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "SERVICE_UNAVAILABLE"


async def test_unknown_route_and_wrong_method_use_the_envelope(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        missing = await client.get("/api/v1/nothing-here")
        wrong = await client.delete("/api/v1/health")
    assert missing.status_code == 404
    error = missing.json()["error"]
    assert set(error) == {"code", "message", "details", "request_id"}
    assert error["code"] == "NOT_FOUND"
    assert error["request_id"] == missing.headers["X-Request-ID"]
    assert wrong.status_code == 405
    assert wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
    assert "GET" in wrong.json()["error"]["details"]["allowed_methods"]


async def test_request_id_is_honoured_or_generated(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        mine = await client.get("/health", headers={"X-Request-ID": "trace-42"})
        theirs = await client.get("/health", headers={"X-Request-ID": "bad id\twith spaces"})
        none = await client.get("/health")
    assert mine.headers["X-Request-ID"] == "trace-42"
    assert theirs.headers["X-Request-ID"] != "bad id\twith spaces"
    assert len(none.headers["X-Request-ID"]) == 32


async def test_body_over_the_limit_is_413_and_closes(server: ServerInfo) -> None:
    limit = server.services.config.server.max_request_size
    host, port = _split(server.api_urls[0])
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(
                b"POST /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Request-ID: big-1\r\n"
                + f"Content-Length: {limit + 1}\r\n\r\n".encode()
            )
            raw = b""
            while chunk := await stream.receive_some(65536):
                raw += chunk  # the server closes the connection after answering
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413")
    assert b"connection: close" in head.lower()
    error = json.loads(body)["error"]
    assert error["code"] == "PAYLOAD_TOO_LARGE"
    assert error["request_id"] == "big-1"
    assert error["details"]["max_request_size"] == limit


async def test_early_answer_before_body_keeps_connection_usable(server: ServerInfo) -> None:
    """DESIGN §11: hypercorn's trio worker hangs the next request unless the body is drained."""
    host, port = _split(server.api_urls[0])
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:
            await stream.send_all(
                b"POST /api/v1/no-such-route HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
            )
            await trio.sleep(0.3)  # the 404 is decided before the body arrives
            await stream.send_all(b"0123456789")
            first = await read_response_head(stream)
            assert first.startswith(b"HTTP/1.1 404")
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            with trio.fail_after(3):
                second = await read_response_head(stream)
            assert second.startswith(b"HTTP/1.1 200")


async def test_openapi_covers_every_route(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        document = (await client.get("/api/v1/openapi.json")).json()
    assert document["openapi"].startswith("3.1")
    app = create_app(server.services)
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint == "static":
            continue
        path = rule.rule.replace("<", "{").replace(">", "}")
        assert path in document["paths"], f"{rule.rule} is missing from openapi.json"
        methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
        for method in methods:
            operation = document["paths"][path][method.lower()]
            assert operation["summary"]
            assert operation["x-caxton-role"] in {"public", "readonly", "user", "operator", "admin"}
            checked += 1
    assert checked >= 5


async def test_metrics_endpoint(server: ServerInfo) -> None:
    assert server.metrics_url is not None
    async with httpx.AsyncClient() as client:
        await client.get(f"{server.api_urls[0]}/health")
        text = (await client.get(server.metrics_url)).text
        missing = await client.get(server.metrics_url.replace("/metrics", "/other"))
    for name in (
        "caxton_server_uptime_seconds",
        "caxton_server_memory_usage_bytes",
        "caxton_server_restarts_total",
    ):
        assert f"\n{name} " in text, name
    rss = next(line for line in text.splitlines() if line.startswith("caxton_server_memory"))
    assert float(rss.split()[1]) > 10_000_000
    assert (
        'caxton_http_request_duration_seconds_count{method="GET",route="/health",status="200"}'
        in text
    )
    assert "_created" not in text
    assert missing.status_code == 404


async def test_events_websocket_closes_with_1001_on_stop(server: ServerInfo) -> None:
    from trio_websocket import ConnectionClosed
    from wsclient import open_ws

    from caxton.events import Event

    url = server.api_urls[0].replace("http://", "ws://") + "/ws/events"
    with trio.fail_after(10):
        async with open_ws(url) as ws:
            while not server.services.events.statistics()["subscribers"]:
                await trio.sleep(0.01)
            server.services.events.publish(Event(type="agent_deployed", agent="echo"))
            frame = json.loads(await ws.get_message())
            assert frame["type"] == "agent_deployed"
            assert frame["agent"] == "echo"
            assert set(frame) == {"type", "agent", "data", "timestamp"}
            server.stop()
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1001
