"""The one metrics registry every component registers into, and its exposition server.

Components receive the :class:`Metrics` object and create their collectors through it, so a
test (or a second server in one process) gets a fresh registry. The exposition endpoint is a
small HTTP/1.1 server (h11) run as a trio task on ``observability.metrics_port``: no threads.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any, TypeVar

import h11
import trio
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

LOGGER = logging.getLogger("caxton.metrics")
#: The longest a scrape waits for one of :meth:`Metrics.refresh`'s refreshers (seconds).
REFRESH_TIMEOUT_S = 2.0

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


_M = TypeVar("_M", bound="_LabelsFastPath")


class _LabelsFastPath:
    """``labels(name=value, ...)`` that finds an existing child with one dict lookup.

    prometheus-client's ``labels`` checks the names, converts every value to ``str`` and takes
    the metric's lock on every call; the request path calls it once per request. When every
    value is already a string and the child exists, the child is read straight from the
    metric's own children (so ``remove``/``clear`` are seen at once); anything else (a first
    use, a value to convert, a wrong name) goes through prometheus-client unchanged.
    """

    _labelnames: tuple[str, ...]
    _metrics: dict[Sequence[str], Any]

    def labels(self: _M, *labelvalues: object, **labelkwargs: object) -> _M:
        if labelkwargs and not labelvalues and len(labelkwargs) == len(self._labelnames):
            try:
                key = tuple([labelkwargs[name] for name in self._labelnames])
            except KeyError:
                pass
            else:
                child = self._metrics.get(key)  # type: ignore[arg-type]
                if child is not None:
                    return child  # type: ignore[no-any-return]
        return super().labels(*labelvalues, **labelkwargs)  # type: ignore[misc,no-any-return]


class FastCounter(_LabelsFastPath, Counter):
    """A :class:`~prometheus_client.Counter` with the ``labels`` fast path."""


class FastGauge(_LabelsFastPath, Gauge):
    """A :class:`~prometheus_client.Gauge` with the ``labels`` fast path."""


class FastHistogram(_LabelsFastPath, Histogram):
    """A :class:`~prometheus_client.Histogram` with the ``labels`` fast path."""


def resident_memory_bytes() -> int:
    """Resident set size of this process (0 where /proc is unavailable)."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, IndexError, ValueError):
        return 0


class Metrics:
    """A Prometheus registry plus the server-level collectors.

    Args:
        started_at: ``time.monotonic()`` at process start, for the uptime gauge.
    """

    def __init__(self, *, started_at: float | None = None) -> None:
        # The seed's dashboards expect plain series, not the extra ``*_created`` ones.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=True)
        self.started_at = time.monotonic() if started_at is None else started_at
        self.uptime = self.gauge(
            "caxton_server_uptime_seconds", "Seconds since the server started."
        )
        self.uptime.set_function(lambda: time.monotonic() - self.started_at)
        self.memory = self.gauge(
            "caxton_server_memory_usage_bytes", "Resident memory of the server process."
        )
        self.memory.set_function(lambda: float(resident_memory_bytes()))
        self.cpu = self.gauge(
            "caxton_server_cpu_seconds",
            "CPU time (user + system, every thread) the server process has used; "
            "rate() of it is the number of cores in use.",
        )
        self.cpu.set_function(time.process_time)
        self.restarts = self.counter(
            "caxton_server_restarts",
            "Starts of the server on this data_dir after the first one.",
        )
        #: what :meth:`refresh` awaits before a scrape (figures read from elsewhere)
        self._refreshers: list[Callable[[], Awaitable[object]]] = []
        self.http_duration = self.histogram(
            "caxton_http_request_duration_seconds",
            "HTTP request duration by route template, method and status.",
            ["route", "method", "status"],
            buckets=HTTP_BUCKETS,
        )

    def gauge(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Gauge:
        return FastGauge(name, documentation, labelnames=labels, registry=self.registry)

    def counter(self, name: str, documentation: str, labels: Sequence[str] = ()) -> Counter:
        """A counter; prometheus-client exposes it as ``<name>_total``."""
        return FastCounter(name, documentation, labelnames=labels, registry=self.registry)

    def histogram(
        self,
        name: str,
        documentation: str,
        labels: Sequence[str] = (),
        *,
        buckets: Sequence[float] = HTTP_BUCKETS,
    ) -> Histogram:
        return FastHistogram(
            name, documentation, labelnames=labels, buckets=buckets, registry=self.registry
        )

    def refresh_with(self, refresher: Callable[[], Awaitable[object]]) -> None:
        """Have :meth:`refresh` await ``refresher`` (a component reading figures that live
        elsewhere, like a shared database's totals, when someone looks rather than on a timer)."""
        self._refreshers.append(refresher)

    async def refresh(self) -> None:
        """Bring the figures the registry reads from elsewhere up to date (before a scrape or
        a summary); each refresher is bounded by :data:`REFRESH_TIMEOUT_S` and its errors
        are logged, never raised: a scrape still answers with what is known."""
        for refresher in self._refreshers:
            with trio.move_on_after(REFRESH_TIMEOUT_S) as scope:
                try:
                    await refresher()
                except Exception:
                    LOGGER.exception("metrics: a refresh before the scrape failed")
            if scope.cancelled_caught:
                LOGGER.warning(
                    "metrics: a refresh took over %.0fs; the scrape shows what was known",
                    REFRESH_TIMEOUT_S,
                )

    def exposition(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)


class MetricsServer:
    """Serves ``GET /metrics`` from a :class:`Metrics` registry.

    Args:
        metrics: the registry to expose.
        host: address to bind.
        port: port to bind (0 picks a free one).
    """

    def __init__(self, metrics: Metrics, *, host: str, port: int) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        """Bind, report the URL through ``task_status``, then serve until cancelled.

        Cancellation:
            Cancelling stops the listener and every open connection at once; scrapes are
            short and idempotent, so nothing needs to drain.
        """
        listeners = await trio.open_tcp_listeners(self.port, host=self.host)
        sockname = listeners[0].socket.getsockname()
        url = f"http://{_host_for_url(sockname[0])}:{sockname[1]}/metrics"
        LOGGER.info("metrics on %s", url)
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, self._handle, listeners)
            task_status.started(url)

    async def _handle(self, stream: trio.SocketStream) -> None:
        connection = h11.Connection(h11.SERVER)
        try:
            with trio.move_on_after(30):
                while True:
                    event = await self._next_event(connection, stream)
                    if not isinstance(event, h11.Request):
                        return
                    while not isinstance(
                        await self._next_event(connection, stream), h11.EndOfMessage
                    ):
                        pass
                    await self._respond(connection, stream, event)
                    if connection.our_state is not h11.DONE:
                        return
                    connection.start_next_cycle()
        except (h11.ProtocolError, trio.BrokenResourceError, trio.ClosedResourceError):
            return
        finally:
            await stream.aclose()

    async def _next_event(self, connection: h11.Connection, stream: trio.SocketStream) -> object:
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await stream.receive_some(65536))
                continue
            if isinstance(event, h11.ConnectionClosed):
                return None
            return event

    async def _respond(
        self, connection: h11.Connection, stream: trio.SocketStream, request: h11.Request
    ) -> None:
        path = request.target.split(b"?", 1)[0]
        if request.method not in (b"GET", b"HEAD"):
            status, body, content_type = 405, b"method not allowed\n", "text/plain"
        elif path == b"/metrics":
            await self.metrics.refresh()
            status, body, content_type = 200, self.metrics.exposition(), CONTENT_TYPE_LATEST
        elif path == b"/":
            status, body, content_type = 200, b"Caxton metrics: see /metrics\n", "text/plain"
        else:
            status, body, content_type = 404, b"not found: see /metrics\n", "text/plain"
        headers = [("content-type", content_type), ("content-length", str(len(body)))]
        await stream.send_all(connection.send(h11.Response(status_code=status, headers=headers)))
        if request.method != b"HEAD":
            await stream.send_all(connection.send(h11.Data(data=body)))
        await stream.send_all(connection.send(h11.EndOfMessage()))


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host else host
