"""The services of one running server, handed to the HTTP layer as one frozen value.

The server builds every component in dependency order, each with what it needs handed in at
construction, then collects them here before the HTTP app is created: a handler never finds
a service missing, and nothing is filled in later.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import attrs
import trio

from caxton.a2a.remote import RemoteAgents
from caxton.a2a.service import A2AService
from caxton.agents.logs import AgentLogs
from caxton.agents.registry import Registry
from caxton.agents.service import AgentService
from caxton.agents.table import AgentTable
from caxton.cluster import ClusterView
from caxton.components import Components
from caxton.config import CaxtonConfig
from caxton.events import EventHub
from caxton.memory import MemoryService
from caxton.messaging import Conversations, Router
from caxton.metrics import Metrics
from caxton.ops.backup import BackupService
from caxton.ops.safe_mode import SafeMode
from caxton.security.gate import SecurityGate
from caxton.store import Store
from caxton.store.postgres import PostgresStore
from caxton.usage import UsageService


@attrs.frozen(kw_only=True)
class Lifecycle:
    """When the server started and how it stops; created before any component.

    ``stopping`` is set when a graceful shutdown starts: streaming handlers (SSE, WebSocket)
    watch it to end their streams cleanly before hypercorn's own deadline. ``stopped`` is set
    once the HTTP server has closed every connection. ``reload_hooks`` run on SIGHUP.
    """

    started_at: float = attrs.field(factory=time.monotonic)
    stopping: trio.Event = attrs.field(factory=trio.Event)
    stopped: trio.Event = attrs.field(factory=trio.Event)
    reload_hooks: list[Callable[[], Awaitable[None]]] = attrs.field(factory=list)

    def uptime_seconds(self) -> float:
        return time.monotonic() - self.started_at


@attrs.frozen(kw_only=True)
class Core:
    """What every component of one server shares, made before any of them."""

    config: CaxtonConfig
    lifecycle: Lifecycle
    metrics: Metrics
    components: Components
    events: EventHub
    agent_logs: AgentLogs
    security: SecurityGate
    safe_mode: SafeMode


@attrs.frozen(kw_only=True)
class Services(Core):
    """Every service a request handler may use, all running."""

    store: Store | PostgresStore
    memory: MemoryService
    #: None with storage.backend: postgres (PostgreSQL is backed up with its own tools)
    backups: BackupService | None
    table: AgentTable
    registry: Registry
    agents: AgentService
    conversations: Conversations
    router: Router
    #: this instance and the live ones (``GET /api/v1/cluster``); None until wired
    cluster: ClusterView | None = None
    #: token accounting and budgets (``GET /api/v1/usage``, issue #18); None until wired
    usage: UsageService | None = None
    #: the A2A server side and the remote A2A agents (issue #19); None in tests that wire
    #: services by hand
    a2a: A2AService | None = None
    remote_agents: RemoteAgents | None = None
