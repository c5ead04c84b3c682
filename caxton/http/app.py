"""The Quart-trio application factory.

``create_app`` wires route tables, the JSON error envelope, request ids, the canonical request
log line and the request-duration histogram. Components that add routes (agents, memory,
messaging, admin) pass their :class:`~caxton.http.routes.RouteTable` in; nothing registers at
import time.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import TYPE_CHECKING

from quart import Response, g, request, websocket
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from caxton.errors import CaxtonError
from caxton.http import admin, agents, errors, events_ws, health, memory, openapi
from caxton.http import messages as messaging
from caxton.http.asgi import REQUEST_ID_PATTERN, DrainRequestBody
from caxton.http.guard import install as install_security
from caxton.http.state import ROUTES_KEY, STATE_KEY, server_state

if TYPE_CHECKING:
    from caxton.http.routes import RouteSpec, RouteTable
    from caxton.http.state import ServerState

LOGGER = logging.getLogger("caxton.http")

#: Tables every server has; components add theirs through ``create_app(tables=...)``.
CORE_TABLES: tuple[RouteTable, ...] = (
    health.routes,
    openapi.routes,
    events_ws.routes,
    agents.routes,
    memory.routes,
    messaging.routes,
    admin.routes,
)


def create_app(state: ServerState, tables: tuple[RouteTable, ...] = ()) -> QuartTrio:
    """Build the Quart app for ``state`` with the core routes plus ``tables``."""
    app = QuartTrio("caxton")
    app.config[STATE_KEY] = state
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
    app.before_request(_start_request)
    app.before_websocket(_start_websocket)
    app.after_request(_finish_request)
    install_security(app, state)
    app.before_request(admin.refuse_in_safe_mode)  # after auth: 401 before 503
    return app


def asgi_app(app: QuartTrio, state: ServerState) -> DrainRequestBody:
    """``app`` wrapped for hypercorn (see :mod:`caxton.http.asgi`)."""
    return DrainRequestBody(app, max_body=state.config.server.max_request_size)


def _request_id(header: str | None) -> str:
    if header and REQUEST_ID_PATTERN.match(header):
        return header
    return uuid.uuid4().hex


async def _start_request() -> None:
    g.started = time.perf_counter()
    g.request_id = _request_id(request.headers.get("X-Request-ID"))


async def _start_websocket() -> None:
    g.started = time.perf_counter()
    g.request_id = _request_id(websocket.headers.get("X-Request-ID"))


async def _finish_request(response: Response) -> Response:
    request_id = getattr(g, "request_id", None) or _request_id(None)
    response.headers["X-Request-ID"] = request_id
    started = getattr(g, "started", None)
    duration = time.perf_counter() - started if started is not None else 0.0
    route = request.url_rule.rule if request.url_rule is not None else "<unmatched>"
    server_state().metrics.http_duration.labels(
        route=route, method=request.method, status=str(response.status_code)
    ).observe(duration)
    LOGGER.info(
        "%s %s %d %.1fms",
        request.method,
        route,
        response.status_code,
        duration * 1000,
        extra={
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": response.status_code,
            "duration_ms": round(duration * 1000, 2),
            "request_id": request_id,
        },
    )
    return response
