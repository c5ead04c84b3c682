"""Two real ``caxton start`` processes on one PostgreSQL share their state (issue #15).

Each instance has its own data_dir and port; both read the same agents_dir files (as a
ConfigMap gives every pod the same files). What one instance changes, the other serves or
refuses within a second, pushed by LISTEN/NOTIFY: agents deployed, updated, canaried,
promoted, rolled back and removed; memory; a conversation with a config agent; safe mode; and
both are listed by ``GET /api/v1/cluster`` and ``caxton cluster status``.
"""

from __future__ import annotations

import json
import shutil
import signal
import socket
from typing import TYPE_CHECKING, Any

import httpx
import trio
from processes import (
    REPO,
    caxton_env,
    probe,
    run_cli_async,
    start_server,
    wait_exit,
    write_config,
)
from servers import load_llm_server
from wsclient import open_ws

if TYPE_CHECKING:
    from pathlib import Path

    from processes import ServerProcess

#: The issue's bound on a change made through one instance reaching the other.
PROPAGATION_S = 1.0
#: How old another instance's memory totals may be when looked at (MemoryService's default).
COUNTS_REFRESH_S = 5.0


async def start_instance(
    nursery: trio.Nursery, folder: Path, agents: Path, url: str
) -> ServerProcess:
    config = write_config(
        folder / "caxton.yaml",
        folder / "data",
        "storage:\n  backend: postgres\n  postgres:\n    url: ${CAXTON_DATABASE_URL}\n",
    )
    config.write_text(
        config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n", 1)
    )
    return await start_server(
        nursery,
        "--config",
        str(config),
        env=caxton_env(CAXTON_DATABASE_URL=url),
        timeout=60,
    )


async def within(seconds: float, check: Any) -> float:
    """Poll ``await check()`` until it is true; how long it took (fails past ``seconds``)."""
    started = trio.current_time()
    with trio.fail_after(seconds):
        while not await check():
            await trio.sleep(0.01)
    return trio.current_time() - started


async def test_two_instances_share_agents_memory_conversations_and_safe_mode(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    llm_module = load_llm_server()
    llm = await nursery.start(
        llm_module.serve_llm, {"rules": [{"match": "again", "reply": "second answer"}]}
    )
    agents = tmp_path / "agents"  # the same files on both instances
    agents.mkdir()
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO / "agents" / name, agents / name)
    (agents / "assistant.toml").write_text(
        'name = "assistant"\nversion = "1.0.0"\ncapabilities = ["chat"]\n'
        "system_prompt = '''You are terse.'''\nuser_prompt_template = '''{{request}}'''\n"
        f'[llm]\nprovider = "openai"\nmodel = "scripted-1"\nbase_url = "{llm.url}/v1"\n'
        'max_retries = 0\ntimeout = "10s"\n'
    )
    instances: list[ServerProcess] = []
    for index in (1, 2):  # one after the other: the first migrates, the second finds it done
        folder = tmp_path / f"caxton-{index}"
        folder.mkdir()
        instances.append(await start_instance(nursery, folder, agents, postgres_url))
    a_server, b_server = instances
    a_url, b_url = a_server.api_url, b_server.api_url

    async with (
        httpx.AsyncClient(base_url=a_url, timeout=30) as a,
        httpx.AsyncClient(base_url=b_url, timeout=30) as b,
    ):

        async def b_serves(version: str | None) -> bool:
            view = await b.get("/api/v1/agents/probe")
            if version is None:
                return view.status_code == 404
            return view.status_code == 200 and view.json()["version"] == version

        # -- agents: every change through A serves (or stops) on B within a second, and B's
        # event stream says so
        async with open_ws(f"{b_url.replace('http', 'ws', 1)}/ws/events") as events:
            deployed = await a.post("/api/v1/agents", json=probe("1.0.0"))
            assert deployed.status_code == 201, deployed.text
            assert await within(PROPAGATION_S, lambda: b_serves("1.0.0")) < PROPAGATION_S
            with trio.fail_after(PROPAGATION_S):
                while True:
                    event = json.loads(await events.get_message())
                    if event["agent"] == "probe" and event["type"] == "agent_deployed":
                        break
        reply = await b.post("/api/v1/agents/probe/messages", json={"content": "hi"})
        assert reply.status_code == 200, reply.text
        assert reply.json()["content"] == "probe 1.0.0"

        # a restart through A restarts B's copy too (nothing stored changes: a notice)
        before = (await b.get("/api/v1/agents/probe")).json()["last_reload"]["at"]
        restarted = await a.post("/api/v1/agents/probe/restart")
        assert restarted.status_code == 200, restarted.text

        async def b_restarted() -> bool:
            view = (await b.get("/api/v1/agents/probe")).json()
            return bool(view["last_reload"]["at"] != before and view["status"] == "running")

        await within(PROPAGATION_S, b_restarted)

        updated = await a.put("/api/v1/agents/probe", json=probe("1.1.0"))
        assert updated.status_code == 200, updated.text
        await within(PROPAGATION_S, lambda: b_serves("1.1.0"))

        canary = await a.post(
            "/api/v1/agents/probe/canary", json={"version": "1.0.0", "traffic_percentage": 25}
        )
        assert canary.status_code == 200, canary.text

        async def b_canary(expected: Any) -> bool:
            view = (await b.get("/api/v1/agents/probe")).json()
            canary = view["canary"]
            seen = None if canary is None else (canary["version"], canary["traffic_percentage"])
            return bool(seen == expected)

        await within(PROPAGATION_S, lambda: b_canary(("1.0.0", 25.0)))
        promoted = await a.post("/api/v1/agents/probe/promote")
        assert promoted.status_code == 200, promoted.text
        await within(PROPAGATION_S, lambda: b_serves("1.0.0"))
        assert await b_canary(None)
        rolled = await a.post("/api/v1/agents/probe/rollback", json={"version": "1.1.0"})
        assert rolled.status_code == 200, rolled.text
        await within(PROPAGATION_S, lambda: b_serves("1.1.0"))
        removed = await a.delete("/api/v1/agents/probe")
        assert removed.status_code in (200, 204), removed.text
        await within(PROPAGATION_S, lambda: b_serves(None))

        # -- memory: written through A, found by search on B at once
        entity = {
            "name": "tallinn-office",
            "entity_type": "place",
            "observations": ["the office in Tallinn has a sauna"],
        }
        assert (await a.post("/api/v1/memory/entities", json=entity)).status_code == 201
        found = await b.get("/api/v1/memory/search", params={"q": "sauna at the office"})
        assert found.status_code == 200, found.text
        assert [hit["name"] for hit in found.json()["results"]][:1] == ["tallinn-office"]
        # B's totals follow when its /metrics is scraped (read from the database when over
        # 5 s old); nothing reads them while nobody looks. Its health report then says so.
        assert b_server.metrics_url is not None

        async def b_scrape_counts(entities: int) -> bool:
            scrape = (await a.get(b_server.metrics_url)).text
            return f"caxton_memory_entities_total {entities:.1f}" in scrape

        await within(COUNTS_REFRESH_S + 2, lambda: b_scrape_counts(1))
        assert (await b.get("/api/v1/health")).json()["memory"]["entities"] == 1

        # -- a conversation begun on A continues on B, the earlier turns in the agent's context
        first = await a.post("/api/v1/agents/assistant/messages", json={"content": "hello there"})
        assert first.status_code == 200, first.text
        conversation = first.json()["conversation_id"]
        second = await b.post(
            "/api/v1/agents/assistant/messages",
            json={"content": "and again", "conversation_id": conversation},
        )
        assert second.status_code == 200, second.text
        assert second.json()["content"] == "second answer"
        last_prompt = json.dumps(llm.requests[-1].body["messages"])
        assert "hello there" in last_prompt  # B read A's turns from the shared store

        async def all_four_turns(client: httpx.AsyncClient) -> bool:
            history = (await client.get(f"/api/v1/conversations/{conversation}")).json()
            return bool(history["message_count"] == 4)  # written within the flush interval

        await within(PROPAGATION_S, lambda: all_four_turns(a))

        # -- safe mode set on one instance holds on both
        assert (await a.post("/api/v1/admin/safe-mode", json={"enabled": True})).status_code == 200

        async def b_refuses() -> bool:
            refused = await b.post("/api/v1/memory/entities", json={**entity, "name": "x"})
            return refused.status_code == 503 and refused.json()["error"]["code"] == "SAFE_MODE"

        await within(PROPAGATION_S, b_refuses)
        assert (await b.post("/api/v1/admin/safe-mode", json={"enabled": False})).status_code == 200
        await within(PROPAGATION_S, lambda: _safe_mode_off(a))  # lifted through B, A accepts again

        # -- both are listed, by the route and the CLI, each with its address
        listed = (await b.get("/api/v1/cluster")).json()
        assert listed["backend"] == "postgres"
        assert sorted(i["address"] for i in listed["instances"]) == sorted([a_url, b_url])
    done = await run_cli_async("--url", a_url, "cluster", "status", "--output", "json")
    assert done.returncode == 0, done.stderr.decode()
    report = json.loads(done.stdout)
    assert {i["address"]: i["self"] for i in report["instances"]} == {a_url: True, b_url: False}
    assert all(i["agents"] >= 2 for i in report["instances"])  # echo and assistant, from files

    for server in instances:
        server.process.send_signal(signal.SIGTERM)
    for server in instances:
        assert await wait_exit(server.process, timeout=20) == 0


async def _safe_mode_off(client: httpx.AsyncClient) -> bool:
    health = (await client.get("/api/v1/health")).json()
    return health["safe_mode"] is False


async def test_safe_mode_switched_offline_holds_for_the_running_instances(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    running = tmp_path / "running"
    running.mkdir()
    server = await start_instance(nursery, running, agents, postgres_url)
    # a stopped instance's configuration: its own port (nothing listens) and data_dir
    stopped = write_config(
        tmp_path / "stopped.yaml",
        tmp_path / "stopped-data",
        "storage:\n  backend: postgres\n  postgres:\n    url: ${CAXTON_DATABASE_URL}\n",
    )
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free = probe.getsockname()[1]
    stopped.write_text(stopped.read_text().replace("port: 0", f"port: {free}", 1))
    env = caxton_env(CAXTON_DATABASE_URL=postgres_url)
    done = await run_cli_async(
        "--config", str(stopped), "safe-mode", "--enable", "--reason", "upgrade", env=env
    )
    assert done.returncode == 0, done.stderr.decode()
    assert "holds for every instance on that database" in done.stderr.decode()
    assert postgres_url.split("@")[0].split(":")[-1] not in done.stderr.decode()  # no password
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:

        async def refuses() -> bool:
            answer = await client.post("/api/v1/memory/entities", json={"name": "n"})
            return answer.status_code == 503 and answer.json()["error"]["code"] == "SAFE_MODE"

        await within(PROPAGATION_S, refuses)
        assert (await client.get("/api/v1/admin/safe-mode")).json()["reason"] == "upgrade"
    shown = await run_cli_async("--config", str(stopped), "safe-mode", "-o", "json", env=env)
    assert json.loads(shown.stdout) | {"source": "database"} == json.loads(shown.stdout)
    assert json.loads(shown.stdout)["enabled"] is True
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process, timeout=20) == 0
