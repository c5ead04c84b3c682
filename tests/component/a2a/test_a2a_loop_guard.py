"""The loop guard holds across A2A (issue #19): a server whose remote A2A agent is its own
``asker`` (which forwards every text to whoever provides ``text-statistics``, here that remote
agent) loops through A2A until the hop count, carried in ``metadata.caxtonHop``, passes
``messaging.max_hops``; then the send is refused and the loop ends."""

from __future__ import annotations

import functools
import shutil
from typing import TYPE_CHECKING

import httpx
import trio
from servers import REPO, loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path


async def free_port() -> int:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    listener.close()
    return port


async def test_a_loop_through_a2a_stops_at_the_hop_limit(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("asker.toml", "asker.wasm"):
        shutil.copy(REPO / "agents" / name, agents / name)
    port = await free_port()
    myself = {
        "name": "asker-again",
        "card_url": f"http://127.0.0.1:{port}/a2a/asker/.well-known/agent-card.json",
        "capabilities": ["text-statistics"],  # the asker asks text-statistics: itself
        "timeout": "5s",
    }
    loaded = loopback_config(
        tmp_path / "data",
        server__port=port,
        server__agents_dir=str(agents),
        a2a__remote_agents=[myself],
        a2a__card_refresh="1s",  # its card is read before the API listens: again, soon
    )
    server: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
        with trio.fail_after(10):
            while True:
                remotes = (await client.get("/api/v1/a2a/remote-agents")).json()
                if remotes["remote_agents"][0]["status"] == "running":
                    break
                await trio.sleep(0.05)
        first = await client.post("/api/v1/agents/asker/messages", json={"content": "loop"})
        assert first.status_code == 200, first.text
        with trio.fail_after(20):
            while True:
                logs = (await client.get("/api/v1/agents/asker/logs")).json()
                lines = [line["message"] for line in logs["lines"]]
                if any("hops (a loop?)" in line for line in lines):
                    break
                await trio.sleep(0.05)
        # the loop ran through A2A, hop after hop, and stopped: 8 hops, 8 A2A tasks
        with trio.fail_after(10):
            while True:
                metrics = (await client.get(str(server.metrics_url))).text
                sent = [
                    line
                    for line in metrics.splitlines()
                    if line.startswith('caxton_a2a_requests_total{method="SendStreamingMessage"')
                ]
                if sent and sent[0].endswith(" 8.0"):
                    break
                await trio.sleep(0.05)
        await trio.sleep(0.5)  # nothing more comes: the loop is over
        metrics = (await client.get(str(server.metrics_url))).text
        assert sent[0] in metrics
        assert (await client.get("/ready")).status_code == 200
