"""A config agent whose MCP server is Caxton's own ``/mcp`` (issue #19): the loop guard holds
across it (the hop count travels in ``_meta.caxtonHop``), and the trace goes on (the calling
span's ``traceparent`` travels in ``_meta``; ``/mcp`` also continues the HTTP header's).

One traced server (in-memory exporter) and one scripted LLM serve the whole test.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from config_agent_servers import agent_toml, openai_url
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from opentelemetry.sdk.trace import ReadableSpan

TRACE = "6bf92f3577b34da6a3ce929d0e0e4738"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"
META_TRACE = "7bf92f3577b34da6a3ce929d0e0e4739"
META_TRACEPARENT = f"00-{META_TRACE}-10f067aa0ba902b7-01"

SCRIPT = {
    "rules": [
        {
            "match": "Q-RECURSE",
            "tool_call": {
                "name": "mcp_self_ask_looper",
                "arguments": {"question": "Q-RECURSE"},
                "id": "c1",
            },
        },
        {
            "match": "Q-TRACE",
            "tool_call": {
                "name": "mcp_self_ask_echo",
                "arguments": {"question": "traced hello"},
                "id": "c2",
            },
        },
    ]
}


@pytest.fixture
async def own_mcp(
    nursery: trio.Nursery, start_llm, tmp_path: Path, agents_dir: Path
) -> AsyncIterator[tuple[ServerInfo, InMemorySpanExporter, httpx.AsyncClient]]:
    """A traced server with ``looper``, whose MCP server is the same server's ``/mcp``."""
    llm = await start_llm(SCRIPT)
    exporter = InMemorySpanExporter()
    loaded = loopback_config(
        tmp_path / "data",
        server__agents_dir=str(agents_dir),
        observability__tracing_enabled=True,
        agents__drain_timeout="2s",
    )
    run = functools.partial(serve, loaded, handle_signals=False, span_exporters=[exporter])
    server: ServerInfo = await nursery.start(run)
    mcp = f'\n[[mcp_servers]]\nname = "self"\nurl = "{server.api_urls[0]}/mcp"\n'
    perf = '\n[performance]\nmax_concurrent_requests = 16\nrequest_timeout = "30s"\n'
    toml = agent_toml("looper", openai_url(llm), extra=mcp + perf)
    async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
        with trio.fail_after(30):
            # tools are listed when a version loads, and an agent is a tool of /mcp once it
            # runs: the second version is offered the first's ask_looper
            (agents_dir / "looper.toml").write_text(toml)
            await wait_for_tool(client, "mcp_self_ask_echo")
            (agents_dir / "looper.toml").write_text(toml.replace('"1.0.0"', '"1.0.1"'))
            await wait_for_tool(client, "mcp_self_ask_looper")
        yield server, exporter, client


async def wait_for_tool(client: httpx.AsyncClient, tool: str) -> None:
    while True:
        view = (await client.get("/api/v1/agents/looper")).json()
        if view.get("status") == "running" and tool in view.get("tools", ()):
            return
        await trio.sleep(0.05)


async def ask(client: httpx.AsyncClient, content: str) -> str:
    response = await client.post("/api/v1/agents/looper/messages", json={"content": content})
    assert response.status_code == 200, response.text
    reply: str = response.json()["content"]
    return reply


async def test_an_agent_using_caxtons_own_mcp(
    own_mcp: tuple[ServerInfo, InMemorySpanExporter, httpx.AsyncClient],
) -> None:
    await loop_guard_stops_an_agent_asking_itself(*own_mcp)
    await mcp_calls_continue_the_callers_trace(*own_mcp)
    await a_hop_count_in_meta_is_held_to_the_limit(own_mcp[2])


async def loop_guard_stops_an_agent_asking_itself(
    server: ServerInfo, exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(60):
        exporter.clear()
        reply = await ask(client, "Q-RECURSE")
        # the deepest ask was refused by the router's guard, at the same limit as
        # agent-to-agent messages; each level above echoed what it got
        assert "HOP_LIMIT_EXCEEDED" in reply
        assert "after 9 agent-to-agent hops (the limit is 8" in reply
        spans = await finished(exporter, "POST /api/v1/agents/<name>/messages")
        # the first message and one per hop up to the limit; the ninth hop is refused
        assert sum(s.name == "invoke_agent looper" for s in spans) == 9
        # no runaway: the server answers, and the agent serves the next question at once
        assert (await client.get("/api/v1/health")).status_code == 200
        with trio.fail_after(10):
            assert await ask(client, "plain words") == "plain words"
        metrics = (await client.get(server.metrics_url or "")).text
        refused = [
            line
            for line in metrics.splitlines()
            if line.startswith("caxton_mcp_server_tool_call_duration_seconds_count")
            and 'outcome="error"' in line
        ]
        assert refused, "the refused ask is counted as an error on /mcp"


async def mcp_calls_continue_the_callers_trace(
    server: ServerInfo, exporter: InMemorySpanExporter, client: httpx.AsyncClient
) -> None:
    with trio.fail_after(30):
        exporter.clear()
        assert '"content": "traced hello"' in await ask(client, "Q-TRACE")  # echo's envelope
        spans = await finished(exporter, "tools/call ask_echo", "invoke_agent echo")
        tool = named(spans, "execute_tool mcp_self_ask_echo")
        served = named(spans, "tools/call ask_echo")
        # the /mcp side is the child of the agent's tool span (via _meta, not the HTTP header)
        assert served.parent is not None
        assert served.parent.span_id == tool.context.span_id
        assert served.context.trace_id == tool.context.trace_id
        echo = named(spans, "invoke_agent echo")
        assert echo.parent is not None
        assert echo.parent.span_id == served.context.span_id

        # an MCP client's HTTP traceparent is continued; a _meta traceparent wins over it
        for headers, meta, trace in (
            ({"traceparent": TRACEPARENT}, None, TRACE),
            ({"traceparent": TRACEPARENT}, {"traceparent": META_TRACEPARENT}, META_TRACE),
            ({}, {"traceparent": "00-garbage", "caxtonHop": "x"}, None),
        ):
            exporter.clear()
            params: dict[str, Any] = {"name": "ask_echo", "arguments": {"question": "hi"}}
            if meta is not None:
                params["_meta"] = meta
            body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
            answer = await client.post("/mcp", json=body, headers=headers)
            assert answer.status_code == 200, answer.text
            assert '"content": "hi"' in answer.json()["result"]["structuredContent"]["reply"]
            spans = await finished(exporter, "tools/call ask_echo", "invoke_agent echo")
            served = named(spans, "tools/call ask_echo")
            if trace is not None:
                assert f"{served.context.trace_id:032x}" == trace
            else:  # a malformed one is ignored: a child of the request's own span
                assert served.parent is not None
                assert not served.parent.is_remote


async def a_hop_count_in_meta_is_held_to_the_limit(client: httpx.AsyncClient) -> None:
    for hop, refused in ((8, False), (9, True), (10**12, True), (-5, False)):
        params = {
            "name": "ask_echo",
            "arguments": {"question": "hi"},
            "_meta": {"caxtonHop": hop},
        }
        body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": params}
        answer = (await client.post("/mcp", json=body)).json()["result"]
        assert answer.get("isError", False) is refused, (hop, answer)
        if refused:
            assert "HOP_LIMIT_EXCEEDED" in json.dumps(answer)


def named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


async def finished(exporter: InMemorySpanExporter, *names: str) -> list[ReadableSpan]:
    while True:
        spans = list(exporter.get_finished_spans())
        if all(any(s.name == name for s in spans) for name in names):
            return spans
        await trio.sleep(0.01)
