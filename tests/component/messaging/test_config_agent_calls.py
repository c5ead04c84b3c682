"""A config (LLM) agent asks a WASM agent by capability: routed, threaded, recorded."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import trio
from messaging_servers import start_server
from servers import COUNT_BY_CAPABILITY, load_llm_server, planner_toml

if TYPE_CHECKING:
    from pathlib import Path


async def test_config_agent_asks_wasm_by_capability(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    llm = await nursery.start(load_llm_server().serve_llm, COUNT_BY_CAPABILITY)
    (agents_dir / "planner.toml").write_text(planner_toml(llm.url))
    server = await start_server(nursery, tmp_path / "data", agents_dir)
    with trio.fail_after(20):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=15) as client:
            reply = await client.post(
                "/api/v1/agents/planner/messages", json={"content": "count these words"}
            )
            assert reply.status_code == 200, reply.text
            assert reply.json()["content"] == "Four words."
            cid = reply.json()["conversation_id"]
            shown = (await client.get(f"/api/v1/conversations/{cid}")).json()
    messages = shown["messages"]
    assert [
        (m["performative"], m["sender"], m["receiver"], m["capability"], m["hop"]) for m in messages
    ] == [
        ("request", "client", "planner", None, 0),
        ("request", "planner", None, "text-statistics", 1),
        ("inform", "wordcount", "planner", None, 1),
        ("inform", "planner", "client", None, 0),
    ]
    request, asked, answer, final = messages
    assert asked["content"] == "one two three four"
    assert answer["in_reply_to"] == asked["message_id"]
    assert answer["content"]["words"] == 4
    assert final["in_reply_to"] == request["message_id"]
    assert final["content"] == "Four words."
