"""OpenTelemetry tracing (issue #18): the span tree of real requests (in-memory exporter), the
OTLP/HTTP wire (a loopback collector decoding the protobuf with ``opentelemetry-proto``), the
trace id in error envelopes and log lines, the bounded shutdown, and no cost when off."""

from __future__ import annotations

import functools
import json
import logging
import shutil
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import httpx
import trio
from config_agent_servers import agent_toml, openai_url
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind
from servers import REPO, loopback_config
from wsclient import open_ws

from caxton.server import ServerInfo, serve
from caxton.tracing import TracingSettings, open_tracing, span, tracer

if TYPE_CHECKING:
    from pathlib import Path

    import pytest
    from opentelemetry.sdk.trace import ReadableSpan

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE}-{PARENT}-01"
WS_TRACE = "5bf92f3577b34da6a3ce929d0e0e4737"
WS_TRACEPARENT = f"00-{WS_TRACE}-{PARENT}-01"

LOOP = {
    "rules": [
        {
            "match": "forecast please",
            "tool_call": {"name": "memory_search", "arguments": {"query": "weather"}},
            "cache_read_tokens": 40,
        },
        {"regex": ".", "reply": "Sunny all week."},
    ]
}


async def traced_server(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path, exporter: Any, **config: object
) -> ServerInfo:
    loaded = loopback_config(
        tmp_path / "data",
        server__agents_dir=str(agents_dir),
        observability__tracing_enabled=True,
        **config,
    )
    run = functools.partial(serve, loaded, handle_signals=False, span_exporters=[exporter])
    info: ServerInfo = await nursery.start(run)
    return info


def span_id(item: ReadableSpan) -> int:
    return item.get_span_context().span_id  # type: ignore[union-attr]


def children(spans: list[ReadableSpan], parent: ReadableSpan) -> list[ReadableSpan]:
    return sorted(
        (s for s in spans if s.parent is not None and s.parent.span_id == span_id(parent)),
        key=lambda s: s.start_time or 0,
    )


def named(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    (found,) = [s for s in spans if s.name == name]
    return found


async def finished(exporter: InMemorySpanExporter, *names: str) -> list[ReadableSpan]:
    """Every finished span, once spans of each of ``names`` are among them (a server span
    ends just after its response has been sent, so a client may see the answer first)."""
    while True:
        spans = list(exporter.get_finished_spans())
        if all(any(s.name == name for s in spans) for name in names):
            return spans
        await trio.sleep(0.01)


async def test_span_tree_of_a_config_agent_that_calls_a_tool_and_searches_memory(
    nursery: trio.Nursery,
    start_llm,
    tmp_path: Path,
    agents_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    llm = await start_llm(LOOP)
    memory = '[memory]\nenabled = true\nscope = "workspace"\n'
    text = agent_toml("oracle", openai_url(llm), tools=("memory_search",), extra=memory)
    (agents_dir / "oracle.toml").write_text(text)
    exporter = InMemorySpanExporter()
    server = await traced_server(nursery, tmp_path, agents_dir, exporter)
    caplog.set_level(logging.INFO, logger="caxton")
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:
            answer = await client.post(
                "/api/v1/agents/oracle/messages",
                json={"content": "forecast please"},
                headers={"traceparent": TRACEPARENT},
            )
            missing = await client.get("/api/v1/agents/nobody")
        url = server.api_urls[0].replace("http://", "ws://") + "/ws/agents/oracle"
        async with open_ws(url, {"traceparent": WS_TRACEPARENT}) as ws:
            await ws.send_message(json.dumps({"content": "forecast please"}))
            frame = {"type": ""}
            while frame["type"] not in ("done", "error"):
                frame = json.loads(await ws.get_message())
        assert frame["type"] == "done", frame
        spans = await finished(
            exporter,
            "POST /api/v1/agents/<name>/messages",
            "GET /api/v1/agents/<name>",
            "WS /ws/agents/<name>",
        )
        # request lines are written by the request log's own task, a batch after the reply
        while not any(
            getattr(r, "trace_id", None) == TRACE for r in caplog.records if r.name == "caxton.http"
        ):
            await trio.sleep(0.01)
    assert answer.status_code == 200, answer.text

    # the HTTP server span continues the caller's trace
    posted = [s for s in spans if f"{s.context.trace_id:032x}" == TRACE]  # type: ignore[union-attr]
    root = named(posted, "POST /api/v1/agents/<name>/messages")
    assert root.kind is SpanKind.SERVER
    assert f"{root.context.trace_id:032x}" == TRACE  # type: ignore[union-attr]
    assert root.parent is not None
    assert f"{root.parent.span_id:016x}" == PARENT
    assert root.attributes is not None
    assert root.attributes["http.response.status_code"] == 200
    assert root.attributes["http.route"] == "/api/v1/agents/<name>/messages"

    # invoke_agent under it; under that: the memory context, two chats and the tool
    (invoke,) = children(spans, root)
    assert invoke.name == "invoke_agent oracle"
    assert invoke.attributes is not None
    assert invoke.attributes["gen_ai.agent.name"] == "oracle"
    assert invoke.attributes["gen_ai.agent.version"] == "1.0.0"
    assert invoke.attributes["caxton.agent.track"] == "stable"
    assert invoke.attributes["gen_ai.conversation.id"] == answer.json()["conversation_id"]
    steps = [s.name for s in children(spans, invoke)]
    assert steps == [
        "search_memory",
        "chat scripted-1",
        "execute_tool memory_search",
        "chat scripted-1",
    ]
    tool = named(posted, "execute_tool memory_search")
    assert [s.name for s in children(spans, tool)] == ["search_memory"]
    assert tool.attributes is not None
    assert tool.attributes["gen_ai.tool.name"] == "memory_search"

    first_chat = children(spans, invoke)[1]
    attributes = first_chat.attributes
    assert attributes is not None
    assert first_chat.kind is SpanKind.CLIENT
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == "openai"
    assert attributes["gen_ai.request.model"] == "scripted-1"
    assert attributes["gen_ai.response.model"] == "scripted-1"
    reported = llm.reported[0]
    assert attributes["gen_ai.usage.input_tokens"] == reported["prompt_tokens"]
    assert attributes["gen_ai.usage.output_tokens"] == reported["completion_tokens"]
    assert attributes["gen_ai.usage.cache_read.input_tokens"] == 40
    assert attributes["gen_ai.response.finish_reasons"] == ("tool_calls",)

    # the LLM call carried the chat span's trace context
    sent = llm.requests[0].traceparent
    assert sent is not None
    assert sent.split("-")[1] == TRACE
    assert sent.split("-")[2] == f"{span_id(first_chat):016x}"

    # the trace id in the error envelope and in the request's log lines
    error = missing.json()["error"]
    assert error["code"] == "AGENT_NOT_FOUND" or missing.status_code == 404
    failed = named(spans, "GET /api/v1/agents/<name>")
    assert error["trace_id"] == f"{failed.context.trace_id:032x}"  # type: ignore[union-attr]
    request_lines = [r for r in caplog.records if r.name == "caxton.http"]
    assert any(getattr(r, "trace_id", None) == TRACE for r in request_lines)

    # a WebSocket message: its own server span, continuing the handshake's trace
    message = named(spans, "WS /ws/agents/<name>")
    assert message.kind is SpanKind.SERVER
    assert f"{message.context.trace_id:032x}" == WS_TRACE  # type: ignore[union-attr]
    assert [s.name for s in children(spans, message)] == ["invoke_agent oracle"]


async def test_a_wasm_agent_that_messages_another_is_its_parent_across_the_router(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    for name in ("asker.toml", "asker.wasm", "wordcount.toml", "wordcount.wasm"):
        shutil.copy(REPO / "agents" / name, agents_dir / name)
    exporter = InMemorySpanExporter()
    server = await traced_server(nursery, tmp_path, agents_dir, exporter)
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:
            answer = await client.post(
                "/api/v1/agents/asker/messages", json={"content": "the quick brown fox"}
            )
            assert answer.status_code == 200, answer.text
        # wordcount answers in the background (then asker reads its reply): wait for it
        spans = await finished(exporter, "invoke_agent wordcount", "wasm wordcount")
    asked = [s for s in spans if s.name == "invoke_agent asker"]
    first = min(asked, key=lambda s: s.start_time or 0)
    (guest,) = children(spans, first)
    assert guest.name == "wasm asker"
    assert guest.attributes is not None
    assert guest.attributes["caxton.wasm.outcome"] == "ok"
    assert int(guest.attributes["caxton.wasm.fuel_used"]) > 0  # type: ignore[arg-type]
    counted = named(spans, "invoke_agent wordcount")
    assert counted.parent is not None
    assert counted.parent.span_id == span_id(guest)  # the receiver is the sender's child
    assert counted.context.trace_id == first.context.trace_id  # type: ignore[union-attr]
    assert counted.attributes is not None
    assert counted.attributes["caxton.message.sender"] == "asker"
    assert counted.attributes["caxton.message.hop"] == 1
    assert [s.name for s in children(spans, counted)] == ["wasm wordcount"]


class Collector:
    """A loopback OTLP/HTTP collector: answers 200 to ``POST /v1/traces`` and keeps each
    decoded ``ExportTraceServiceRequest``."""

    def __init__(self) -> None:
        self.requests: list[ExportTraceServiceRequest] = []
        self.paths: list[str] = []
        self.received = trio.Event()

    async def serve(self, *, task_status: trio.TaskStatus[int]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        async with stream:
            data = b""
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        return
                    data += chunk
                head, _, body = data.partition(b"\r\n\r\n")
                lines = head.split(b"\r\n")
                length = 0
                for line in lines[1:]:
                    name, _, value = line.partition(b":")
                    if name.strip().lower() == b"content-length":
                        length = int(value)
                while len(body) < length:
                    body += await stream.receive_some(65536)
                data = body[length:]
                self.paths.append(lines[0].split()[1].decode())
                message = ExportTraceServiceRequest()
                message.ParseFromString(body[:length])
                self.requests.append(message)
                self.received.set()
                await stream.send_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
                    b"content-length: 0\r\n\r\n"
                )

    def span_names(self) -> list[str]:
        return [
            item.name
            for request in self.requests
            for resource in request.resource_spans
            for scope in resource.scope_spans
            for item in scope.spans
        ]


async def test_spans_reach_an_otlp_collector_over_http(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    collector = Collector()
    port = await nursery.start(collector.serve)
    loaded = loopback_config(
        tmp_path / "data",
        server__agents_dir=str(agents_dir),
        observability__tracing_enabled=True,
        observability__otlp_endpoint=f"http://127.0.0.1:{port}",
    )
    with trio.fail_after(30):
        async with trio.open_nursery() as inner:
            server: ServerInfo = await inner.start(
                functools.partial(serve, loaded, handle_signals=False)
            )
            async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=20) as client:
                answer = await client.post(
                    "/api/v1/agents/echo/messages",
                    json={"content": "hello"},
                    headers={"traceparent": TRACEPARENT},
                )
                assert answer.status_code == 200
            server.stop()  # the stop flushes the batch processor
    assert collector.paths
    assert set(collector.paths) == {"/v1/traces"}
    names = collector.span_names()
    assert "POST /api/v1/agents/<name>/messages" in names
    assert "invoke_agent echo" in names
    assert "wasm echo" in names
    resource = collector.requests[0].resource_spans[0].resource
    service = {a.key: a.value.string_value for a in resource.attributes}
    assert service["service.name"] == "caxton"
    traces = {
        item.trace_id.hex()
        for request in collector.requests
        for resource_spans in request.resource_spans
        for scope in resource_spans.scope_spans
        for item in scope.spans
    }
    assert TRACE in traces


async def test_shutdown_is_bounded_when_the_collector_never_answers(
    nursery: trio.Nursery,
) -> None:
    # a listener that accepts connections and never answers: the worst collector
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    held: list[trio.SocketStream] = []

    async def hold() -> None:
        async with listener:
            while True:
                held.append(await listener.accept())

    nursery.start_soon(hold)
    settings = TracingSettings.resolve(
        enabled=True, otlp_endpoint=f"http://127.0.0.1:{port}", environ={}
    )
    assert settings.endpoint == f"http://127.0.0.1:{port}/v1/traces"
    started = 0.0
    with trio.fail_after(10):
        async with open_tracing(settings) as provider:
            assert provider is not None
            for index in range(50):
                with span(f"work {index}"):
                    pass
            started = time.monotonic()
        elapsed = time.monotonic() - started
    assert elapsed < 2.2, f"shutdown took {elapsed:.2f}s"
    assert tracer() is None
    for stream in held:
        await stream.aclose()


def test_tracing_off_makes_no_opentelemetry_object() -> None:
    """With tracing off (the default) a whole request path runs without importing
    OpenTelemetry at all: no provider, no span, no propagator."""
    code = """
import sys, trio, tempfile, httpx, functools
sys.path.insert(0, "tests")
from servers import loopback_config
from caxton.server import serve

async def main():
    loaded = loopback_config(tempfile.mkdtemp() + "/data")
    async with trio.open_nursery() as nursery:
        info = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
        async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
            r = await client.post("/api/v1/agents/echo/messages", json={"content": "hi"},
                                  headers={"traceparent": "TRACEPARENT"})
            assert r.status_code in (200, 404), r.text
            r = await client.get("/api/v1/agents/nobody")
            assert "trace_id" not in r.json()["error"]
        info.stop()
    loaded_modules = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
    assert not loaded_modules, loaded_modules
    print("no opentelemetry")

trio.run(main)
""".replace("TRACEPARENT", TRACEPARENT)
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no opentelemetry" in result.stdout
