"""The spans Caxton records, and the W3C trace context it carries (issue #18).

Every helper first asks :func:`tracer`: a context variable that is ``None`` unless
``observability.tracing_enabled`` set up a provider (:mod:`caxton.tracing.setup`). So with
tracing off no OpenTelemetry object is made and each call site costs one context-variable
read. Span names and attributes follow the OpenTelemetry GenAI conventions (``invoke_agent
{name}``, ``chat {model}``, ``execute_tool {tool}``, ``gen_ai.*``).
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping, MutableMapping

    from opentelemetry.context import Context
    from opentelemetry.trace import Span, Tracer

    Attributes: TypeAlias = Mapping[str, Any] | Callable[[], Mapping[str, Any]] | None

_TRACER: contextvars.ContextVar[Tracer | None] = contextvars.ContextVar(
    "caxton_tracer", default=None
)

TRACEPARENT: Final = "traceparent"
Kind = Literal["internal", "server", "client", "producer", "consumer"]


def tracer() -> Tracer | None:
    """The tracer of the server this task belongs to, or ``None`` with tracing off."""
    return _TRACER.get()


def set_tracer(value: Tracer | None) -> contextvars.Token[Tracer | None]:
    return _TRACER.set(value)


def reset_tracer(token: contextvars.Token[Tracer | None]) -> None:
    _TRACER.reset(token)


#: What :func:`span` returns with tracing off: one shared, stateless context manager.
_OFF: Final[contextlib.nullcontext[None]] = contextlib.nullcontext()


def span(
    name: str,
    attributes: Attributes = None,
    *,
    kind: Kind = "internal",
    parent: Context | None = None,
) -> contextlib.AbstractContextManager[Span | None]:
    """A span around the block (the current span inside it), or ``None`` with tracing off.

    With tracing off this is one context-variable read and a shared no-op context manager:
    nothing is allocated. ``attributes`` may be a function building them, called only with
    tracing on. An exception leaving the block marks the span as an error (``error.type`` is
    the exception's class, or a Caxton error's code) and is re-raised.
    """
    active = _TRACER.get()
    if active is None:
        return _OFF
    values = attributes() if callable(attributes) else attributes
    return _recording(active, name, values, kind, parent)


@contextlib.contextmanager
def _recording(
    active: Tracer,
    name: str,
    attributes: Mapping[str, Any] | None,
    kind: Kind,
    parent: Context | None,
) -> Iterator[Span]:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    with active.start_as_current_span(
        name,
        context=parent,
        kind=getattr(SpanKind, kind.upper()),
        attributes=_clean(attributes),
        record_exception=False,
        set_status_on_exception=False,
    ) as current:
        try:
            yield current
        except BaseException as exc:
            if _is_cancelled(exc):
                current.set_attribute("error.type", "cancelled")
            else:
                code = getattr(exc, "code", None)
                current.set_attribute(
                    "error.type", code if isinstance(code, str) else type(exc).__qualname__
                )
                current.set_status(Status(StatusCode.ERROR, str(exc)[:500]))
            raise


def _is_cancelled(exc: BaseException) -> bool:
    import trio

    return isinstance(exc, trio.Cancelled)


def _clean(attributes: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """Attributes without ``None`` values (OpenTelemetry refuses them)."""
    if not attributes:
        return None
    return {key: value for key, value in attributes.items() if value is not None}


def set_attributes(current: Span | None, attributes: Mapping[str, Any]) -> None:
    if current is not None:
        cleaned = _clean(attributes)
        if cleaned:
            current.set_attributes(cleaned)


def trace_id() -> str | None:
    """The current trace id as 32 hex digits, or ``None`` (tracing off, or no span)."""
    if _TRACER.get() is None:
        return None
    from opentelemetry.trace import get_current_span

    context = get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def traceparent() -> str | None:
    """The W3C ``traceparent`` of the current span, or ``None``."""
    if _TRACER.get() is None:
        return None
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier.get(TRACEPARENT)


def inject(headers: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` to outgoing ``headers`` (no-op with tracing
    off): MCP and A2A clients call this on their requests, as the LLM pool does."""
    if _TRACER.get() is None:
        return
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    TraceContextTextMapPropagator().inject(headers)


def context_from(value: str | None, state: str | None = None) -> Context | None:
    """The parent context a ``traceparent`` (and its ``tracestate``) names, or ``None`` for an
    absent or malformed one (a hostile header only loses its link, it never fails the
    request)."""
    if not value or _TRACER.get() is None or len(value) > 256:
        return None
    from opentelemetry.trace import get_current_span
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier = {TRACEPARENT: value}
    if state and len(state) <= 512:
        carrier["tracestate"] = state
    context = TraceContextTextMapPropagator().extract(carrier)
    return context if get_current_span(context).get_span_context().is_valid else None


M = TypeVar("M")


def stamped(message: M) -> M:
    """``message`` (an envelope) carrying the current span's ``traceparent`` in its
    ``trace_context``, so the receiving agent's span is a child of the sender's wherever the
    router delivers it; unchanged with tracing off."""
    value = traceparent()
    if value is None:
        return message
    import attrs

    return attrs.evolve(message, trace_context=value)  # type: ignore[misc]
