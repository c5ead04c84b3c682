"""One trace across two Caxton servers over A2A (issue #19): A's call to its remote A2A agent
(B's echo) is a client span of the caller's trace, its requests carry that span's
``traceparent`` (and B's API key, to B only), and B continues the trace: its A2A request span
and the echo's ``invoke_agent`` span are in the caller's trace."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import httpx
import trio
from a2a_servers import start_a2a_server
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

    from opentelemetry.sdk.trace import ReadableSpan

TRACE = "6bf92f3577b34da6a3ce929d0e0e4738"
TRACEPARENT = f"00-{TRACE}-00f067aa0ba902b7-01"


def in_trace(spans: list[ReadableSpan]) -> list[ReadableSpan]:
    return [s for s in spans if f"{s.context.trace_id:032x}" == TRACE]  # type: ignore[union-attr]


async def finished(exporter: InMemorySpanExporter, *names: str) -> list[ReadableSpan]:
    """The spans of the trace once spans of each of ``names`` have ended (a server span ends
    just after its response was sent)."""
    with trio.fail_after(10):
        while True:
            spans = in_trace(list(exporter.get_finished_spans()))
            if all(any(s.name == name for s in spans) for name in names):
                return spans
            await trio.sleep(0.01)


async def test_a_remote_a2a_call_carries_the_callers_trace(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    on_b = InMemorySpanExporter()
    b = await start_a2a_server(
        nursery,
        tmp_path / "b",
        observability__tracing_enabled=True,
        span_exporters=[on_b],
    )
    on_a = InMemorySpanExporter()
    card_url = f"{b.url}/a2a/echo/.well-known/agent-card.json"
    loaded = loopback_config(
        tmp_path / "a" / "data",
        server__agents_dir=str(tmp_path / "a" / "agents"),
        observability__tracing_enabled=True,
        a2a__remote_agents=[{"name": "b-echo", "card_url": card_url, "api_key": b.key}],
    )
    (tmp_path / "a" / "agents").mkdir(parents=True)
    a: ServerInfo = await nursery.start(
        functools.partial(serve, loaded, handle_signals=False, span_exporters=[on_a])
    )
    async with httpx.AsyncClient(base_url=a.api_urls[0], timeout=30) as client:
        answer = await client.post(
            "/api/v1/agents/b-echo/messages",
            json={"content": "traced across"},
            headers={"traceparent": TRACEPARENT},
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["content"]["content"] == "traced across"

    # on A: the caller's request, and under it the client span of the remote call
    sent = await finished(on_a, "invoke_agent b-echo", "POST /api/v1/agents/<name>/messages")
    call = next(s for s in sent if s.name == "invoke_agent b-echo")
    request = next(s for s in sent if s.name == "POST /api/v1/agents/<name>/messages")
    assert call.kind is SpanKind.CLIENT
    assert call.parent is not None
    assert call.parent.span_id == request.context.span_id  # type: ignore[union-attr]

    # on B: the A2A request continues A's trace from the traceparent A sent, and the echo's
    # span is under it
    served = await finished(on_b, "invoke_agent echo", "POST /a2a/<name>")
    rpc = [s for s in served if s.name == "POST /a2a/<name>"]
    assert rpc, [s.name for s in served]
    assert all(s.parent is not None for s in rpc)
    assert {s.parent.span_id for s in rpc} == {call.context.span_id}  # type: ignore[union-attr]
    echo = next(s for s in served if s.name == "invoke_agent echo")
    assert echo.parent is not None
    assert echo.parent.span_id in {s.context.span_id for s in rpc}  # type: ignore[union-attr]
