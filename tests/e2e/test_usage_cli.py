"""``caxton usage`` and the trace id in log lines, with a real ``caxton start`` process
(issue #18): tracing on, prices in caxton.yaml, a config agent answered by the scripted LLM
server."""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING

import httpx
import trio
from processes import run_cli_async, start_server, wait_exit, write_config
from servers import load_llm_server

if TYPE_CHECKING:
    from pathlib import Path

TRACE = "0af7651916cd43dd8448eb211c80319c"
TRACEPARENT = f"00-{TRACE}-b7ad6b7169203331-01"


async def test_caxton_usage_shows_the_calls_and_log_lines_carry_the_trace_id(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    llm = await nursery.start(
        load_llm_server().serve_llm,
        {"rules": [{"regex": ".", "reply": "Filed.", "cache_read_tokens": 12}]},
    )
    agents = tmp_path / "agents"
    agents.mkdir()
    (agents / "clerk.toml").write_text(
        'name = "clerk"\nsystem_prompt = "Be brief."\n'
        f'[llm]\nprovider = "openai"\nmodel = "scripted-1"\nbase_url = "{llm.url}/v1"\n'
        "[performance]\nmax_tokens_per_day = 100000\n"
    )
    config = write_config(
        tmp_path / "caxton.yaml",
        tmp_path / "data",
        "  tracing_enabled: true\n"
        "usage:\n  prices:\n    scripted-1: {input: 3.0, output: 15.0, cache_read: 0.3}\n",
    )
    config.write_text(
        config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n", 1)
    )
    server = await start_server(nursery, "--config", str(config), timeout=60)
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=server.api_url, timeout=20) as client:
            for text in ("file the report", "file the invoice"):
                answer = await client.post(
                    "/api/v1/agents/clerk/messages",
                    json={"content": text},
                    headers={"traceparent": TRACEPARENT},
                )
                assert answer.status_code == 200, answer.text
        table = await run_cli_async("--url", server.api_url, "usage")
        as_json = await run_cli_async(
            "--url", server.api_url, "usage", "--group-by", "model", "-o", "json"
        )
        line = await server.wait_for_message("POST /api/v1/agents/<name>/messages 200")
        server.process.send_signal(signal.SIGTERM)
        assert await wait_exit(server.process) == 0
    assert line.get("trace_id") == TRACE  # the request's log line names its trace
    assert table.returncode == 0, table.stderr.decode()
    printed = table.stdout.decode()
    assert "AGENT" in printed
    assert "CACHE_READ" in printed
    rows = {row.split()[0]: row.split() for row in printed.splitlines() if row}
    assert rows["clerk"][1] == "2"  # two calls
    assert rows["clerk"][4] == "24"  # 12 cache-read tokens each
    assert rows["TOTAL"][1] == "2"
    assert "budgets (today)" in printed
    assert "/100000" in rows["agent"][2]
    report = json.loads(as_json.stdout)
    (model,) = report["groups"]
    assert model["group"] == "scripted-1"
    reported = llm.reported
    input_tokens = sum(u["prompt_tokens"] - 12 for u in reported)
    output_tokens = sum(u["completion_tokens"] for u in reported)
    assert model["input_tokens"] == input_tokens
    assert model["output_tokens"] == output_tokens
    assert model["cache_read_tokens"] == 24
    cost = (input_tokens * 3.0 + output_tokens * 15.0 + 24 * 0.3) / 1_000_000
    assert abs(model["cost"] - cost) < 1e-6
