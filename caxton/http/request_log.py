"""The canonical request log line, written off the request path (issue #21).

A request only captures its fields (a :class:`RequestEntry`: a tuple, no string work) and hands
them to a bounded memory channel with ``send_nowait``. The :class:`RequestLog` component, a task
of the server's root nursery, takes what has gathered every ``flush_interval_s``, formats the
lines in the trio thread and writes each handler's lines with one ``write`` and one flush in a
worker thread, so a slow or blocked stderr (or ``logging.file``) never holds up a request.

The line is the one ``LOGGER.info("%s %s %d %.1fms", ..., extra={...})`` wrote before, byte for
byte: for the JSON format it is encoded straight from the entry (no ``LogRecord``, no handler
lock per line); any other formatter gets the ``LogRecord`` it always got, and a handler that is
not a plain stream or file handler (a test's ``caplog``) gets ``handle(record)`` as before.

A full channel does not block: the line is dropped and counted
(``caxton_log_lines_dropped_total``), and one warning per ``report_interval_s`` says how many
went missing. A graceful stop writes everything still queued (bounded by ``close_timeout_s``).
"""

from __future__ import annotations

import logging
import math
import time
from typing import TYPE_CHECKING, NamedTuple, NoReturn, TextIO

import attrs
import trio

from caxton.logs import JSON_ENCODER, JSONFormatter, is_standard_field

if TYPE_CHECKING:
    from prometheus_client import Counter

    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.http")

#: The request line's format and level, as the HTTP layer always wrote it.
LINE_FORMAT = "%s %s %d %.1fms"
LINE_LEVEL = logging.INFO


class RequestEntry(NamedTuple):
    """What one request's log line says, captured on the request path.

    A named tuple rather than an attrs class: one is made per request, and a tuple is the
    cheapest value to build.
    """

    #: ``time.time()`` when the response was ready (the line's timestamp)
    created: float
    method: str
    #: the route template (``/api/v1/agents/<name>``) or ``<unmatched>``
    route: str
    path: str
    status: int
    duration_s: float
    request_id: str
    #: the request's trace (with tracing on), as the tracing record factory adds it
    trace_id: str | None = None


def make_record(entry: RequestEntry, logger: logging.Logger = LOGGER) -> logging.LogRecord:
    """The ``LogRecord`` the request line has always been: same message, ``extra`` fields,
    their order, and the creation time of the request (not of the write)."""
    record = logger.makeRecord(
        logger.name,
        LINE_LEVEL,
        "(unknown file)",
        0,
        LINE_FORMAT,
        (entry.method, entry.route, entry.status, entry.duration_s * 1000),
        None,
    )
    created = entry.created
    record.relativeCreated += (created - record.created) * 1000
    record.created = created
    record.msecs = int((created - int(created)) * 1000) + 0.0
    if entry.trace_id is not None:
        record.trace_id = entry.trace_id
    fields = vars(record)
    fields["method"] = entry.method
    fields["route"] = entry.route
    fields["path"] = entry.path
    fields["status"] = entry.status
    fields["duration_ms"] = round(entry.duration_s * 1000, 2)
    fields["request_id"] = entry.request_id
    return record


def log_now(entry: RequestEntry, logger: logging.Logger = LOGGER) -> None:
    """Write ``entry``'s line at once, through ``logging`` (no :class:`RequestLog` runs)."""
    if logger.isEnabledFor(LINE_LEVEL):
        logger.handle(make_record(entry, logger))


@attrs.frozen(kw_only=True)
class RequestLogStatistics:
    """A snapshot of the request log's counters."""

    #: lines formatted and handed to the outputs (or to ``logging`` handlers)
    lines_total: int
    #: lines dropped because the queue was full (``caxton_log_lines_dropped_total``)
    dropped_total: int
    #: batch writes an output refused (closed or broken)
    write_errors_total: int
    #: lines waiting to be written
    queued: int


class _Direct:
    """A plain stream handler whose lines the writer formats and writes itself."""

    __slots__ = ("handler", "json", "lines")

    def __init__(self, handler: logging.StreamHandler[TextIO], json: JSONFormatter | None) -> None:
        self.handler = handler
        self.json = json
        self.lines: list[str] = []


#: Handler classes whose ``emit`` is exactly "format, write, terminator, flush".
_PLAIN_HANDLERS = (logging.StreamHandler, logging.FileHandler)


class RequestLog:
    """Writes the request lines in batches from its own task (a component).

    Args:
        metrics: the registry the drop counter is created in (None: not exported).
        capacity: the most lines waiting to be written; more are dropped and counted.
        flush_interval_s: how long the writer gathers lines after the first one of a batch.
        max_batch: the most lines formatted and written at once.
        report_interval_s: the least time between two warnings about dropped lines.
        close_timeout_s: the bound on writing what is still queued when the server stops.
        logger: the logger whose level and handlers the lines follow.
    """

    def __init__(
        self,
        metrics: Metrics | None = None,
        *,
        capacity: int = 8192,
        flush_interval_s: float = 0.05,
        max_batch: int = 1024,
        report_interval_s: float = 10.0,
        close_timeout_s: float = 5.0,
        logger: logging.Logger = LOGGER,
    ) -> None:
        if capacity < 1 or max_batch < 1:
            raise ValueError(f"capacity and max_batch must be positive: {capacity}, {max_batch}")
        self._send, self._receive = trio.open_memory_channel[RequestEntry | logging.LogRecord](
            capacity
        )
        self.capacity = capacity
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.report_interval_s = report_interval_s
        self.close_timeout_s = close_timeout_s
        self.logger = logger
        self._dropped_counter: Counter | None = None
        if metrics is not None:
            self._dropped_counter = metrics.counter(
                "caxton_log_lines_dropped",
                "Request log lines dropped because the log output did not keep up.",
            )
        self._running = False
        self._limiter = trio.CapacityLimiter(1)
        #: taken from the channel, not formatted yet; formatted, not written yet
        self._held: list[RequestEntry | logging.LogRecord] = []
        self._unwritten: list[_Direct] = []
        self.lines_total = 0
        self.dropped_total = 0
        self.write_errors_total = 0
        self._reported = 0
        self._reported_at = self._dropping_since = time.monotonic()

    # ----------------------------------------------------------------------------- request path

    def enabled(self) -> bool:
        """Whether a request line would be written at all (the logger's level)."""
        return self.logger.isEnabledFor(LINE_LEVEL)

    def send_nowait(self, entry: RequestEntry) -> None:
        """Queue ``entry``'s line; never blocks.

        With the writer not running (before start, after stop) the line is written at once
        through ``logging``; with the queue full it is dropped and counted.
        """
        if not self._running:
            log_now(entry, self.logger)
            return
        try:
            self._send.send_nowait(entry)
        except trio.WouldBlock:
            self._count_dropped(1)

    def _count_dropped(self, count: int) -> None:
        if count:
            if self.dropped_total == self._reported:
                self._dropping_since = time.monotonic()
            self.dropped_total += count
            if self._dropped_counter is not None:
                self._dropped_counter.inc(count)

    def statistics(self) -> RequestLogStatistics:
        """Return a snapshot of the request log's counters."""
        return RequestLogStatistics(
            lines_total=self.lines_total,
            dropped_total=self.dropped_total,
            write_errors_total=self.write_errors_total,
            queued=self._receive.statistics().current_buffer_used + len(self._held),
        )

    # ----------------------------------------------------------------------------- the writer

    async def run(
        self, *, task_status: trio.TaskStatus[RequestLog] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Write queued lines in batches until cancelled.

        Cancellation:
            Stops taking new lines (later ones are written at once, through ``logging``),
            then writes everything still queued, shielded, within ``close_timeout_s``; what
            a blocked output could not take by then is counted as dropped.
        """
        self._running = True
        task_status.started(self)
        try:
            while True:
                # woken by a line, or when unreported drops are due their warning
                with trio.move_on_at(self._note_due()):
                    self._held.append(await self._receive.receive())
                    await trio.sleep(self.flush_interval_s)
                await self._write_queued()
                if (note := self._drop_note()) is not None:
                    self._held.append(note)
                    await self._write_queued()
        finally:
            self._running = False
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.close_timeout_s
                if any(target.lines for target in self._unwritten):
                    # formatted, but the stop came before (or while) its write ran
                    await self._write_lines(self._unwritten)
                await self._write_queued()
                if (note := self._drop_note(force=True)) is not None:
                    self._held.append(note)
                    await self._write_queued()
            # what a blocked output could not take within the bound
            self._count_dropped(len(self._held) + len(self._take(self.capacity)))

    async def _write_queued(self) -> None:
        """Write what is held and queued, ``max_batch`` lines at a time, until none is left.

        A line leaves ``_held`` only once formatted, with no checkpoint between: a stop
        never loses one in between."""
        while True:
            batch = self._held + self._take(self.max_batch - len(self._held))
            if not batch:
                return
            self._held = batch
            direct = self._format(batch)
            self._held = []
            if any(target.lines for target in direct):
                await self._write_lines(direct)

    async def _write_lines(self, direct: list[_Direct]) -> None:
        self._unwritten = direct
        self.write_errors_total += await trio.to_thread.run_sync(
            _write_lines, direct, limiter=self._limiter, abandon_on_cancel=True
        )
        self._unwritten = []

    def _take(self, most: int) -> list[RequestEntry | logging.LogRecord]:
        taken: list[RequestEntry | logging.LogRecord] = []
        receive = self._receive.receive_nowait
        try:
            while len(taken) < most:
                taken.append(receive())
        except trio.WouldBlock:
            pass
        return taken

    def _note_due(self) -> float:
        """When (trio time) the warning about unreported drops is due; never without any."""
        if self.dropped_total == self._reported:
            return math.inf
        wait = self._reported_at + self.report_interval_s - time.monotonic()
        return trio.current_time() + max(0.0, wait)

    def _drop_note(self, *, force: bool = False) -> logging.LogRecord | None:
        """The warning about lines dropped since the last one, at most one per
        ``report_interval_s`` (and one at stop)."""
        dropped = self.dropped_total - self._reported
        if not dropped:
            return None
        now = time.monotonic()
        if not force and now - self._reported_at < self.report_interval_s:
            return None
        record = self.logger.makeRecord(
            self.logger.name,
            logging.WARNING,
            "(unknown file)",
            0,
            "dropped %d request log lines in the last %.0fs: the log output (stderr or "
            "logging.file) did not keep up; make it faster or raise logging.level to warn",
            (dropped, now - self._dropping_since),
            None,
        )
        self._reported = self.dropped_total
        self._reported_at = now
        return record

    def _format(self, batch: list[RequestEntry | logging.LogRecord]) -> list[_Direct]:
        """Each plain handler's lines for ``batch`` (written later, in a worker thread);
        other handlers get ``handle(record)`` here, as ``logging`` would call them."""
        self.lines_total += len(batch)
        if self.logger.filters:  # the logger's own filters see every record, as before
            for item in batch:
                self.logger.handle(self._record(item))
            return []
        direct, others = self._handlers()
        json_lines = _JsonLines(self.logger.name, self._factory_fields())
        for item in batch:
            record: logging.LogRecord | None = None
            for target in direct:
                handler = target.handler
                if target.json is not None and isinstance(item, RequestEntry):
                    if handler.level <= LINE_LEVEL:
                        target.lines.append(json_lines.line(item, target.json))
                    continue
                record = record or self._record(item)
                if record.levelno >= handler.level:
                    target.lines.append(handler.format(record))
            if others:
                record = record or self._record(item)
                for other in others:
                    if record.levelno >= other.level:
                        other.handle(record)
        return direct

    def _record(self, item: RequestEntry | logging.LogRecord) -> logging.LogRecord:
        return item if isinstance(item, logging.LogRecord) else make_record(item, self.logger)

    def _handlers(self) -> tuple[list[_Direct], list[logging.Handler]]:
        """The handlers a request line reaches, split into those this writer writes to
        itself and those that get ``handle(record)``; looked up per batch, so a reload
        (SIGHUP) or a test's handler is seen at once."""
        direct: list[_Direct] = []
        others: list[logging.Handler] = []
        logger: logging.Logger | None = self.logger
        while logger is not None:
            for handler in logger.handlers:
                if (
                    isinstance(handler, logging.StreamHandler)
                    and type(handler) in _PLAIN_HANDLERS
                    and not handler.filters
                    and handler.stream is not None
                ):
                    formatter = handler.formatter
                    json = formatter if type(formatter) is JSONFormatter else None
                    direct.append(_Direct(handler, json))
                else:
                    others.append(handler)
            logger = logger.parent if logger.propagate else None
        return direct, others

    def _factory_fields(self) -> dict[str, object]:
        """Fields the installed record factory adds to every record (``worker``): what a
        record made now carries beyond the standard ones. The factory is the same for a
        whole batch; it is asked once per batch."""
        factory = logging.getLogRecordFactory()
        if factory is logging.LogRecord:
            return {}
        probe = factory(self.logger.name, LINE_LEVEL, "", 0, "", (), None)
        return {key: value for key, value in vars(probe).items() if not is_standard_field(key)}


#: Every field a request line has of its own (a record factory's field named like one of
#: them leaves the line to the dict, whose order then decides where it goes).
_ENTRY_FIELDS = frozenset(
    {"ts", "level", "logger", "message", "trace_id", "method", "route", "path", "status"}
    | {"duration_ms", "request_id"}
)


class _JsonLines:
    """Request lines in the JSON format, the text :meth:`JSONFormatter.encode` makes of the
    line's fields, byte for byte, put together from pieces instead of through a dict: the
    parts every line of a batch shares (the logger, the record factory's fields) are encoded
    once, each value with the formatter's own encoder (issue #21: a third of the cost of a
    line)."""

    __slots__ = ("fallback", "head", "logger", "tail")

    def __init__(self, logger: str, factory_fields: dict[str, object]) -> None:
        encode = JSON_ENCODER.encode
        self.logger = logger
        self.head = f'", "level": "info", "logger": {encode(logger)}, "message": '
        self.tail = "".join(
            f", {encode(key)}: {encode(value)}" for key, value in factory_fields.items()
        )
        #: a factory field named like one of the line's own: the dict decides their order
        self.fallback = factory_fields if _ENTRY_FIELDS.intersection(factory_fields) else None

    def line(self, entry: RequestEntry, formatter: JSONFormatter) -> str:
        created = entry.created
        ts = formatter.timestamp_of(created, int((created - int(created)) * 1000))
        ms = entry.duration_s * 1000
        message = f"{entry.method} {entry.route} {entry.status} {ms:.1f}ms"
        if self.fallback is not None:
            return self._through_dict(entry, formatter, ts, message, ms)
        encode = JSON_ENCODER.encode
        trace = "" if entry.trace_id is None else f', "trace_id": {encode(entry.trace_id)}'
        return (
            f'{{"ts": "{ts}{self.head}{encode(message)}{self.tail}{trace}'
            f', "method": {encode(entry.method)}, "route": {encode(entry.route)}'
            f', "path": {encode(entry.path)}, "status": {int(entry.status)!r}'
            f', "duration_ms": {round(ms, 2)!r}, "request_id": {encode(entry.request_id)}}}'
        )

    def _through_dict(
        self, entry: RequestEntry, formatter: JSONFormatter, ts: str, message: str, ms: float
    ) -> str:
        payload: dict[str, object] = {
            "ts": ts,
            "level": "info",
            "logger": self.logger,
            "message": message,
        }
        payload.update(self.fallback or {})
        if entry.trace_id is not None:
            payload["trace_id"] = entry.trace_id
        payload["method"] = entry.method
        payload["route"] = entry.route
        payload["path"] = entry.path
        payload["status"] = entry.status
        payload["duration_ms"] = round(ms, 2)
        payload["request_id"] = entry.request_id
        return formatter.encode(payload)


def _write_lines(targets: list[_Direct]) -> int:
    """In the worker thread: each handler's lines with one write and one flush, under the
    handler's lock (so a line of another logger never lands inside the batch). Returns how
    many writes failed (as ``logging`` does, a failing output never raises here)."""
    failed = 0
    for target in targets:
        lines = target.lines
        target.lines = []
        if not lines:
            continue
        handler = target.handler
        terminator = handler.terminator
        text = terminator.join(lines) + terminator
        handler.acquire()
        try:
            handler.stream.write(text)
            handler.flush()
        except (OSError, ValueError):  # a closed or broken output
            failed += 1
        finally:
            handler.release()
    return failed
