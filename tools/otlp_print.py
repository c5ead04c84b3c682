"""Print the spans Caxton exports, as trees: a tiny OTLP/HTTP collector for a terminal.

A DEVELOPMENT TOOL, not part of Caxton: for trying tracing without Jaeger or an OpenTelemetry
Collector. It listens on 127.0.0.1, answers ``POST /v1/traces`` (protobuf, as
``opentelemetry-exporter-otlp-proto-http`` sends it), decodes each batch with
``opentelemetry-proto`` and prints every trace of the batch as an indented tree: span name,
duration, and the attributes worth reading (GenAI usage, tools, agents, status).

    .venv/bin/python tools/otlp_print.py [--port 4318]

then, in caxton.yaml::

    observability:
      tracing_enabled: true
      otlp_endpoint: http://127.0.0.1:4318

Spans of one trace arrive over several batches (a span is exported when it ends, children
before their parent): they are kept until the trace's server span (an HTTP request or a
WebSocket message) arrives, then the whole tree is printed. Work that outlives the request
(an agent answering in the background) prints as a trace of its own when it ends.
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from typing import Any

import trio
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

#: Largest batch accepted (the exporter's own default limit is far above what Caxton sends).
MAX_BODY = 16 * 1024 * 1024
#: Traces kept while waiting for their server span (the oldest are printed past this).
MAX_PENDING = 1000
SERVER_KIND = 2  # Span.SpanKind.SPAN_KIND_SERVER
#: Attributes printed after a span's name, when present.
SHOWN = (
    "http.response.status_code",
    "gen_ai.agent.version",
    "caxton.agent.track",
    "gen_ai.provider.name",
    "gen_ai.response.model",
    "gen_ai.usage.input_tokens",
    "gen_ai.usage.output_tokens",
    "gen_ai.usage.cache_read.input_tokens",
    "gen_ai.usage.cache_creation.input_tokens",
    "gen_ai.response.finish_reasons",
    "caxton.memory.hits",
    "caxton.wasm.fuel_used",
    "caxton.wasm.outcome",
    "error.type",
)


def _value(value: Any) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


def spans_of(request: ExportTraceServiceRequest) -> list[Any]:
    return [
        item
        for resource in request.resource_spans
        for scope in resource.scope_spans
        for item in scope.spans
    ]


class Pending:
    """Spans by trace until the trace's server span arrives."""

    def __init__(self) -> None:
        self.traces: dict[bytes, list[Any]] = {}
        self.printed: dict[bytes, None] = {}  # insertion-ordered, bounded

    def add(self, spans: list[Any]) -> list[list[Any]]:
        """Keep ``spans``; return the traces now complete (in arrival order). Spans of a
        trace already printed (work that outlived its request) come back at once."""
        complete: list[bytes] = []
        late: dict[bytes, list[Any]] = {}
        for item in spans:
            if item.trace_id in self.printed:
                late.setdefault(item.trace_id, []).append(item)
                continue
            self.traces.setdefault(item.trace_id, []).append(item)
            if item.kind == SERVER_KIND and item.trace_id not in complete:
                complete.append(item.trace_id)
        while len(self.traces) > MAX_PENDING:
            complete.append(next(iter(self.traces)))
        done = [self.traces.pop(trace) for trace in complete if trace in self.traces]
        for trace in complete:
            self.printed[trace] = None
        while len(self.printed) > MAX_PENDING:
            del self.printed[next(iter(self.printed))]
        return done + list(late.values())


def render(spans: list[Any]) -> str:
    """The spans of a trace as indented trees (children in start order)."""
    by_id = {item.span_id: item for item in spans}
    children: dict[bytes, list[Any]] = defaultdict(list)
    roots = []
    for item in spans:
        if item.parent_span_id and item.parent_span_id in by_id:
            children[item.parent_span_id].append(item)
        else:
            roots.append(item)
    lines: list[str] = []

    def walk(item: Any, depth: int) -> None:
        attributes = {a.key: _value(a.value) for a in item.attributes}
        shown = " ".join(
            f"{key.removeprefix('gen_ai.')}={attributes[key]}" for key in SHOWN if key in attributes
        )
        took = (item.end_time_unix_nano - item.start_time_unix_nano) / 1e6
        lines.append(f"{'  ' * depth}{item.name}  {took:.1f} ms  {shown}".rstrip())
        for child in sorted(children[item.span_id], key=lambda s: s.start_time_unix_nano):
            walk(child, depth + 1)

    for root in sorted(roots, key=lambda s: s.start_time_unix_nano):
        lines.append(f"trace {root.trace_id.hex()}")
        walk(root, 1)
    return "\n".join(lines)


PENDING = Pending()


async def handle(stream: trio.SocketStream) -> None:
    async with stream:
        data = b""
        while True:
            while b"\r\n\r\n" not in data:
                if len(data) > 65536:
                    return
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length > MAX_BODY:
                return
            while len(body) < length:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return
                body += chunk
            data = body[length:]
            request = ExportTraceServiceRequest()
            request.ParseFromString(body[:length])
            for trace in PENDING.add(spans_of(request)):
                print(render(trace), flush=True)
            await stream.send_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\n"
                b"content-length: 0\r\n\r\n"
            )


async def serve(port: int) -> None:
    listeners = await trio.open_tcp_listeners(port, host="127.0.0.1")
    bound = listeners[0].socket.getsockname()[1]
    print(f"OTLP/HTTP span printer (development tool) at http://127.0.0.1:{bound}", flush=True)
    await trio.serve_listeners(handle, listeners)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318, help="port on 127.0.0.1 (4318)")
    args = parser.parse_args(argv)
    try:
        trio.run(serve, args.port)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
