"""The request log line, written by its own task (issue #21): the same line as before, in
order, everything written at stop, a full queue dropping and counting instead of blocking, and
a blocked log output that does not hold up requests."""

from __future__ import annotations

import fcntl
import functools
import io
import json
import logging
import os
import struct
import termios
import time
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from servers import loopback_config

from caxton.http.request_log import RequestEntry, RequestLog, _JsonLines
from caxton.logs import JSONFormatter, TextFormatter
from caxton.metrics import Metrics
from caxton.server import serve

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

F_GETPIPE_SZ = getattr(fcntl, "F_GETPIPE_SZ", 1032)  # Linux; named in fcntl from Python 3.10


@pytest.fixture
def caxton_logger() -> Iterator[logging.Logger]:
    """The ``caxton`` logger as ``configure_logging`` leaves it (own handlers, no
    propagation), put back as it was afterwards."""
    root = logging.getLogger("caxton")
    saved = (list(root.handlers), root.level, root.propagate)
    root.handlers = []
    root.propagate = False
    root.setLevel(logging.INFO)
    yield root
    for handler in root.handlers:
        handler.close()
    root.handlers, level, root.propagate = saved[0], saved[1], saved[2]
    root.setLevel(level)


def _handler(
    stream: io.StringIO, formatter: logging.Formatter
) -> logging.StreamHandler[io.StringIO]:
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    return handler


def _entries(count: int, *, trace: bool = False) -> list[RequestEntry]:
    now = time.time()
    return [
        RequestEntry(
            now + i / 1000,
            "POST" if i % 2 else "GET",
            "/api/v1/agents/<name>",
            f'/api/v1/agents/a{i}\n"x',  # what a client sent: escaped, never a new line
            200 + i % 300,
            0.0123456 * i,
            f"{i:032x}",
            f"{i:032x}" if trace else None,
        )
        for i in range(count)
    ]


def _line_as_before(formatter: logging.Formatter, entry: RequestEntry) -> str:
    """The line as the HTTP layer wrote it before (``LOGGER.info`` with ``extra``)."""
    logger = logging.getLogger("caxton.http")
    ms = entry.duration_s * 1000
    record = logger.makeRecord(
        logger.name,
        logging.INFO,
        "app.py",
        1,
        "%s %s %d %.1fms",
        (entry.method, entry.route, entry.status, ms),
        None,
        extra={
            **({"trace_id": entry.trace_id} if entry.trace_id else {}),
            "method": entry.method,
            "route": entry.route,
            "path": entry.path,
            "status": entry.status,
            "duration_ms": round(ms, 2),
            "request_id": entry.request_id,
        },
    )
    record.created = entry.created
    record.msecs = int((entry.created - int(entry.created)) * 1000) + 0.0
    return formatter.format(record)


@pytest.mark.parametrize("trace", [False, True])
async def test_lines_keep_their_order_and_content(
    caxton_logger: logging.Logger, *, trace: bool
) -> None:
    json_out, text_out = io.StringIO(), io.StringIO()
    caxton_logger.addHandler(_handler(json_out, JSONFormatter()))
    caxton_logger.addHandler(_handler(text_out, TextFormatter()))
    entries = _entries(3000, trace=trace)
    log = RequestLog(flush_interval_s=0.001, max_batch=200)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            for i, entry in enumerate(entries):
                log.send_nowait(entry)
                if i % 500 == 0:
                    await trio.sleep(0.005)  # several batches, some written while others queue
            while log.lines_total < len(entries):
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert json_out.getvalue().splitlines() == [
        _line_as_before(JSONFormatter(), e) for e in entries
    ]
    assert text_out.getvalue().splitlines() == [
        _line_as_before(TextFormatter(), e) for e in entries
    ]
    first = json.loads(json_out.getvalue().splitlines()[1])
    assert first["message"] == "POST /api/v1/agents/<name> 201 12.3ms"
    assert first["path"] == '/api/v1/agents/a1\n"x'
    assert log.dropped_total == 0


async def test_a_record_factory_field_is_kept(caxton_logger: logging.Logger) -> None:
    # `caxton start --workers N` tags every record of a worker with a record factory
    out = io.StringIO()
    caxton_logger.addHandler(_handler(out, JSONFormatter()))
    previous = logging.getLogRecordFactory()

    def tagged(*args: object, **kwargs: object) -> logging.LogRecord:
        record = previous(*args, **kwargs)  # type: ignore[arg-type]
        record.worker = 2
        return record

    logging.setLogRecordFactory(tagged)
    try:
        (entry,) = _entries(1, trace=True)
        log = RequestLog(flush_interval_s=0)
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            log.send_nowait(entry)
            nursery.cancel_scope.cancel()
        assert out.getvalue().splitlines() == [_line_as_before(JSONFormatter(), entry)]
        assert list(json.loads(out.getvalue()))[4:6] == ["worker", "trace_id"]
    finally:
        logging.setLogRecordFactory(previous)


async def test_stop_writes_everything_still_queued(caxton_logger: logging.Logger) -> None:
    out = io.StringIO()
    caxton_logger.addHandler(_handler(out, JSONFormatter()))
    entries = _entries(5000)
    log = RequestLog(flush_interval_s=60.0, max_batch=300)  # nothing written before the stop
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            for entry in entries:
                log.send_nowait(entry)
            await trio.testing.wait_all_tasks_blocked()
            assert out.getvalue() == ""
            nursery.cancel_scope.cancel()
    lines = out.getvalue().splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [e.request_id for e in entries]
    # after the stop a line is written at once, through logging
    (late,) = _entries(1)
    log.send_nowait(late)
    assert out.getvalue().splitlines()[-1] == _line_as_before(JSONFormatter(), late)


async def test_a_full_queue_drops_and_counts_instead_of_blocking(
    caxton_logger: logging.Logger,
) -> None:
    out = io.StringIO()
    caxton_logger.addHandler(_handler(out, JSONFormatter()))
    metrics = Metrics()
    log = RequestLog(metrics, capacity=100, flush_interval_s=60.0)
    entries = _entries(250)
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            started = time.perf_counter()
            for entry in entries:
                log.send_nowait(entry)  # never waits
            assert time.perf_counter() - started < 1.0
            stats = log.statistics()
            # the writer was handed the first; 100 wait; 149 dropped
            assert (stats.dropped_total, stats.queued) == (149, 100)
            nursery.cancel_scope.cancel()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    written = [line["request_id"] for line in lines if "request_id" in line]
    assert written == [e.request_id for e in entries[:101]]  # the oldest kept, in order
    (warning,) = [line for line in lines if line["level"] == "warning"]
    assert warning["message"].startswith("dropped 149 request log lines in the last ")
    exposed = metrics.exposition().decode()
    assert "caxton_log_lines_dropped_total 149.0" in exposed


async def test_drops_are_reported_once_per_interval_without_waiting_for_traffic(
    caxton_logger: logging.Logger,
) -> None:
    out = io.StringIO()
    caxton_logger.addHandler(_handler(out, JSONFormatter()))
    log = RequestLog(capacity=10, flush_interval_s=0, report_interval_s=0.3)

    def warnings() -> list[str]:
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        return [line["message"] for line in lines if line["level"] == "warning"]

    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(log.run)
            for entry in _entries(30):
                log.send_nowait(entry)
            for entry in _entries(20):  # more drops before the first warning is due
                log.send_nowait(entry)
            while not warnings():  # no more lines come: the warning comes by itself
                await trio.sleep(0.02)
            assert len(out.getvalue().splitlines()) == 12  # the first, 10 queued, the warning
            for entry in _entries(30):
                log.send_nowait(entry)
            while len(warnings()) < 2:
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    first, second = warnings()
    assert first.startswith("dropped 39 request log lines in the last 0s")
    assert second.startswith("dropped 19 request log lines in the last 0s")


async def test_a_blocked_log_output_does_not_hold_up_requests(
    tmp_path: Path, caxton_logger: logging.Logger
) -> None:
    # the log goes into a pipe nobody reads yet: once it is full, a write blocks
    read_fd, write_fd = os.pipe()
    output = os.fdopen(write_fd, "w", encoding="utf-8")
    handler = logging.StreamHandler(output)
    handler.setFormatter(JSONFormatter())
    caxton_logger.addHandler(handler)
    requests = 600  # ~170 KiB of request lines: far more than the pipe takes (64 KiB)
    ids = []

    def read_lines() -> list[str]:
        seen = b""
        while seen.count(b'"route": "/health"') < requests:
            seen += os.read(read_fd, 1 << 16)
        return seen.decode().splitlines()

    try:
        async with trio.open_nursery() as nursery:
            loaded = loopback_config(tmp_path / "data")
            server = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
            with trio.fail_after(30):  # a request waiting for the log would never end
                async with httpx.AsyncClient(base_url=server.api_urls[0]) as client:
                    for _ in range(requests):
                        answer = await client.get("/health")
                        assert answer.status_code == 200
                        ids.append(answer.headers["X-Request-ID"])
            pending = struct.unpack("i", fcntl.ioctl(read_fd, termios.FIONREAD, b"\0" * 4))[0]
            size = fcntl.fcntl(read_fd, F_GETPIPE_SZ)
            with trio.fail_after(30):  # once read, the pipe takes the rest: none was lost
                lines = await trio.to_thread.run_sync(read_lines, abandon_on_cancel=True)
            nursery.cancel_scope.cancel()
    finally:
        caxton_logger.removeHandler(handler)
        output.close()
        os.close(read_fd)
    logged = [json.loads(line) for line in lines]
    assert [line["request_id"] for line in logged if line.get("route") == "/health"] == ids
    # the requests were served while the pipe was full and most of their lines still waited
    assert pending <= size < len("\n".join(lines))


@pytest.mark.parametrize(
    "factory_fields",
    [{}, {"worker": 2, "zone": "café\u2028"}, {"status": "a field named like the line's own"}],
)
def test_a_json_line_put_together_is_the_formatters_line(factory_fields: dict[str, object]) -> None:
    """The JSON line is assembled from pieces; it must be what the formatter makes of the
    fields as a dict (the line as it always was), whatever the values hold."""
    formatter = JSONFormatter()
    lines = _JsonLines("caxton.http", factory_fields)
    entries = [
        *_entries(5, trace=True),
        RequestEntry(time.time(), "GET", "<unmatched>", "/naïve/\u2029/\x00\x7f", 404, 0, "r"),
        RequestEntry(1.5, "DELETE", "/x", "/x", 599, 12.3456789, "\"quoted\\id'"),
    ]
    for entry in entries:
        created, ms = entry.created, entry.duration_s * 1000
        payload: dict[str, object] = {
            "ts": formatter.timestamp_of(created, int((created - int(created)) * 1000)),
            "level": "info",
            "logger": "caxton.http",
            "message": f"{entry.method} {entry.route} {entry.status} {ms:.1f}ms",
            **factory_fields,
        }
        if entry.trace_id is not None:
            payload["trace_id"] = entry.trace_id
        payload.update(
            method=entry.method,
            route=entry.route,
            path=entry.path,
            status=entry.status,
            duration_ms=round(ms, 2),
            request_id=entry.request_id,
        )
        assert lines.line(entry, formatter) == formatter.encode(payload)
        assert json.loads(lines.line(entry, formatter))["path"] == entry.path
