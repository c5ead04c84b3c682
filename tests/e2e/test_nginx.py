"""packaging/nginx/caxton.conf run by the real nginx on loopback, in front of two real
``caxton start`` processes (embedded backend, each its own data_dir): round robin, the request
id passed through, a WebSocket chat, an SSE stream that is not buffered, the edge's Host rule,
and failover to the survivor when one instance is killed."""

from __future__ import annotations

import json
import re
import shutil
import signal
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import trio
from nginx import CONF, start_nginx
from processes import (
    ServerProcess,
    start_llm_server,
    start_server,
    wait_exit,
    write_config,
)
from wsclient import open_ws

from caxton.config import load_config

if TYPE_CHECKING:
    import contextlib

    from trio_websocket import WebSocketConnection

REPO = Path(__file__).resolve().parents[2]
PUBLIC_NAME = "caxton.example.com"  # the conf's server_name, set in server.allowed_hosts
STORY = "one two three four five six"
CHUNK_DELAY_S = 0.3


async def start_instance(
    nursery: trio.Nursery, folder: Path, agents: Path, servers: list[ServerProcess]
) -> None:
    config = write_config(folder / "caxton.yaml", folder / "data")
    config.write_text(
        config.read_text().replace(
            "server:\n", f"server:\n  agents_dir: {agents}\n  allowed_hosts: [{PUBLIC_NAME}]\n"
        )
    )
    servers.append(await start_server(nursery, "--config", str(config), timeout=60))


def browser_ws(port: int, path: str) -> contextlib.AbstractAsyncContextManager[WebSocketConnection]:
    """A WebSocket through nginx as a page on nginx's origin opens it: Host with the port (as
    browsers send it) and that Origin."""
    origin = f"http://127.0.0.1:{port}"
    return open_ws(f"ws://127.0.0.1:{port}{path}", {"Origin": origin}, host_with_port=True)


def served_ids(server: ServerProcess) -> set[str]:
    return {str(r["request_id"]) for r in server.records if "request_id" in r}


async def sse_arrivals(client: httpx.AsyncClient) -> list[tuple[float, str]]:
    """(arrival time, event) of each SSE frame of a streamed answer, as the client reads it."""
    arrivals = []
    event = ""
    async with client.stream(
        "POST",
        "/api/v1/agents/teller/messages",
        json={"content": "tell me a story"},
        headers={"Accept": "text/event-stream"},
    ) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                arrivals.append((trio.current_time(), event))
    return arrivals


async def test_nginx_balances_streams_and_fails_over(nursery: trio.Nursery, tmp_path: Path) -> None:
    script = tmp_path / "llm.yaml"
    script.write_text(
        f"chunk_delay_s: {CHUNK_DELAY_S}\nrules:\n  - match: story\n    reply: {STORY}\n"
    )
    llm, llm_url = await start_llm_server(nursery, script)
    agents = tmp_path / "agents"  # the same files on every instance
    agents.mkdir()
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO / "agents" / name, agents / name)
    (agents / "teller.toml").write_text(
        'name = "teller"\nversion = "1.0.0"\ncapabilities = ["chat"]\n'
        "system_prompt = '''You are terse.'''\nuser_prompt_template = '''{{request}}'''\n"
        f'[llm]\nprovider = "openai"\nmodel = "scripted-1"\nbase_url = "{llm_url}/v1"\n'
        'max_retries = 0\ntimeout = "10s"\n'
    )
    servers: list[ServerProcess] = []
    async with trio.open_nursery() as starting:
        for index in (1, 2):
            folder = tmp_path / f"caxton-{index}"
            folder.mkdir()
            starting.start_soon(start_instance, nursery, folder, agents, servers)
    first, second = servers

    prefix = tmp_path / "nginx"
    upstreams = [s.api_url.removeprefix("http://").rstrip("/") for s in servers]
    proxy, base = await start_nginx(nursery, prefix, upstreams)
    port = int(base.rsplit(":", 1)[1])
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        # Round robin, the client's X-Request-ID reaching the instance and coming back.
        ids = [f"rr-{index}" for index in range(8)]
        for request_id in ids:
            response = await client.get("/api/v1/agents", headers={"X-Request-ID": request_id})
            assert response.status_code == 200
            assert response.headers["X-Request-ID"] == request_id
            assert {a["name"] for a in response.json()["agents"]} >= {"echo", "teller"}
        with trio.fail_after(5):
            while not set(ids) <= served_ids(first) | served_ids(second):
                await trio.sleep(0.05)
        assert len(set(ids) & served_ids(first)) == 4
        assert len(set(ids) & served_ids(second)) == 4
        # Without one, nginx makes the id: the same in the response and the instance's log.
        made = (await client.get("/api/v1/health")).headers["X-Request-ID"]
        assert re.fullmatch(r"[0-9a-f]{32}", made)
        with trio.fail_after(5):
            while made not in served_ids(first) | served_ids(second):
                await trio.sleep(0.05)

        # The public name is served because server.allowed_hosts lists it; others get 421.
        public = await client.get("/api/v1/agents", headers={"Host": PUBLIC_NAME})
        assert public.status_code == 200
        foreign = await client.get("/api/v1/agents", headers={"Host": "rebound.example"})
        assert foreign.status_code == 421
        # A browser page on the proxy's own origin may POST (the Host keeps nginx's port).
        same_origin = await client.post(
            "/api/v1/agents/echo/messages", json={"content": "hi"}, headers={"Origin": base}
        )
        assert same_origin.status_code == 200, same_origin.text
        # With HTTPS ended at nginx, Caxton sees http: an https page needs allowed_origins.
        secure_page = await client.post(
            "/api/v1/agents/echo/messages",
            json={"content": "hi"},
            headers={"Origin": base.replace("http://", "https://")},
        )
        assert secure_page.status_code == 403, secure_page.text

        # A streamed answer arrives chunk by chunk, as the agent produces it.
        arrivals = await sse_arrivals(client)
        events = [event for _, event in arrivals]
        assert events == ["chunk"] * len(STORY.split()) + ["done"]
        spread = arrivals[-2][0] - arrivals[0][0]
        assert spread >= CHUNK_DELAY_S * (len(STORY.split()) - 1) * 0.6, arrivals

    # A WebSocket chat through nginx, from a page on the proxy's origin.
    with trio.fail_after(10):
        async with browser_ws(port, "/ws/agents/echo") as ws:
            for text in ("hello through nginx", "and again"):
                await ws.send_message(json.dumps({"content": text}))
                chunks = []
                while True:
                    frame = json.loads(await ws.get_message())
                    if frame["type"] != "chunk":
                        break
                    chunks.append(frame["text"])
                assert frame["type"] == "done", frame
                assert text in json.dumps(frame["message"]["content"])  # the message, echoed
                assert chunks

    # One instance killed (SIGKILL) while 8 clients send GETs: nginx moves them to the
    # survivor. Only a GET the killed instance had begun to answer (its headers already passed
    # on to the client) can fail, at most one per client; every GET begun after the kill, and
    # every answer, is a 200.
    killed = trio.Event()
    answered: list[tuple[bool, int]] = []  # (begun after the kill, status)
    cut_short = 0
    async with httpx.AsyncClient(base_url=base, timeout=15) as client:

        async def keep_asking(stop: trio.Event) -> None:
            nonlocal cut_short
            while not stop.is_set():
                after_kill = killed.is_set()
                try:
                    response = await client.get("/api/v1/agents")
                except httpx.TransportError:
                    assert not after_kill
                    cut_short += 1
                    continue
                answered.append((after_kill, response.status_code))

        stop = trio.Event()
        async with trio.open_nursery() as load:
            for _ in range(8):
                load.start_soon(keep_asking, stop)
            await trio.sleep(0.5)
            first.process.send_signal(signal.SIGKILL)
            await wait_exit(first.process)
            killed.set()
            await trio.sleep(0.5)
            stop.set()
        assert {status for _, status in answered} == {200}
        assert sum(1 for after_kill, _ in answered if after_kill) >= 8
        assert cut_short <= 8, cut_short
        after = [f"after-kill-{index}" for index in range(10)]
        for request_id in after:
            response = await client.get("/api/v1/agents", headers={"X-Request-ID": request_id})
            assert response.status_code == 200, response.text
        with trio.fail_after(5):
            while not set(after) <= served_ids(second):
                await trio.sleep(0.05)

    # nginx holds no idle connection open: the instance drains and exits at once, not after
    # server.shutdown_timeout (10 s here).
    second.process.send_signal(signal.SIGTERM)
    assert await wait_exit(second.process, timeout=5) == 0
    proxy.send_signal(signal.SIGQUIT)  # graceful stop
    assert await wait_exit(proxy) == 0
    llm.send_signal(signal.SIGTERM)
    await wait_exit(llm)
    log = (prefix / "error.log").read_text()
    assert "[emerg]" not in log
    # The killed instance failed, then nginx left it out (max_fails=3 fail_timeout=30s).
    assert f'upstream: "http://{upstreams[0]}/' in log
    assert "upstream server temporarily disabled" in log or "connect() failed (111" in log


def location(conf: str, opening: str) -> str:
    block = re.search(rf"^\s*location {re.escape(opening)} \{{(.*?)^\s*\}}", conf, re.M | re.S)
    assert block is not None, opening
    return block.group(1)


def test_the_conf_keeps_the_guides_failover_and_adds_what_it_forgets() -> None:
    conf = CONF.read_text()
    assert re.search(r"^upstream caxton_backend \{", conf, re.M)
    assert "proxy_next_upstream error timeout http_500 http_502 http_503;" in conf
    assert "proxy_pass http://caxton_backend;" in location(conf, "/api/v1/")
    # The largest body nginx lets through is the largest Caxton accepts by default.
    size = re.search(r"^\s*client_max_body_size (\d+);", conf, re.M)
    assert size is not None
    assert int(size.group(1)) == load_config(None, environ={}).config.server.max_request_size
    # WebSockets: HTTP/1.1 with the upgrade headers, and an idle stream is not cut at 30s.
    assert "proxy_http_version 1.1;" in conf
    assert "proxy_set_header Upgrade $http_upgrade;" in conf
    assert "proxy_set_header Connection $caxton_connection;" in conf
    assert not re.search(r"^\s*keepalive ", conf, re.M)  # it would hold a stopping instance
    websockets = location(conf, "/ws/")
    assert "proxy_read_timeout 1h;" in websockets
    # Streamed answers (SSE messages, logs?follow=true) are passed on unbuffered.
    streams = location(conf, "~ ^/api/v1/agents/[^/]+/(messages|logs)$")
    assert "proxy_buffering off;" in streams
    assert "proxy_read_timeout 1h;" in streams
    assert "add_header X-Accel-Buffering no;" in streams
    for header in ("Host $http_host", "X-Forwarded-For", "X-Forwarded-Proto", "X-Request-ID"):
        assert f"proxy_set_header {header}" in conf, header
    # What Caxton's edge needs is said where an operator reads it.
    assert "server.allowed_hosts" in conf
    assert "security.cors.allowed_origins" in conf
