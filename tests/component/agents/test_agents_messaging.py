"""A WASM agent's caxton.send_message: delivery through the registry, replies, loop guard."""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING

import httpx
import trio

if TYPE_CHECKING:
    from caxton.server import ServerInfo

ENVELOPE = '{"receiver":"echo","content":"ping"}'
RELAY_WAT = f"""
(module
  (import "caxton" "send_message" (func $send (param i32 i32) (result i32)))
  (import "caxton" "log" (func $log (param i32 i32 i32)))
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) {json.dumps(ENVELOPE)})
  (data (i32.const 100) "sent")
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  ;; log every incoming message, then send the same envelope to echo again: the replies come
  ;; back as informs, so this loops until the hop guard refuses the send
  (func (export "handle_message") (param $p i32) (param $n i32) (result i32)
    (call $log (i32.const 1) (local.get $p) (local.get $n))
    (drop (call $send (i32.const 0) (i32.const {len(ENVELOPE)})))
    (call $reply (i32.const 100) (i32.const 4))
    (i32.const 0)))
"""


async def test_send_message_delivers_replies_and_stops_loops(agents_server: ServerInfo) -> None:
    body = {
        "manifest": 'name = "relay"\nversion = "1.0.0"\n[wasm]\n',
        "wasm_module": base64.b64encode(RELAY_WAT.encode()).decode(),
    }
    logs = agents_server.services.agent_logs
    async with httpx.AsyncClient(base_url=agents_server.api_urls[0]) as client:
        assert (await client.post("/api/v1/agents", json=body)).status_code == 201
        reply = await client.post("/api/v1/agents/relay/messages", json={"content": "go"})
        assert reply.json()["content"] == "sent"

    def incoming() -> list[dict]:
        lines = logs.tail("relay", 1000)
        return [json.loads(line.message) for line in lines if line.message.startswith("{")]

    def informs() -> list[dict]:
        return [m for m in incoming() if m["performative"] == "inform"]

    # a guest's log lines are written when its call returns, so wait for the last one too
    with trio.fail_after(10):
        while len(informs()) < 8 or not any(
            "hops" in line.message for line in logs.tail("relay", 1000)
        ):
            await trio.sleep(0.01)
    await trio.sleep(0.2)  # nothing more arrives: the ninth send was refused
    assert len(informs()) == 8  # hops 1..8 were delivered
    first = informs()[0]
    assert all(m["sender"] == "echo" and m["in_reply_to"] for m in informs())
    # echo's reply content is the envelope it received from relay
    assert first["content"]["content"] == "ping"
    assert first["content"]["sender"] == "relay"
    assert len({m["conversation_id"] for m in incoming()}) == 1
    refused = [line.message for line in logs.tail("relay", 1000) if "hops" in line.message]
    assert refused == ["message to echo refused: more than 8 agent-to-agent hops (a loop?)"]
