"""What request handlers can reach: the config, metrics, components and lifecycle events."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, cast

import attrs
import trio
from quart import current_app

from caxton import __version__
from caxton.components import Components
from caxton.config import CaxtonConfig
from caxton.events import EventHub
from caxton.metrics import Metrics

if TYPE_CHECKING:
    from caxton.http.routes import RouteSpec

STATE_KEY = "CAXTON_STATE"
ROUTES_KEY = "CAXTON_ROUTES"


@attrs.define(kw_only=True)
class ServerState:
    """Shared by every handler of one server.

    ``stopping`` is set when a graceful shutdown starts: streaming handlers (SSE, WebSocket)
    watch it to end their streams cleanly before hypercorn's own deadline. ``stopped`` is set
    once the HTTP server has closed every connection.
    """

    config: CaxtonConfig
    metrics: Metrics
    components: Components
    events: EventHub = attrs.field(factory=EventHub)
    started_at: float = attrs.field(factory=time.monotonic)
    stopping: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    version: str = __version__

    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_at


def server_state() -> ServerState:
    """The :class:`ServerState` of the app handling the current request."""
    return cast("ServerState", current_app.config[STATE_KEY])


def declared_routes() -> list[RouteSpec]:
    """Every route declared on the app handling the current request."""
    return cast("list[RouteSpec]", current_app.config[ROUTES_KEY])
