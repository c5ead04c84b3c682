"""The Quart-trio application factory.

``create_app`` wires route tables, the JSON error envelope, request ids, the canonical request
log line and the request-duration histogram. Components that add routes (agents, memory,
messaging, admin) pass their :class:`~caxton.http.routes.RouteTable` in; nothing registers at
import time.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING, Any, TypeVar, cast

from quart import Response, g, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from caxton.errors import CaxtonError
from caxton.http import a2a as a2a_routes
from caxton.http import admin, agents, cluster, errors, events_ws, health, memory, openapi, usage
from caxton.http import messages as messaging
from caxton.http.asgi import REQUEST_ID_PATTERN, DrainRequestBody
from caxton.http.console.api import routes as console_api_routes
from caxton.http.guard import edge_headers
from caxton.http.guard import install as install_security
from caxton.http.mcp_server import endpoint as mcp_endpoint
from caxton.http.request_log import RequestEntry, RequestLog
from caxton.http.state import ROUTES_KEY, SERVICES_KEY
from caxton.tracing import trace_id, tracer
from caxton.tracing.asgi import TraceRequests, name_request_span
from caxton.usage import set_caller

if TYPE_CHECKING:
    from caxton.http.routes import RouteSpec, RouteTable
    from caxton.services import Services

#: Tables every server has; components add theirs through ``create_app(tables=...)``.
CORE_TABLES: tuple[RouteTable, ...] = (
    health.routes,
    openapi.routes,
    events_ws.routes,
    agents.routes,
    memory.routes,
    messaging.routes,
    admin.routes,
    cluster.routes,
    usage.routes,
    mcp_endpoint.routes,  # POST /mcp (issue #19)
    console_api_routes,
    a2a_routes.routes,
)


def create_app(
    state: Services, tables: tuple[RouteTable, ...] = (), request_log: RequestLog | None = None
) -> QuartTrio:
    """Build the Quart app for ``state`` with the core routes plus ``tables``; request lines
    go to ``request_log`` (without one, each is written at once, as a test's app does)."""
    app = QuartTrio("caxton")
    app.config[SERVICES_KEY] = state
    app.config["MAX_CONTENT_LENGTH"] = state.config.server.max_request_size
    app.config["JSON_SORT_KEYS"] = False
    app.json.sort_keys = False  # type: ignore[attr-defined]
    specs: list[RouteSpec] = []
    for table in (*CORE_TABLES, *tables):
        for spec in table.routes:
            if spec.websocket:
                app.add_websocket(spec.rule, spec.endpoint, spec.handler)
            else:
                app.add_url_rule(spec.rule, spec.endpoint, spec.handler, methods=spec.methods)
            specs.append(spec)
    app.config[ROUTES_KEY] = specs

    app.register_error_handler(CaxtonError, errors.caxton_error)
    app.register_error_handler(HTTPException, errors.http_error)
    app.register_error_handler(Exception, errors.unexpected_error)
    _install_hooks(app, state, request_log or RequestLog())
    return app


def asgi_app(app: QuartTrio, state: Services) -> DrainRequestBody | TraceRequests:
    """``app`` wrapped for hypercorn (see :mod:`caxton.http.asgi`); with tracing on, in a
    server span per request (:mod:`caxton.tracing.asgi`)."""
    drained = DrainRequestBody(app, max_body=state.config.server.max_request_size)
    return TraceRequests(drained) if tracer() is not None else drained


T = TypeVar("T")


def _current(proxy: T) -> T:
    """The object behind a Quart context proxy: one context lookup instead of one per use."""
    return cast("T", cast("Any", proxy)._get_current_object())


def _request_id(header: str | None) -> str:
    if header and REQUEST_ID_PATTERN.match(header):
        return header
    return os.urandom(16).hex()  # as uuid4().hex: 32 lowercase hex characters, cheaper


def _set_caller(seen: dict[str, Any]) -> None:
    """The caller LLM usage is accounted to: the key's name or the token's subject (issue
    #18)."""
    identity = seen.get("security_identity")
    set_caller(identity.name if identity is not None else None)


def _install_hooks(app: QuartTrio, state: Services, request_log: RequestLog) -> None:
    """One before- and one after-request hook (and one before-WebSocket hook) for everything.

    Per request, in this order: the start time and request id, the security checks
    (:mod:`caxton.http.guard`), the safe-mode refusal (after auth: 401 before 503); after the
    handler, the security headers and audit line, then ``X-Request-ID``, the duration histogram
    and the request log line. Quart calls each hook through a few layers, so one hook doing all
    of it costs less than one hook per step; the request and ``g`` are looked up once.
    """
    guard = install_security(app, state)
    tracing = tracer() is not None

    async def _start_request() -> Response | None:
        req = _current(request)
        seen = vars(_current(g))
        seen["started"] = time.perf_counter()
        headers = edge_headers(req.headers.items())
        seen["edge_headers"] = headers
        seen["request_id"] = _request_id(headers.get("x-request-id"))
        if tracing:
            rule = req.url_rule
            name_request_span(req.method, rule.rule if rule is not None else None)
        set_caller(None)
        answer = await guard.before_request(req, seen, headers)
        _set_caller(seen)
        if answer is None and state.safe_mode.enabled:
            await admin.refuse_in_safe_mode()
        return answer

    async def _start_websocket() -> None:
        seen = vars(_current(g))
        seen["started"] = time.perf_counter()
        ws = _current(websocket)
        seen["request_id"] = _request_id(ws.headers.get("X-Request-ID"))
        set_caller(None)
        await guard.before_websocket(ws, seen)
        _set_caller(seen)

    async def _finish_request(response: Response) -> Response:
        req = _current(request)
        seen = vars(_current(g))
        await guard.after_request(req, seen, response)
        request_id = seen.get("request_id") or _request_id(None)
        response.headers["X-Request-ID"] = request_id
        started = seen.get("started")
        duration = time.perf_counter() - started if started is not None else 0.0
        method = req.method
        route = req.url_rule.rule if req.url_rule is not None else "<unmatched>"
        status = response.status_code
        state.metrics.http_duration.labels(route=route, method=method, status=str(status)).observe(
            duration
        )
        if request_log.enabled():
            # only the fields: the line is formatted and written by the RequestLog's task
            request_log.send_nowait(
                RequestEntry(
                    time.time(),
                    method,
                    route,
                    req.path,
                    status,
                    duration,
                    request_id,
                    trace_id() if tracing else None,
                )
            )
        return response

    app.before_request(_start_request)
    app.before_websocket(_start_websocket)
    app.after_request(_finish_request)
