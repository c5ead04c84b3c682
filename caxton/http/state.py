"""What request handlers can reach: the config, metrics, components and lifecycle events."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, cast

import attrs
import trio
from quart import current_app

from caxton import __version__
from caxton.agents.logs import AgentLogs
from caxton.agents.registry import Registry
from caxton.agents.service import AgentService
from caxton.components import Components
from caxton.config import CaxtonConfig
from caxton.errors import ServiceUnavailable
from caxton.events import EventHub
from caxton.memory import MemoryService
from caxton.messaging import Conversations, Router
from caxton.metrics import Metrics
from caxton.ops.backup import BackupService
from caxton.ops.safe_mode import SafeMode
from caxton.security.gate import SecurityGate
from caxton.store import Store

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
    agent_logs: AgentLogs = attrs.field(factory=AgentLogs)
    registry: Registry | None = None
    memory: MemoryService | None = None
    store: Store | None = None
    agents: AgentService | None = None
    security: SecurityGate | None = None
    router: Router | None = None
    conversations: Conversations | None = None
    safe_mode: SafeMode = attrs.field(factory=SafeMode)
    backups: BackupService | None = None
    reload_hooks: list[Callable[[], Awaitable[None]]] = attrs.field(factory=list)
    started_at: float = attrs.field(factory=time.monotonic)
    stopping: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    version: str = __version__

    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_at

    def require_registry(self) -> Registry:
        """The agent registry, or 503 while it is not running."""
        if self.registry is None:
            raise ServiceUnavailable("the agent registry is not running yet")
        return self.registry

    def require_memory(self) -> MemoryService:
        """The memory service, or 503 while it is not running."""
        if self.memory is None:
            raise ServiceUnavailable("the memory system is not running yet")
        return self.memory

    def require_store(self) -> Store:
        if self.store is None:
            raise ServiceUnavailable("the store is not running yet")
        return self.store

    def require_router(self) -> Router:
        """The message router, or 503 while it is not running."""
        if self.router is None:
            raise ServiceUnavailable("the message router is not running yet")
        return self.router

    def require_conversations(self) -> Conversations:
        if self.conversations is None:
            raise ServiceUnavailable("conversations are not available yet")
        return self.conversations

    def require_agents(self) -> AgentService:
        if self.agents is None:
            raise ServiceUnavailable("the agent registry is not running yet")
        return self.agents


def server_state() -> ServerState:
    """The :class:`ServerState` of the app handling the current request."""
    return cast("ServerState", current_app.config[STATE_KEY])


def declared_routes() -> list[RouteSpec]:
    """Every route declared on the app handling the current request."""
    return cast("list[RouteSpec]", current_app.config[ROUTES_KEY])
