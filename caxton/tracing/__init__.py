"""OpenTelemetry tracing (issue #18): spans with the GenAI conventions, W3C trace context in
and out, OTLP/HTTP export; nothing at all when ``observability.tracing_enabled`` is off."""

from caxton.tracing.setup import TracingSettings, open_tracing, shutdown_provider
from caxton.tracing.spans import (
    context_from,
    inject,
    set_attributes,
    span,
    stamped,
    trace_id,
    traceparent,
    tracer,
)

__all__ = [
    "TracingSettings",
    "context_from",
    "inject",
    "open_tracing",
    "set_attributes",
    "shutdown_provider",
    "span",
    "stamped",
    "trace_id",
    "traceparent",
    "tracer",
]
