"""POST /api/v1/messages: delivery by receiver or capability, each strategy, failures."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import httpx
import trio
from agents_wat import const_wat, deploy_body
from messaging_servers import start_server

from caxton.messages import Message

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.server import ServerInfo


async def deploy(client: httpx.AsyncClient, body: dict[str, Any]) -> None:
    response = await client.post("/api/v1/agents", json=body)
    assert response.status_code == 201, response.text


async def ask(client: httpx.AsyncClient, body: dict[str, Any], **params: str) -> dict[str, Any]:
    response = await client.post("/api/v1/messages", json=body, params=params)
    assert response.status_code == 200, response.text
    reply: dict[str, Any] = response.json()
    return reply


async def test_by_receiver_and_by_capability(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        by_name = await ask(client, {"receiver": "wordcount", "content": "one two three"})
        assert (by_name["performative"], by_name["sender"]) == ("inform", "wordcount")
        assert by_name["content"]["words"] == 3
        by_capability = await ask(
            client,
            {
                "capability": "text-statistics",
                "performative": "query",
                "content": "four",
                "reply_with": "q-1",
            },
        )
        assert by_capability["sender"] == "wordcount"
        assert by_capability["in_reply_to"] == "q-1"
        assert by_capability["content"]["words"] == 1
        shown = (await client.get(f"/api/v1/conversations/{by_name['conversation_id']}")).json()
    assert [m["performative"] for m in shown["messages"]] == ["request", "inform"]
    assert shown["messages"][1]["in_reply_to"] == shown["messages"][0]["message_id"]
    assert shown["messages"][1]["message_id"] == by_name["message_id"]


async def test_no_provider_is_a_failure_reply_listing_capabilities(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        reply = await ask(client, {"capability": "translation", "content": "hola"})
        shown = (await client.get(f"/api/v1/conversations/{reply['conversation_id']}")).json()
    assert reply["performative"] == "failure"
    error = reply["content"]["error"]
    assert error["code"] == "NO_PROVIDER"
    assert "'translation'" in error["message"]
    for capability in ("echo", "text-statistics", "word-questions"):
        assert capability in error["message"]
    assert error["details"]["capabilities"] == ["echo", "text-statistics", "word-questions"]
    assert [m["performative"] for m in shown["messages"]] == ["request", "failure"]


async def test_agent_error_is_a_failure_reply(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        # wordcount answers a non-string content with {"error": ...}; asker returns 1 for a
        # message that is not an envelope, but it always gets one, so make the agent trap
        trap = '(module (memory (export "memory") 1)\n'
        trap += '(func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))\n'
        trap += '(func (export "handle_message") (param i32 i32) (result i32) unreachable))'
        await deploy(client, deploy_body("broken", trap, capabilities=("broken",)))
        reply = await ask(client, {"capability": "broken", "content": "x"})
    assert reply["performative"] == "failure"
    assert reply["sender"] == "broken"
    assert reply["content"]["error"]["code"] == "WASM_TRAP"


async def test_best_match_prefers_the_idle_provider(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=10) as client:
        for name in ("slow-a", "slow-b"):
            await deploy(
                client, deploy_body(name, const_wat(name, delay_ms=400), capabilities=("slow",))
            )
        # idle: ties go by name
        assert (await ask(client, {"capability": "slow", "content": "x"}))["sender"] == "slow-a"
        async with trio.open_nursery() as nursery:
            busy = functools.partial(client.post, json={"content": "busy"})
            nursery.start_soon(busy, "/api/v1/agents/slow-a/messages")
            with trio.fail_after(5):
                while True:
                    view = (await client.get("/api/v1/capabilities/slow")).json()
                    loads = {p["agent"]: p["in_flight"] for p in view["providers"]}
                    if loads["slow-a"] == 1:
                        break
                    await trio.sleep(0.01)
            assert loads["slow-b"] == 0
            reply = await ask(client, {"capability": "slow", "content": "x"})
            assert reply["sender"] == "slow-b"


async def test_round_robin(nursery: trio.Nursery, tmp_path: Path, agents_dir: Path) -> None:
    server = await start_server(
        nursery,
        tmp_path / "data",
        agents_dir,
        messaging__capability_routing__strategy="round_robin",
    )
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        await deploy(client, deploy_body("echo-b", const_wat("b"), capabilities=("echo",)))
        senders = [
            (await ask(client, {"capability": "echo", "content": str(i)}))["sender"]
            for i in range(4)
        ]
    assert senders == ["echo", "echo-b", "echo", "echo-b"]


async def test_broadcast_gathers_replies_within_the_deadline(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    server = await start_server(
        nursery, tmp_path / "data", agents_dir, messaging__capability_routing__strategy="broadcast"
    )
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=10) as client:
        await deploy(client, deploy_body("echo-b", const_wat("b"), capabilities=("echo",)))
        await deploy(
            client,
            deploy_body("echo-slow", const_wat("late", delay_ms=2000), capabilities=("echo",)),
        )
        reply = await ask(client, {"capability": "echo", "content": "all"}, timeout="0.5")
        shown = (await client.get(f"/api/v1/conversations/{reply['conversation_id']}")).json()
    assert reply["performative"] == "inform"
    replies = {r["sender"]: r for r in reply["content"]["replies"]}
    assert list(replies) == ["echo", "echo-b", "echo-slow"]
    assert replies["echo-b"]["content"] == "b"
    assert replies["echo"]["performative"] == "inform"
    assert replies["echo-slow"]["performative"] == "failure"
    assert replies["echo-slow"]["content"]["error"]["code"] == "TIMEOUT"
    # the request and each provider's reply are in the conversation
    assert sorted(m["sender"] for m in shown["messages"]) == [
        "client",
        "echo",
        "echo-b",
        "echo-slow",
    ]


async def test_delivery_timeout_is_a_timeout_failure(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=10) as client:
        await deploy(client, deploy_body("sleepy", const_wat("z", delay_ms=3000)))
        with trio.fail_after(2):
            reply = await ask(client, {"receiver": "sleepy", "content": "x"}, timeout="0.2")
    assert reply["performative"] == "failure"
    assert reply["content"]["error"]["code"] == "TIMEOUT"


async def test_canary_takes_its_share(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        await deploy(client, deploy_body("greeter", const_wat("v1"), capabilities=("greet",)))
        canary = deploy_body(
            "greeter",
            const_wat("v2"),
            capabilities=("greet",),
            version="2.0.0",
            extra='[deployment]\nstrategy = "canary"\ncanary_percentage = 100\n',
        )
        response = await client.put("/api/v1/agents/greeter", json=canary)
        assert response.status_code == 200, response.text
        with trio.fail_after(5):
            while (await client.get("/api/v1/agents/greeter")).json()["canary"] is None:
                await trio.sleep(0.02)
        reply = await ask(client, {"capability": "greet", "content": "hi"})
        assert reply["content"] == "v2"
        rollback = await client.post("/api/v1/agents/greeter/rollback", json={})
        assert rollback.status_code == 200, rollback.text
        assert (await ask(client, {"capability": "greet", "content": "hi"}))["content"] == "v1"


async def test_wait_false_returns_202_and_the_reply_is_recorded(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        response = await client.post(
            "/api/v1/messages", params={"wait": "false"}, json={"receiver": "echo", "content": "hi"}
        )
        assert response.status_code == 202, response.text
        accepted = response.json()
        with trio.fail_after(5):
            while True:
                shown = await client.get(f"/api/v1/conversations/{accepted['conversation_id']}")
                if shown.status_code == 200 and shown.json()["message_count"] == 2:
                    break
                await trio.sleep(0.02)
    messages = shown.json()["messages"]
    assert messages[0]["message_id"] == accepted["message_id"]
    assert (messages[1]["sender"], messages[1]["in_reply_to"]) == ("echo", accepted["message_id"])


async def test_message_routed_events_and_metrics(server: ServerInfo) -> None:
    state = server.services
    async with (
        state.events.subscribe() as events,
        httpx.AsyncClient(base_url=server.api_urls[0]) as client,
    ):
        reply = await ask(client, {"capability": "text-statistics", "content": "a b"})
        with trio.fail_after(5):
            event = await events.receive()
            while event.type != "message_routed":
                event = await events.receive()
    assert event.agent == "wordcount"
    assert event.data["conversation_id"] == reply["conversation_id"]
    assert event.data["capability"] == "text-statistics"
    assert event.data["strategy"] == "best_match"
    assert event.data["outcome"] == "ok"
    registry = state.metrics.registry
    routed = registry.get_sample_value(
        "caxton_messages_routed_total", {"performative": "request", "outcome": "ok"}
    )
    assert routed == 1.0
    assert (
        registry.get_sample_value(
            "caxton_message_routing_duration_seconds_count", {"via": "capability"}
        )
        == 1.0
    )
    assert registry.get_sample_value("caxton_messages_in_flight") == 0.0


async def test_loop_guard_refuses_past_max_hops(server: ServerInfo) -> None:
    router = server.services.router
    assert router is not None
    looping = Message(sender="echo", receiver="wordcount", content="x", hop=9)
    reply = await router.ask(looping, timeout_s=5)
    assert reply.performative == "failure"
    assert isinstance(reply.content, dict)
    assert reply.content["error"]["code"] == "HOP_LIMIT_EXCEEDED"
    assert reply.in_reply_to == looping.message_id
    conversations = server.services.conversations
    assert conversations is not None
    assert await conversations.status(looping.conversation_id) is None  # nothing recorded
    metrics = server.services.metrics.registry
    refused = metrics.get_sample_value(
        "caxton_messages_routed_total",
        {"performative": "request", "outcome": "HOP_LIMIT_EXCEEDED"},
    )
    assert refused == 1.0  # a loop shows on the dashboards
    at_limit = Message(sender="echo", receiver="wordcount", content="x y", hop=8)
    assert (await router.ask(at_limit, timeout_s=5)).performative == "inform"
