"""A config agent's tool sends share the router's bounds with WASM guests' sends (issue #13, 5/15).

The model behind ``spreader`` answers every turn with a ``send_message`` to a capability the
agent provides itself. Under the hop guard alone that is 3 + 9 + ... + 3^8 (about 9,800) sends
for one request with ``max_turns = 3``; the per-conversation total stops it at a few hundred.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import trio
from messaging_servers import start_server
from servers import load_llm_server

from caxton.messaging.routing import SendLimits

if TYPE_CHECKING:
    from pathlib import Path

SPREADER = """
name = "spreader"
version = "1.0.0"
capabilities = ["spreading"]
tools = ["send_message"]
system_prompt = "Spread the word."
user_prompt_template = "{{request}}"
[llm]
provider = "openai"
model = "scripted-1"
base_url = "URL/v1"
max_retries = 0
timeout = "10s"
[conversation]
max_turns = 3
"""


async def test_a_model_that_keeps_sending_is_bounded_per_conversation(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    script: dict[str, Any] = {
        "rules": [
            {  # no match key: every turn, whatever the text
                "tool_call": {
                    "name": "send_message",
                    "arguments": {"capability": "spreading", "content": "spread"},
                },
            },
        ]
    }
    llm = await nursery.start(load_llm_server().serve_llm, script)
    (agents_dir / "spreader.toml").write_text(SPREADER.replace("URL", llm.url))
    server = await start_server(nursery, tmp_path / "data", agents_dir)
    with trio.fail_after(120):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=110) as client:
            reply = await client.post(
                "/api/v1/agents/spreader/messages", json={"content": "spread"}
            )
            # the outer request ends (max_turns reached), it does not run away
            assert reply.status_code in (200, 500, 502), reply.text
            health = await client.get("/health")
            assert health.status_code == 200
    limits = SendLimits()
    # every admitted send runs at most max_turns model calls; the outer request adds its own
    assert len(llm.requests) <= (limits.max_per_conversation + 1) * 3
    refused = [r for r in llm.requests if "SEND_REFUSED" in json.dumps(r.body)]
    assert refused, "the model never saw a refused send"
