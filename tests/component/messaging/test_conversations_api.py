"""Conversations: recorded on every route, listed, shown, closed, kept across restarts."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import trio
from messaging_servers import start_server

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.server import ServerInfo


async def test_direct_routes_record_the_exchange(server: ServerInfo) -> None:
    from wsclient import open_ws

    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        plain = (await client.post("/api/v1/agents/echo/messages", json={"content": "a"})).json()
        cid = plain["conversation_id"]
        # the same conversation continues over SSE ...
        async with client.stream(
            "POST",
            "/api/v1/agents/wordcount/messages",
            json={"content": "b c", "conversation_id": cid},
            headers={"Accept": "text/event-stream"},
        ) as response:
            lines = [line async for line in response.aiter_lines()]
        done = json.loads(lines[lines.index("event: done") + 1].removeprefix("data: "))
        assert done["message"]["conversation_id"] == cid
        # ... and over WebSocket
        url = server.api_urls[0].replace("http://", "ws://") + "/ws/agents/echo"
        with trio.fail_after(10):
            async with open_ws(url) as ws:
                await ws.send_message(json.dumps({"content": "d", "conversation_id": cid}))
                frame = json.loads(await ws.get_message())
                while frame["type"] == "chunk":
                    frame = json.loads(await ws.get_message())
        assert frame["type"] == "done"
        shown = (await client.get(f"/api/v1/conversations/{cid}")).json()
        listed = (await client.get("/api/v1/conversations", params={"agent": "wordcount"})).json()
    assert [(m["sender"], m["performative"]) for m in shown["messages"]] == [
        ("client", "request"),
        ("echo", "inform"),
        ("client", "request"),
        ("wordcount", "inform"),
        ("client", "request"),
        ("echo", "inform"),
    ]
    for question, answer in zip(shown["messages"][::2], shown["messages"][1::2], strict=True):
        assert answer["in_reply_to"] == question["message_id"]
    assert shown["participants"] == ["client", "echo", "wordcount"]
    assert [c["conversation_id"] for c in listed["conversations"]] == [cid]
    assert listed["total"] == 1


async def test_a_new_conversation_per_message_without_an_id(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        ids = {
            (await client.post("/api/v1/agents/echo/messages", json={"content": str(i)})).json()[
                "conversation_id"
            ]
            for i in range(3)
        }
        listed = (await client.get("/api/v1/conversations")).json()
    assert len(ids) == 3
    assert {c["conversation_id"] for c in listed["conversations"]} == ids
    assert all(c["message_count"] == 2 for c in listed["conversations"])


async def test_closed_conversation_refuses_messages(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        first = (
            await client.post("/api/v1/messages", json={"receiver": "echo", "content": "hi"})
        ).json()
        cid = first["conversation_id"]
        closed = await client.post(f"/api/v1/conversations/{cid}/close")
        assert closed.status_code == 200, closed.text
        assert closed.json()["status"] == "closed"
        again = {"receiver": "echo", "content": "again", "conversation_id": cid}
        refused = await client.post("/api/v1/messages", json=again)
        direct = await client.post(
            "/api/v1/agents/echo/messages", json={"content": "x", "conversation_id": cid}
        )
        shown = (await client.get(f"/api/v1/conversations/{cid}")).json()
        only_closed = (
            await client.get("/api/v1/conversations", params={"status": "closed"})
        ).json()
    for response in (refused, direct):
        assert response.status_code == 409
        error = response.json()["error"]
        assert error["code"] == "CONVERSATION_CLOSED"
        assert cid in error["message"]
    assert shown["message_count"] == 2  # nothing was routed
    assert [c["conversation_id"] for c in only_closed["conversations"]] == [cid]


async def bad(client: httpx.AsyncClient, body: Any, status: int, code: str) -> str:
    response = await client.post("/api/v1/messages", json=body)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code
    message: str = error["message"]
    return message


async def test_bad_envelopes_are_refused_and_nothing_is_routed(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    server = await start_server(
        nursery, tmp_path / "data", agents_dir, messaging__max_message_size="1KB"
    )
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        text = await bad(
            client,
            {"receiver": "echo", "performative": "shout", "content": "x"},
            422,
            "VALIDATION_ERROR",
        )
        assert "unknown performative 'shout'" in text
        assert "accept_proposal" in text
        text = await bad(
            client,
            {"receiver": "echo", "capability": "echo", "content": "x"},
            422,
            "VALIDATION_ERROR",
        )
        assert "not both" in text
        text = await bad(client, {"content": "x"}, 422, "VALIDATION_ERROR")
        assert "not neither" in text
        text = await bad(
            client, {"receiver": "echo", "content": "x" * 1001}, 413, "MESSAGE_TOO_LARGE"
        )
        assert "messaging.max_message_size (1000 bytes)" in text
        text = await bad(
            client,
            {"receiver": "echo", "content": "x", "conversation_id": "nope"},
            404,
            "CONVERSATION_NOT_FOUND",
        )
        assert "'nope'" in text
        text = await bad(client, {"receiver": "ghost", "content": "x"}, 404, "AGENT_NOT_FOUND")
        assert "ghost" in text
        await bad(client, {"receiver": "echo", "content": 5}, 422, "VALIDATION_ERROR")
        await bad(
            client, {"receiver": "echo", "content": "x", "colour": 1}, 422, "VALIDATION_ERROR"
        )
        missing = await client.get("/api/v1/conversations/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "CONVERSATION_NOT_FOUND"
        close_missing = await client.post("/api/v1/conversations/nope/close")
        assert close_missing.status_code == 404
        listed = (await client.get("/api/v1/conversations")).json()
    assert listed["total"] == 0
    registry = server.services.metrics.registry
    assert registry.get_sample_value("caxton_messages_in_flight") == 0.0
    assert not [
        s
        for metric in registry.collect()
        if metric.name == "caxton_messages_routed"
        for s in metric.samples
        if s.name.endswith("_total")
    ]


async def test_capabilities_list_and_show(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        listed = (await client.get("/api/v1/capabilities")).json()
        one = (await client.get("/api/v1/capabilities/text-statistics")).json()
        missing = await client.get("/api/v1/capabilities/translation")
    assert listed["strategy"] == "best_match"
    assert [c["capability"] for c in listed["capabilities"]] == [
        "echo",
        "text-statistics",
        "word-questions",
    ]
    assert one["providers"] == [
        {
            "agent": "wordcount",
            "status": "running",
            "version": "1.0.0",
            "in_flight": 0,
            "healthy": True,
        }
    ]
    assert missing.status_code == 404
    assert "text-statistics" in missing.json()["error"]["message"]


async def test_conversations_survive_a_restart(tmp_path: Path, agents_dir: Path) -> None:
    async def first_run() -> str:
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", agents_dir)
            async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
                reply = await client.post(
                    "/api/v1/messages", json={"capability": "text-statistics", "content": "a b"}
                )
                cid: str = reply.json()["conversation_id"]
                await client.post(f"/api/v1/conversations/{cid}/close")
            server.stop()
        return cid

    with trio.fail_after(30):
        cid = await first_run()
        async with trio.open_nursery() as nursery:
            server = await start_server(nursery, tmp_path / "data", agents_dir)
            async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
                shown = (await client.get(f"/api/v1/conversations/{cid}")).json()
                again = await client.post(
                    "/api/v1/messages",
                    json={"receiver": "echo", "content": "x", "conversation_id": cid},
                )
            server.stop()
    assert shown["status"] == "closed"
    assert [m["sender"] for m in shown["messages"]] == ["client", "wordcount"]
    assert shown["messages"][1]["content"]["words"] == 2
    assert again.status_code == 409


async def test_the_direct_agent_routes_hold_envelopes_to_the_same_rules(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    """The agent route and its WebSocket read bodies with the one envelope parser: unknown
    keys, another receiver, a capability and content over messaging.max_message_size are
    refused before anything is routed (they used to be ignored, or let through)."""
    from wsclient import open_ws

    server = await start_server(
        nursery, tmp_path / "data", agents_dir, messaging__max_message_size="1KB"
    )
    url = server.api_urls[0]
    refused = [
        ({"content": "x", "colour": 1}, 422, "unknown envelope key colour"),
        ({"content": "x", "receiver": "other"}, 422, "this route sends to agent 'echo'"),
        ({"content": "x", "capability": "echo"}, 422, "this route sends to agent 'echo'"),
        ({"content": "x" * 1001}, 413, "messaging.max_message_size (1000 bytes)"),
    ]
    async with httpx.AsyncClient(base_url=url) as client:
        for body, status, says in refused:
            response = await client.post("/api/v1/agents/echo/messages", json=body)
            assert response.status_code == status, response.text
            assert says in response.json()["error"]["message"]
        ok = await client.post(
            "/api/v1/agents/echo/messages", json={"content": "hi", "receiver": "echo"}
        )
        assert ok.status_code == 200, ok.text
        with trio.fail_after(10):
            async with open_ws(url.replace("http://", "ws://") + "/ws/agents/echo") as ws:
                for body, _, says in refused:
                    await ws.send_message(json.dumps(body))
                    frame = json.loads(await ws.get_message())
                    assert frame["type"] == "error", frame
                    assert says in frame["error"]["message"]
        listed = (await client.get("/api/v1/conversations")).json()
    assert listed["total"] == 1  # only the accepted message started a conversation
