"""A second Caxton (a real ``caxton start`` process on port 0, authentication on) as the
remote A2A agent of a first one (issue #19): its agents become capability providers in the
first one's router, reached from ``POST /api/v1/messages``, from a WASM agent's
``send_message`` and over SSE, with the same failure replies when a remote is down or
refuses."""

from __future__ import annotations

import functools
import json
import secrets
import shutil
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from processes import REPO, caxton_env, start_server, write_config
from servers import COUNT_BY_CAPABILITY, load_llm_server, loopback_config, planner_toml

from caxton.security.keys import KeyEntry, KeyRing, generate_key, hash_key, write_key_file
from caxton.security.roles import Role
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

pytestmark = pytest.mark.slow


def copy_agent(agents: Path, name: str, module: str) -> None:
    agents.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "agents" / f"{name}.toml", agents / f"{name}.toml")
    shutil.copy(REPO / "agents" / module, agents / module)


async def closed_port() -> int:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port: int = listener.getsockname()[1]
    listener.close()
    return port


async def wait_for(client: httpx.AsyncClient, path: str, ready: Any, timeout: float = 15) -> Any:
    with trio.fail_after(timeout):
        while True:
            response = await client.get(path)
            if response.status_code == 200 and ready(response.json()):
                return response.json()
            await trio.sleep(0.05)


async def test_a_second_caxton_is_a_remote_a2a_agent(nursery: trio.Nursery, tmp_path: Path) -> None:
    # B: a real server process with authentication on, serving wordcount and echo over A2A
    remote_dir = tmp_path / "b"
    copy_agent(remote_dir / "agents", "wordcount", "wordcount.wasm")
    copy_agent(remote_dir / "agents", "echo", "echo.wat")
    key = generate_key()
    write_key_file(
        remote_dir / "api-keys.yaml",
        KeyRing((KeyEntry(name="caxton-a", role=Role.USER, hash=hash_key(key)),)),
    )
    secret = remote_dir / "jwt-secret"
    secret.write_text(secrets.token_hex(32) + "\n")
    secret.chmod(0o600)
    config = write_config(
        remote_dir / "caxton.yaml",
        remote_dir / "data",
        "security:\n"
        "  authentication:\n"
        "    enabled: true\n"
        f"    jwt_secret_file: {secret}\n"
        "  api_keys:\n"
        "    required: true\n"
        f"    key_file: {remote_dir / 'api-keys.yaml'}\n",
    )
    config.write_text(
        config.read_text().replace(
            "  port: 0\n", f"  port: 0\n  agents_dir: {remote_dir / 'agents'}\n"
        )
    )
    b = await start_server(nursery, "--config", str(config), env=caxton_env())
    b_url = b.api_url

    # A: in this process, with B's agents as remote agents (and two that cannot work)
    agents = tmp_path / "a" / "agents"
    copy_agent(agents, "asker", "asker.wasm")
    down = await closed_port()
    # a config agent whose (scripted) model asks text-statistics with send_message
    llm = await nursery.start(load_llm_server().serve_llm, COUNT_BY_CAPABILITY)
    (agents / "planner.toml").write_text(planner_toml(llm.url))

    def card(agent: str) -> str:
        return f"{b_url}/a2a/{agent}/.well-known/agent-card.json"

    remotes = [
        # answered through SendMessage (b-echo streams, through SendStreamingMessage)
        {
            "name": "b-wordcount",
            "card_url": card("wordcount"),
            "api_key": key,
            "streaming": False,
        },
        {"name": "b-echo", "card_url": card("echo"), "api_key": key, "timeout": "10s"},
        {"name": "b-nokey", "card_url": card("echo"), "capabilities": ["unauthorised"]},
        {
            "name": "b-down",
            "card_url": f"http://127.0.0.1:{down}/a2a/x/.well-known/agent-card.json",
            "capabilities": ["never-there"],
        },
    ]
    loaded = loopback_config(
        tmp_path / "a" / "data",
        server__agents_dir=str(agents),
        a2a__remote_agents=remotes,
        a2a__card_refresh="2s",
    )
    a: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))

    async with httpx.AsyncClient(base_url=a.api_urls[0], timeout=30) as client:
        # the remote's skills are capabilities in A's router
        listed = (await client.get("/api/v1/a2a/remote-agents")).json()["remote_agents"]
        states = {r["name"]: r for r in listed}
        assert states["b-wordcount"]["status"] == "running"
        assert states["b-wordcount"]["capabilities"] == ["text-statistics"]
        assert states["b-echo"]["streaming"] is True
        assert states["b-down"]["status"] == "failed"
        assert "cannot read the card" in states["b-down"]["error"]
        capability = (await client.get("/api/v1/capabilities/text-statistics")).json()
        assert [(p["agent"], p["healthy"]) for p in capability["providers"]] == [
            ("b-wordcount", True)
        ]

        # POST /api/v1/messages by capability reaches B's wordcount over A2A
        routed = await client.post(
            "/api/v1/messages",
            json={"capability": "text-statistics", "content": "one two three"},
        )
        assert routed.status_code == 200, routed.text
        reply = routed.json()
        assert reply["sender"] == "b-wordcount"
        assert reply["content"]["words"] == 3

        # a WASM agent's send_message reaches it too (asker asks text-statistics)
        asked = await client.post("/api/v1/agents/asker/messages", json={"content": "a b c d"})
        assert asked.status_code == 200, asked.text
        conversation_id = asked.json()["conversation_id"]
        conversation = await wait_for(
            client,
            f"/api/v1/conversations/{conversation_id}",
            lambda c: c["message_count"] >= 5,
        )
        final = conversation["messages"][-1]
        assert (final["sender"], final["receiver"]) == ("asker", "client")
        prefix = "text-statistics answered: "
        assert final["content"].startswith(prefix)
        assert json.loads(final["content"].removeprefix(prefix))["words"] == 4
        assert "b-wordcount" in conversation["participants"]

        # a config agent's send_message tool reaches it as well
        planned = await client.post(
            "/api/v1/agents/planner/messages", json={"content": "count these words"}
        )
        assert planned.status_code == 200, planned.text
        assert planned.json()["content"] == "Four words."
        shown = await client.get(f"/api/v1/conversations/{planned.json()['conversation_id']}")
        answer = shown.json()["messages"][2]
        assert (answer["sender"], answer["receiver"]) == ("b-wordcount", "planner")
        assert answer["content"]["words"] == 4

        # streaming: B's echo streams its two chunks through A2A to A's SSE client
        frames = []
        async with client.stream(
            "POST",
            "/api/v1/agents/b-echo/messages",
            json={"content": "stream me"},
            headers={"Accept": "text/event-stream"},
        ) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                if line.startswith("data: "):
                    frames.append(json.loads(line.removeprefix("data: ")))
        assert [f["type"] for f in frames] == ["chunk", "chunk", "done"]
        streamed = json.loads("".join(f["text"] for f in frames[:2]))
        assert streamed["content"] == "stream me"
        assert streamed["sender"] == "client:caxton-a"  # B saw A's credential
        assert frames[-1]["message"]["sender"] == "b-echo"

        # a remote that refuses the credential, and one that is down: clear failures
        refused = await client.post(
            "/api/v1/messages", json={"receiver": "b-nokey", "content": "hi"}
        )
        assert refused.status_code == 200  # a failure reply, as from any agent
        assert refused.json()["performative"] == "failure"
        error = refused.json()["content"]["error"]
        assert error["code"] == "REMOTE_AGENT_FAILED"
        assert "answered HTTP 401" in error["message"]
        assert "check the api_key / bearer_token of b-nokey" in error["message"]
        gone = await client.post("/api/v1/messages", json={"receiver": "b-down", "content": "hi"})
        error = gone.json()["content"]["error"]
        assert error["code"] == "REMOTE_AGENT_UNAVAILABLE"
        assert f"127.0.0.1:{down}" in error["message"]
        # the direct route reports the agent's error as an HTTP error
        direct = await client.post("/api/v1/agents/b-down/messages", json={"content": "hi"})
        assert direct.status_code == 503
        assert direct.json()["error"]["code"] == "REMOTE_AGENT_UNAVAILABLE"

        # B recorded the exchange in a conversation of its own, from A's key
        async with httpx.AsyncClient(base_url=b_url, headers={"X-API-Key": key}) as b_client:
            b_conversations = (await b_client.get("/api/v1/conversations")).json()
            assert b_conversations["total"] >= 4
            # the hop count crossed over: the planner's question was one hop from a client
            for summary in b_conversations["conversations"]:
                path = f"/api/v1/conversations/{summary['conversation_id']}"
                first = (await b_client.get(path)).json()["messages"][0]
                if first["content"] == "one two three four":
                    assert (first["sender"], first["hop"]) == ("client:caxton-a", 1)
                    break
            else:
                raise AssertionError("B has no conversation with the planner's question")

        # the calls are counted per remote agent and outcome
        async with httpx.AsyncClient() as scraper:
            metrics = (await scraper.get(str(a.metrics_url))).text
        assert 'caxton_a2a_remote_calls_total{agent="b-wordcount",outcome="ok"} 3.0' in metrics
        assert 'agent="b-nokey",outcome="REMOTE_AGENT_FAILED"' in metrics

    # A first: its remote agents' connections to B close with it
    a.stop()
    with trio.fail_after(15):
        await a.services.lifecycle.stopped.wait()
        b.process.terminate()
        assert await b.process.wait() == 0
