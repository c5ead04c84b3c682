"""The example agents: asker asks text-statistics (wordcount) by capability, WASM to WASM."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any

import httpx
import trio
from messaging_servers import copy_agents, start_server

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.server import ServerInfo


async def wait_for_messages(
    client: httpx.AsyncClient, conversation_id: str, count: int
) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            response = await client.get(f"/api/v1/conversations/{conversation_id}")
            if response.status_code == 200 and response.json()["message_count"] >= count:
                body: dict[str, Any] = response.json()
                return body
            await trio.sleep(0.02)


async def test_asker_asks_wordcount_by_capability(server: ServerInfo) -> None:
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        response = await client.post(
            "/api/v1/agents/asker/messages", json={"content": "the quick brown fox"}
        )
        assert response.status_code == 200, response.text
        first = response.json()
        assert first["content"].startswith("asked text-statistics")
        conversation = await wait_for_messages(client, first["conversation_id"], 5)
    messages = conversation["messages"]
    assert len(messages) == 5
    request = messages[0]
    assert (request["performative"], request["sender"], request["receiver"]) == (
        "request",
        "client",
        "asker",
    )
    # asker sends while it handles the request, so its first answer to the client and the
    # exchange with wordcount interleave; the threads (in_reply_to) say what answers what
    by_reply = {m["in_reply_to"]: m for m in messages[1:]}
    first = by_reply[request["message_id"]]
    assert (first["performative"], first["sender"], first["receiver"]) == (
        "inform",
        "asker",
        "client",
    )
    (asked,) = [m for m in messages if m["capability"] is not None]
    assert (asked["performative"], asked["sender"], asked["capability"]) == (
        "request",
        "asker",
        "text-statistics",
    )
    assert asked["content"] == "the quick brown fox"
    assert (request["hop"], asked["hop"]) == (0, 1)
    answer = by_reply[asked["message_id"]]
    assert (answer["performative"], answer["sender"], answer["receiver"]) == (
        "inform",
        "wordcount",
        "asker",
    )
    assert answer["content"]["words"] == 4
    assert messages.index(asked) < messages.index(answer)
    final = by_reply[answer["message_id"]]
    assert (final["sender"], final["receiver"]) == ("asker", "client")
    assert final["content"].startswith('text-statistics answered: {"words": 4,')
    assert sorted(conversation["participants"]) == ["asker", "client", "wordcount"]
    assert conversation["status"] == "active"


async def test_asker_hears_the_failure_when_nobody_provides_the_capability(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    agents = tmp_path / "agents"
    agents.mkdir()
    copy_agents(agents, "asker")  # no wordcount: nobody provides text-statistics
    server = await start_server(nursery, tmp_path / "data", agents)
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        response = await client.post("/api/v1/agents/asker/messages", json={"content": "a b"})
        assert response.status_code == 200, response.text
        conversation = await wait_for_messages(client, response.json()["conversation_id"], 5)
    by_performative = {(m["sender"], m["performative"]): m for m in conversation["messages"]}
    failure = by_performative[("caxton", "failure")]
    assert failure["receiver"] == "asker"
    assert failure["content"]["error"]["code"] == "NO_PROVIDER"
    final = next(m for m in conversation["messages"] if m["in_reply_to"] == failure["message_id"])
    assert final["sender"] == "asker"
    assert final["content"].startswith("text-statistics could not answer: ")
    assert "NO_PROVIDER" in final["content"]


LOOP_ENVELOPE = '{"capability":"echo","content":"again"}'
LOOP_WAT = f"""
(module
  (import "caxton" "send_message" (func $send (param i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) {json.dumps(LOOP_ENVELOPE)})
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param $p i32) (param $n i32) (result i32)
    (drop (call $send (i32.const 0) (i32.const {len(LOOP_ENVELOPE)})))
    (call $reply (i32.const 0) (i32.const 1))
    (i32.const 0)))
"""


async def test_a_capability_loop_stops_at_the_hop_limit(server: ServerInfo) -> None:
    body = {
        "manifest": 'name = "looper"\nversion = "1.0.0"\n[wasm]\n',
        "wasm_module": base64.b64encode(LOOP_WAT.encode()).decode(),
    }
    async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
        assert (await client.post("/api/v1/agents", json=body)).status_code == 201
        response = await client.post("/api/v1/agents/looper/messages", json={"content": "go"})
        cid = response.json()["conversation_id"]
        # request + reply, then 8 sends to echo, each with echo's reply and looper's answer
        conversation = await wait_for_messages(client, cid, 2 + 8 * 3)
        await trio.sleep(0.3)  # the ninth send was refused: nothing more arrives
        again = (await client.get(f"/api/v1/conversations/{cid}")).json()
    assert again["message_count"] == conversation["message_count"] == 26
    sends = [m for m in again["messages"] if m["capability"] == "echo"]
    assert [m["hop"] for m in sends] == list(range(1, 9))
    for send in sends:
        answer = next(m for m in again["messages"] if m["in_reply_to"] == send["message_id"])
        assert (answer["sender"], answer["performative"]) == ("echo", "inform")
    logs = server.services.agent_logs.tail("looper", 100)
    assert [line.message for line in logs if "hops" in line.message] == [
        "message to echo refused: more than 8 agent-to-agent hops (a loop?)"
    ]
