"""The server span of every HTTP request (issue #18): an ASGI wrapper, installed only with
tracing on.

It continues an incoming W3C ``traceparent`` (a malformed one starts a new trace), names the
span ``{method} {route}`` once the app has matched the route (:func:`name_request_span`, from
the request hook), and records the status. WebSocket connections only carry the handshake's
trace context on: each message gets its own span where it is answered.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from caxton.tracing.spans import TRACEPARENT, context_from, span

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[..., Awaitable[None]]

_TRACEPARENT_HEADER = TRACEPARENT.encode()


def _traceparent(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name.lower() == _TRACEPARENT_HEADER:
            return bytes(value).decode("latin1")
    return None


class TraceRequests:
    """Wraps an ASGI app; see the module docstring."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = str(scope.get("method", "GET"))
        attributes = {
            "http.request.method": method,
            "url.path": scope.get("path"),
            "url.scheme": scope.get("scheme"),
            "client.address": (scope.get("client") or (None,))[0],
        }
        with span(
            method, attributes, kind="server", parent=context_from(_traceparent(scope))
        ) as current:
            assert current is not None  # installed only with tracing on

            async def traced_send(message: Message) -> None:
                if message["type"] == "http.response.start":
                    status = int(message.get("status", 0))
                    current.set_attribute("http.response.status_code", status)
                    if status >= 500:
                        from opentelemetry.trace import Status, StatusCode

                        current.set_status(Status(StatusCode.ERROR))
                await send(message)

            await self.app(scope, receive, traced_send)


def name_request_span(method: str, route: str | None) -> None:
    """Name the current server span after the matched route (low cardinality)."""
    from opentelemetry.trace import get_current_span

    current = get_current_span()
    if route is not None:
        current.update_name(f"{method} {route}")
        current.set_attribute("http.route", route)
