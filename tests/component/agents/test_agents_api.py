"""Agents over HTTP: listing, deploys, versions, canary, rollback, messages, streaming."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import httpx
import pytest
import trio

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.server import ServerInfo

SLOW_WAT = """
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "slow-VERSION")
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param i32 i32) (result i32)
    (local $i i32)
    (loop $spin
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $spin (i32.lt_u (local.get $i) (i32.const ITERATIONS))))
    (call $reply (i32.const 0) (i32.const 10))
    (i32.const 0)))
"""


def slow_agent(version: str, iterations: int) -> dict[str, str]:
    manifest = f'name = "slow"\nversion = "{version}"\n[wasm]\n[limits]\nmax_fuel = 2_000_000_000\n'
    module = SLOW_WAT.replace("VERSION", version[:5].ljust(5, "0")).replace(
        "ITERATIONS", str(iterations)
    )
    return {"manifest": manifest, "wasm_module": base64.b64encode(module.encode()).decode()}


async def test_list_show_and_talk(agents_server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client:
        listing = (await client.get("/api/v1/agents")).json()
        assert [a["name"] for a in listing["agents"]] == ["counter", "echo"]
        assert listing["total"] == 2
        echo = (await client.get("/api/v1/agents/echo")).json()
        assert echo["type"] == "wasm"
        assert echo["abi"] == "caxton-v1"
        assert echo["status"] == "running"
        assert echo["version"] == "1.0.0"
        assert echo["canary"] is None
        assert echo["last_reload"]["ok"] is True
        only_wasm = (await client.get("/api/v1/agents", params={"capability": "counting"})).json()
        assert [a["name"] for a in only_wasm["agents"]] == ["counter"]

        reply = await client.post("/api/v1/agents/counter/messages", json={"content": "a"})
        assert reply.status_code == 200
        body = reply.json()
        assert body["content"] == {"count": 1}
        assert body["sender"] == "counter"
        assert body["performative"] == "inform"
        assert body["in_reply_to"]
        second = await client.post(
            "/api/v1/agents/counter/messages",
            json={"content": "b", "conversation_id": body["conversation_id"]},
        )
        assert second.json()["content"] == {"count": 2}  # state kept in the instance
        assert second.json()["conversation_id"] == body["conversation_id"]

        performance = (await client.get("/api/v1/agents/performance")).json()["agents"]
        counter = next(a for a in performance if a["name"] == "counter")
        assert (counter["messages"], counter["errors"]) == (2, 0)
        assert counter["p99_ms"] >= counter["p50_ms"] > 0
        assert counter["fuel"] > 0  # what the guest burned answering
        assert counter["tokens"] == 0
        report = (await client.get("/api/v1/health")).json()
        assert report["agents"] == {"config": 0, "wasm": 2}
        assert report["memory"] == {"backend": "embedded", "entities": 0}

        missing = await client.post("/api/v1/agents/nobody/messages", json={"content": "x"})
        assert missing.status_code == 404
        assert "counter, echo" in missing.json()["error"]["message"]
        bad = await client.post("/api/v1/agents/echo/messages", json={"content": 5})
        assert bad.status_code == 422


async def test_sse_stream_arrives_in_chunks_then_done(agents_server: ServerInfo) -> None:
    async with (
        httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client,
        client.stream(
            "POST",
            "/api/v1/agents/counter/messages",
            json={"content": "x"},
            headers={"Accept": "text/event-stream"},
        ) as response,
    ):
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = []
        event = None
        async for line in response.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                frames.append((event, json.loads(line.removeprefix("data: "))))
    kinds = [kind for kind, _ in frames]
    assert kinds == ["chunk", "chunk", "chunk", "done"]
    assert "".join(data["text"] for kind, data in frames if kind == "chunk") == '{"count":1}'
    assert frames[-1][1]["message"]["content"] == {"count": 1}


async def test_websocket_chunks_then_done_then_error(agents_server: ServerInfo) -> None:
    from wsclient import open_ws

    url = agents_server.api_urls[0].replace("http://", "ws://") + "/ws/agents/counter"
    with trio.fail_after(10):
        async with open_ws(url, {"X-Request-ID": "trace-ws-1"}) as ws:
            for expected in (1, 2):
                await ws.send_message(json.dumps({"content": "hi"}))
                frames = []
                while not frames or frames[-1]["type"] not in ("done", "error"):
                    frames.append(json.loads(await ws.get_message()))
                assert [f["type"] for f in frames] == ["chunk", "chunk", "chunk", "done"]
                assert frames[-1]["message"]["content"] == {"count": expected}
            await ws.send_message("not json")
            error = json.loads(await ws.get_message())
            assert error["type"] == "error"
            # the same error object as every HTTP error body, request id included
            assert set(error["error"]) == {"code", "message", "details", "request_id"}
            assert error["error"]["code"] == "BAD_REQUEST"
            assert error["error"]["request_id"] == "trace-ws-1"


async def test_deploy_update_versions_canary_promote_rollback(agents_server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=30) as client:
        created = await client.post("/api/v1/agents", json=slow_agent("1.0.0", 10))
        assert created.status_code == 201, created.text
        assert created.json()["version"] == "1.0.0"
        again = await client.post("/api/v1/agents", json=slow_agent("1.0.0", 10))
        assert again.status_code == 409
        assert "PUT /api/v1/agents/slow" in again.json()["error"]["message"]

        updated = await client.put("/api/v1/agents/slow", json=slow_agent("1.1.0", 10))
        assert updated.status_code == 200, updated.text
        assert updated.json()["version"] == "1.1.0"
        versions = (await client.get("/api/v1/agents/slow/versions")).json()["versions"]
        assert [(v["version"], v["active"]) for v in versions] == [
            ("1.1.0", True),
            ("1.0.0", False),
        ]

        canary = await client.post(
            "/api/v1/agents/slow/canary", json={"version": "1.0.0", "traffic_percentage": 30}
        )
        assert canary.status_code == 200, canary.text
        assert canary.json()["canary"] == {"version": "1.0.0", "traffic_percentage": 30.0}
        assert canary.json()["version"] == "1.1.0"  # stable until promoted
        replies = set()
        for i in range(40):
            reply = await client.post(
                "/api/v1/agents/slow/messages", json={"content": "x", "conversation_id": f"c{i}"}
            )
            replies.add(reply.json()["content"])
        assert replies == {"slow-1.0.0", "slow-1.1.0"}
        promoted = (await client.post("/api/v1/agents/slow/promote")).json()
        assert (promoted["version"], promoted["canary"]) == ("1.0.0", None)

        rolled = await client.post("/api/v1/agents/slow/rollback", json={"version": "1.1.0"})
        assert rolled.json()["version"] == "1.1.0"
        no_canary = await client.post("/api/v1/agents/slow/promote")
        assert no_canary.status_code == 409
        assert no_canary.json()["error"]["code"] == "NO_CANARY"

        removed = await client.delete("/api/v1/agents/slow")
        assert removed.status_code == 200
        assert (await client.get("/api/v1/agents/slow")).status_code == 404
        from_file = await client.delete("/api/v1/agents/echo")
        assert from_file.status_code == 409
        assert "delete or rename that file" in from_file.json()["error"]["message"]


async def test_rollback_without_a_previous_version_is_a_clear_409(
    agents_server: ServerInfo,
) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client:
        response = await client.post("/api/v1/agents/echo/rollback")
        assert response.status_code == 409
        assert response.json()["error"]["code"] == "NO_PREVIOUS_VERSION"
        assert (await client.get("/api/v1/agents/echo")).json()["status"] == "running"
        garbled = await client.post(
            "/api/v1/agents/echo/rollback",
            content=b"{version",
            headers={"Content-Type": "application/json"},
        )
        assert garbled.status_code == 400  # not silently read as "no body"
        assert garbled.json()["error"]["code"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"content": 'name = "x"\nversion = "1.0"\n'}, 422, "AGENT_SPEC_INVALID"),
        ({"content": "\x00\x01garbage"}, 422, "AGENT_SPEC_INVALID"),
        ({"manifest": 'name = "w"\n[wasm]\n', "wasm_module": "!!!"}, 400, "BAD_REQUEST"),
        (
            {
                "manifest": 'name = "w"\n[wasm]\n',
                "wasm_module": base64.b64encode(b"\x00asm\x01").decode(),
            },
            422,
            "AGENT_LOAD_FAILED",
        ),
        ({"nothing": 1}, 400, "BAD_REQUEST"),
    ],
)
async def test_bad_deploys_leave_running_agents_untouched(
    agents_server: ServerInfo, body: dict[str, str], status: int, code: str
) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client:
        response = await client.post("/api/v1/agents", json=body)
        assert response.status_code == status, response.text
        assert response.json()["error"]["code"] == code
        listing = (await client.get("/api/v1/agents")).json()["agents"]
        assert [(a["name"], a["status"]) for a in listing] == [
            ("counter", "running"),
            ("echo", "running"),
        ]


async def test_blue_green_new_version_ready_before_old_drains(
    agents_server: ServerInfo, tmp_path: Path
) -> None:
    events = []

    async def record() -> None:
        async with agents_server.services.events.subscribe() as stream:
            async for event in stream:
                if event.agent == "slow" and event.type == "agent_status_changed":
                    events.append((event.data["version"], event.data["new"]))

    async with (
        trio.open_nursery() as nursery,
        httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=30) as client,
    ):
        nursery.start_soon(record)
        assert (
            await client.post("/api/v1/agents", json=slow_agent("1.0.0", 30_000_000))
        ).is_success
        results: list[httpx.Response] = []

        async def slow_request() -> None:
            results.append(await client.post("/api/v1/agents/slow/messages", json={"content": "x"}))

        nursery.start_soon(slow_request)
        while not any(v for v in agents_server.services.table.versions.values() if v.in_flight):
            await trio.sleep(0.005)
        update = await client.put("/api/v1/agents/slow", json=slow_agent("2.0.0", 10))
        assert update.status_code == 200
        while not results:
            await trio.sleep(0.01)
        while ("1.0.0", "stopped") not in events:
            await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert results[0].status_code == 200  # the in-flight request on the old version finished
    assert results[0].json()["content"] == "slow-1.0.0"
    assert events.index(("2.0.0", "running")) < events.index(("1.0.0", "draining"))
    assert events.index(("1.0.0", "draining")) < events.index(("1.0.0", "stopped"))


async def test_restart_is_blue_green_and_emits_status_changes(agents_server: ServerInfo) -> None:
    async with (
        agents_server.services.events.subscribe() as stream,
        httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client,
    ):
        assert await client.post("/api/v1/agents/counter/messages", json={"content": "x"})
        response = await client.post("/api/v1/agents/counter/restart")
        assert response.status_code == 200
        assert response.json()["status"] == "running"
        reply = await client.post("/api/v1/agents/counter/messages", json={"content": "x"})
        assert reply.json()["content"] == {"count": 1}  # a fresh instance
        seen = []
        with trio.move_on_after(2):
            async for event in stream:
                seen.append(event.type)
                if seen.count("agent_status_changed") >= 4:
                    break
        assert seen.count("agent_status_changed") >= 4


async def test_logs_tail_and_level(agents_server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client:
        lines = (await client.get("/api/v1/agents/counter/logs", params={"tail": 50})).json()
        messages = [line["message"] for line in lines["lines"]]
        assert any("loading -> running" in m for m in messages)
        errors_only = await client.get("/api/v1/agents/counter/logs", params={"level": "error"})
        assert errors_only.json()["lines"] == []
        bad = await client.get("/api/v1/agents/counter/logs", params={"level": "loud"})
        assert bad.status_code == 400


SPIN_WAT = """
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))
"""


def spin_agent(max_execution_time: str, name: str = "spin") -> dict[str, str]:
    manifest = (
        f'name = "{name}"\nversion = "1.0.0"\n[wasm]\n[limits]\n'
        f'max_fuel = 100_000_000_000\nmax_execution_time = "{max_execution_time}"\n'
    )
    return {"manifest": manifest, "wasm_module": base64.b64encode(SPIN_WAT.encode()).decode()}


async def test_limits_over_http_and_metrics(agents_server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=30) as client:
        assert (await client.post("/api/v1/agents", json=spin_agent("300ms"))).status_code == 201
        with trio.fail_after(5):
            stopped = await client.post("/api/v1/agents/spin/messages", json={"content": "x"})
        assert stopped.status_code == 422
        error = stopped.json()["error"]
        assert error["code"] == "WASM_LIMIT_EXCEEDED"
        assert error["details"]["limit"] == "time"
        for _ in range(3):
            await client.post("/api/v1/agents/counter/messages", json={"content": "x"})
        assert (await client.get("/health")).status_code == 200  # the server is fine
    assert agents_server.metrics_url is not None
    async with httpx.AsyncClient() as client:
        text = (await client.get(agents_server.metrics_url)).text
    assert 'caxton_agent_response_duration_seconds_count{agent="counter",outcome="ok"} 3.0' in text
    assert 'outcome="WASM_LIMIT_EXCEEDED"' in text
    assert 'caxton_wasm_limit_exceeded_total{agent="spin",limit="time"} 1.0' in text
    fuel = next(
        line
        for line in text.splitlines()
        if line.startswith('caxton_wasm_fuel_consumed_total{agent="counter"}')
    )
    assert float(fuel.split()[-1]) > 0
    p99 = next(
        line for line in text.splitlines() if line.startswith("caxton_agent_response_latency_p99 ")
    )
    assert float(p99.split()[-1]) > 0
    assert "caxton_agent_wasm_count 3.0" in text
    assert "caxton_agent_config_count 0.0" in text


async def test_a_disconnected_client_stops_its_guest(agents_server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=30) as client:
        assert (await client.post("/api/v1/agents", json=spin_agent("20s"))).status_code == 201
        pool_stats = agents_server.services.registry.runtimes["wasm"].pool.statistics
        with trio.move_on_after(0.5):
            await client.post("/api/v1/agents/spin/messages", json={"content": "x"})
        # the client gave up: its guest must stop long before max_execution_time (20 s)
        with trio.fail_after(2):
            while pool_stats().calls_in_flight:
                await trio.sleep(0.01)


async def test_a_runaway_guest_does_not_slow_another_agent(agents_server: ServerInfo) -> None:
    import statistics
    import time

    async def echo_latencies(client: httpx.AsyncClient, count: int) -> list[float]:
        samples = []
        for _ in range(count):
            started = time.perf_counter()
            response = await client.post("/api/v1/agents/echo/messages", json={"content": "x"})
            samples.append(time.perf_counter() - started)
            assert response.status_code == 200
        return samples

    async with httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=30) as client:
        for name in ("spin-a", "spin-b"):
            deployed = await client.post("/api/v1/agents", json=spin_agent("3s", name))
            assert deployed.status_code == 201
        baseline = await echo_latencies(client, 30)
        async with trio.open_nursery() as nursery:
            spinning: list[int] = []

            async def spin(name: str) -> None:
                response = await client.post(
                    f"/api/v1/agents/{name}/messages", json={"content": "x"}
                )
                spinning.append(response.status_code)

            for name in ("spin-a", "spin-b"):
                nursery.start_soon(spin, name)
            pool_stats = agents_server.services.registry.runtimes["wasm"].pool.statistics
            with trio.fail_after(5):
                while pool_stats().calls_in_flight < 2:
                    await trio.sleep(0.005)
            during = await echo_latencies(client, 30)
        assert spinning == [422, 422]  # both runaway calls ended at their time limit
    # two guests spinning at once on a two-core machine: echo stays fast (generous bounds)
    assert statistics.median(during) < max(0.05, 5 * statistics.median(baseline)), (
        baseline,
        during,
    )
    assert max(during) < 0.5, during
