"""Remote A2A agents that misbehave (issue #19): a card that is not JSON, too large, too slow,
or that points its interface at another origin; an endpoint that answers garbage, hangs, or
answers too much. Each becomes a clear state or failure reply; nothing else is disturbed.

The misbehaving remote is a raw HTTP server on loopback (the seam the outside world owns)."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import TYPE_CHECKING, Any

import httpx
import trio
from a2a_servers import write_agents
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path


def card(base: str, mode: str, *, interface: str | None = None) -> dict[str, Any]:
    return {
        "name": mode,
        "description": "misbehaves",
        "version": "1.0.0",
        "supportedInterfaces": [
            {
                "url": interface or f"{base}/rpc/{mode}",
                "protocolBinding": "JSONRPC",
                "protocolVersion": "1.0",
            }
        ],
        "capabilities": {"streaming": False},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{"id": f"{mode}-skill", "name": mode, "description": "x", "tags": ["x"]}],
    }


async def serve_hostile(
    nursery: trio.Nursery, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED
) -> None:
    """Answers by path: ``/cards/<mode>`` and ``/rpc/<mode>``; ``Connection: close``."""
    base = ""

    async def answer(stream: trio.SocketStream) -> None:
        data = b""
        with trio.move_on_after(10):
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            path = head.split(b" ")[1].decode()
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            while len(body) < length:
                body += await stream.receive_some(65536)
            payload = _payload(base, path)
            if payload is None:  # hang
                await trio.sleep_forever()
            # Caxton may hang up once it has read as much as it accepts: expected.
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: "
                    + str(len(payload)).encode()
                    + b"\r\n\r\n"
                    + payload
                )
        await stream.aclose()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, answer, 0, host="127.0.0.1"))
    port = listeners[0].socket.getsockname()[1]
    base = f"http://127.0.0.1:{port}"
    task_status.started(base)


def _payload(base: str, path: str) -> bytes | None:
    mode = path.rsplit("/", 1)[-1]
    if path.startswith("/cards/"):
        if mode == "not-json":
            return b"<html>hello</html>"
        if mode == "huge-card":
            return json.dumps({**card(base, mode), "description": "x" * 200_000}).encode()
        if mode == "slow-card":
            return None
        if mode == "foreign":
            return json.dumps(card(base, mode, interface="http://127.0.0.1:9/rpc")).encode()
        return json.dumps(card(base, mode)).encode()
    if mode == "garbage":
        return b'{"jsonrpc": "2.0", "id": 1, "result": [1, 2, 3]}'
    if mode == "hang":
        return None
    if mode == "huge-answer":
        text = "y" * 200_000
        return json.dumps(
            {"jsonrpc": "2.0", "id": 1, "result": {"message": {"parts": [{"text": text}]}}}
        ).encode()
    return b"{}"


async def test_misbehaving_remotes_fail_clearly(nursery: trio.Nursery, tmp_path: Path) -> None:
    base = await nursery.start(serve_hostile, nursery)
    write_agents(tmp_path / "agents")

    def remote(name: str, **extra: object) -> dict[str, object]:
        return {"name": name, "card_url": f"{base}/cards/{name}", "timeout": "1s", **extra}

    remotes = [
        remote("not-json"),
        remote("huge-card"),
        remote("slow-card"),
        remote("foreign", api_key="must-not-leak"),
        remote("garbage"),
        remote("hang"),
        remote("huge-answer"),
    ]
    loaded = loopback_config(
        tmp_path / "data",
        server__agents_dir=str(tmp_path / "agents"),
        a2a__remote_agents=remotes,
        a2a__max_response_size="64KB",
    )
    server: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
        listed = (await client.get("/api/v1/a2a/remote-agents")).json()["remote_agents"]
        states = {r["name"]: r for r in listed}
        assert states["not-json"]["status"] == "failed"
        assert "not an A2A agent card" in states["not-json"]["error"]
        assert "max_response_size" in states["huge-card"]["error"]
        assert "did not come within 1s" in states["slow-card"]["error"]
        assert "no JSON-RPC A2A 1.x interface on its own origin" in states["foreign"]["error"]
        for name in ("garbage", "hang", "huge-answer"):
            assert states[name]["status"] == "running", states[name]
            assert states[name]["capabilities"] == [f"{name}-skill"]

        async def ask(name: str) -> dict[str, Any]:
            reply = await client.post("/api/v1/messages", json={"receiver": name, "content": "hi"})
            assert reply.status_code == 200, reply.text
            assert reply.json()["performative"] == "failure"
            error: dict[str, Any] = reply.json()["content"]["error"]
            return error

        garbage = await ask("garbage")
        assert garbage["code"] == "REMOTE_AGENT_FAILED"
        hang = await ask("hang")
        assert hang["code"] == "TIMEOUT"
        assert "within 1s" in hang["message"]
        huge = await ask("huge-answer")
        assert huge["code"] == "REMOTE_AGENT_FAILED"
        assert "max_response_size" in huge["message"]
        unreadable = await ask("not-json")
        assert unreadable["code"] == "REMOTE_AGENT_UNAVAILABLE"

        # nothing else is disturbed: local agents answer, the server is healthy
        echo = await client.post("/api/v1/agents/echo/messages", json={"content": "still here"})
        assert echo.status_code == 200
        assert echo.json()["content"]["content"] == "still here"
        assert (await client.get("/ready")).status_code == 200
