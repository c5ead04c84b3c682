"""Turning tracing on: the OpenTelemetry provider of one server (issue #18).

With ``observability.tracing_enabled`` the server opens a ``TracerProvider`` (service
``caxton``) for its lifetime and makes its tracer current for every task it starts
(:mod:`caxton.tracing.spans`). Spans are exported over OTLP/HTTP only when an endpoint is set:
``observability.otlp_endpoint`` or ``OTEL_EXPORTER_OTLP_ENDPOINT`` (a base URL; ``/v1/traces``
is added unless the URL already ends with it), through a batch processor whose thread is the
SDK's own. Closing is bounded to :data:`SHUTDOWN_S`: the exporter's own timeout is kept below
it, and the flush runs in a worker thread given up after that time, so a collector that is
down cannot stall a server's stop (the exporter's retries otherwise last about a minute).
With tracing off nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import contextlib
import logging
import os
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from caxton import __version__
from caxton.tracing.spans import reset_tracer, set_tracer, trace_id

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter


LOGGER = logging.getLogger("caxton.tracing")

#: The longest a server's stop waits for the last spans to be exported.
SHUTDOWN_S: Final = 2.0
#: Timeout of one OTLP export request (below SHUTDOWN_S, so a flush at stop can finish).
EXPORT_TIMEOUT_S: Final = 1.5
ENDPOINT_ENV: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
TRACES_PATH: Final = "/v1/traces"


@attrs.frozen(kw_only=True)
class TracingSettings:
    """Whether to trace, and where spans go (``None``: kept in process only)."""

    enabled: bool
    endpoint: str | None = None

    @classmethod
    def resolve(
        cls,
        *,
        enabled: bool,
        otlp_endpoint: str | None,
        environ: Mapping[str, str] | None = None,
    ) -> TracingSettings:
        """From ``observability.tracing_enabled`` and ``observability.otlp_endpoint`` (else
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` in ``environ``)."""
        env = os.environ if environ is None else environ
        base = otlp_endpoint or env.get(ENDPOINT_ENV) or None
        endpoint = None
        if base:
            base = base.rstrip("/")
            endpoint = base if base.endswith(TRACES_PATH) else base + TRACES_PATH
        return cls(enabled=enabled, endpoint=endpoint)


@contextlib.contextmanager
def trace_ids_in_log_records() -> Iterator[None]:
    """Every log record made inside a span carries its ``trace_id`` (both log formats print
    it as an extra field). A record factory, so that records of every logger and handler get
    it; installed only with tracing on, and the previous factory is put back on the way out.
    """
    previous = logging.getLogRecordFactory()

    def factory(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = previous(*args, **kwargs)
        current = trace_id()
        if current is not None:
            record.trace_id = current
        return record

    logging.setLogRecordFactory(factory)
    try:
        yield
    finally:
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(previous)


def make_provider(
    settings: TracingSettings, exporters: Sequence[SpanExporter] = ()
) -> TracerProvider:
    """The provider: batch export to the OTLP endpoint (if any), and ``exporters`` (tests'
    in-memory ones) through simple processors."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(
        resource=Resource.create({"service.name": "caxton", "service.version": __version__})
    )
    if settings.endpoint is not None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=settings.endpoint, timeout=EXPORT_TIMEOUT_S)
        provider.add_span_processor(
            BatchSpanProcessor(
                exporter,
                schedule_delay_millis=1000,
                export_timeout_millis=int(EXPORT_TIMEOUT_S * 1000),
            )
        )
    for extra in exporters:
        provider.add_span_processor(SimpleSpanProcessor(extra))
    return provider


async def shutdown_provider(provider: TracerProvider, timeout_s: float = SHUTDOWN_S) -> bool:
    """Flush and stop ``provider`` within ``timeout_s``; ``False`` when it was given up.

    Resource handling:
        The flush runs in a worker thread (the SDK's calls block); past the deadline the
        thread is abandoned, and ends by itself within the exporter's timeout.
    """
    with trio.move_on_after(timeout_s):
        await trio.to_thread.run_sync(provider.shutdown, abandon_on_cancel=True)
        return True
    LOGGER.warning(
        "tracing: the span exporter did not finish within %.0fs at shutdown; the last spans "
        "may be lost (is the OTLP endpoint reachable?)",
        timeout_s,
    )
    return False


@contextlib.asynccontextmanager
async def open_tracing(
    settings: TracingSettings, exporters: Sequence[SpanExporter] = ()
) -> AsyncIterator[TracerProvider | None]:
    """Trace the tasks started inside the block (``None`` and nothing made when off).

    Cancellation:
        The provider is shut down on the way out, shielded and bounded by
        :data:`SHUTDOWN_S`.
    """
    if not settings.enabled:
        yield None
        return
    provider = make_provider(settings, exporters)
    token = set_tracer(provider.get_tracer("caxton", __version__))
    LOGGER.info(
        "tracing on: spans %s",
        f"exported to {settings.endpoint}"
        if settings.endpoint
        else "kept in process (no observability.otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)",
    )
    try:
        with trace_ids_in_log_records():
            yield provider
    finally:
        reset_tracer(token)
        with trio.CancelScope(shield=True):
            await shutdown_provider(provider)
