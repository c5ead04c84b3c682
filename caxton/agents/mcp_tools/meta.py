"""What Caxton carries in a ``tools/call`` request's ``_meta`` (issue #19): the hop count, so
that the loop guard holds when an agent's MCP server is Caxton's own ``/mcp``, and the W3C
trace context, so that the server's span continues the caller's trace.

The SDK sends requests from its own session task, where the calling tool's span is not the
current one, so the trace context cannot go in an HTTP header; it goes in ``_meta`` under
``traceparent`` and ``tracestate``, as the MCP community proposal for trace context does.
Both sides live here: the client builds with :func:`outgoing_meta`, ``/mcp`` reads with
:func:`read_meta`. Pure apart from reading the current span.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Final

import attrs

from caxton.tracing import inject

if TYPE_CHECKING:
    from collections.abc import Mapping

#: The hop count of the message a tool call sends (the same key as A2A's ``metadata``).
HOP_KEY: Final = "caxtonHop"
TRACEPARENT_KEY: Final = "traceparent"
TRACESTATE_KEY: Final = "tracestate"
#: Longest ``traceparent``/``tracestate`` taken from a caller (the W3C limits are 55 and 512).
MAX_TRACE_VALUE: Final = 512


@attrs.frozen(kw_only=True)
class CallMeta:
    """What ``/mcp`` takes from a caller's ``_meta``: the hop count (capped) and the trace
    context (``None`` when absent or not a string of sane length)."""

    hop: int = 0
    traceparent: str | None = None
    tracestate: str | None = None


def outgoing_meta(hop: int) -> dict[str, Any]:
    """``_meta`` of a tool call that an agent makes while answering a message of hop
    ``hop - 1``: the hop count, and the current span's trace context (with tracing on)."""
    meta: dict[str, Any] = {HOP_KEY: hop}
    carrier: dict[str, str] = {}
    inject(carrier)
    for key in (TRACEPARENT_KEY, TRACESTATE_KEY):
        if carrier.get(key):
            meta[key] = carrier[key]
    return meta


def read_meta(meta: object, *, ceiling: int) -> CallMeta:
    """The :class:`CallMeta` in a request's ``_meta``; anything malformed is left out.

    The hop count is capped at ``ceiling``: a caller can only make its message refused
    sooner, never later, than the loop guard would.
    """
    if not isinstance(meta, dict):
        return CallMeta()
    hop = meta.get(HOP_KEY)
    if isinstance(hop, bool) or not isinstance(hop, int | float) or not math.isfinite(hop):
        hop = 0
    return CallMeta(
        hop=max(0, min(int(hop), ceiling)),
        traceparent=_text(meta, TRACEPARENT_KEY),
        tracestate=_text(meta, TRACESTATE_KEY),
    )


def _text(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    if isinstance(value, str) and 0 < len(value) <= MAX_TRACE_VALUE:
        return value
    return None
