"""The root task: ``trio.run(serve, loaded_config)``.

The nursery tree (DESIGN §1) is built here, dependencies outermost so they close last::

    serve
    └─ data_dir lock
       └─ root nursery: signals, metrics
          └─ storage nursery: store (DuckDB, or PostgreSQL with its notifier), embedder,
             │                memory, wasm pool, llm
             └─ agents nursery: conversations, router, registry (every agent version),
                │               watcher, heartbeat (PostgreSQL: once the API has its address)
                └─ front nursery: http   (stopped first, drains under server.shutdown_timeout)

SIGTERM or SIGINT sets ``state.stopping``: the HTTP component stops accepting, lets in-flight
requests finish, and returns; then the remaining components are cancelled. A second signal
stops at once. SIGHUP re-reads the reloadable parts of the configuration.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from typing import TYPE_CHECKING, Any

import attrs
import trio

from caxton import __version__
from caxton.a2a.directory import AgentsAndRemotes
from caxton.a2a.records import TaskRecords
from caxton.a2a.remote import RemoteAgents
from caxton.a2a.service import A2AService
from caxton.a2a.tasks import TaskBook
from caxton.agents.config_agent import ConfigAgentDeps, ConfigRuntime
from caxton.agents.deployments import (
    Deployments,
    FileDeployments,
    PostgresDeployments,
)
from caxton.agents.logs import AgentLogs
from caxton.agents.mcp_tools.connections import McpClients
from caxton.agents.registry import Registry
from caxton.agents.runtime import WasmRuntime
from caxton.agents.service import RESTART_NOTICE, AgentService
from caxton.agents.table import AgentTable
from caxton.agents.tools import ToolDeps
from caxton.agents.watcher import AgentsWatcher
from caxton.cluster import (
    RESYNC,
    Heartbeat,
    Notifier,
    NullNotifier,
    new_instance_id,
)
from caxton.components import Components, ComponentState
from caxton.config import CaxtonConfig, LoadedConfig, load_config
from caxton.config.checks import ineffective_settings
from caxton.datadir import open_data_dir
from caxton.errors import CaxtonError, StartupError
from caxton.events import EventHub
from caxton.http.app import create_app
from caxton.http.console import routes as console
from caxton.http.request_log import RequestLog
from caxton.http.server import HttpServer
from caxton.llm.service import LLMService
from caxton.logs import set_level
from caxton.memory import (
    DEFAULT_MODEL_NAME,
    Embedder,
    MemoryService,
    postgres_sql,
    qdrant_memory,
    queries,
)
from caxton.memory.embedder import default_threads
from caxton.memory.maintenance import MaintenanceSchedule, MemoryMaintenance
from caxton.memory.search_batches import default_slots
from caxton.messaging import Conversations, Router
from caxton.messaging.conversation_sql_duckdb import DUCKDB_CONVERSATION_SQL
from caxton.messaging.conversation_sql_postgres import POSTGRES_CONVERSATION_SQL
from caxton.messaging.maintenance import ConversationSweeper
from caxton.metrics import Metrics, MetricsServer
from caxton.ops.backup import BackupService, BackupSources
from caxton.ops.safe_mode import (
    PostgresSafeModeFlag,
    SafeMode,
    read_flag,
)
from caxton.ops.schema import embedded_migrations, postgres_migrations
from caxton.security.budgets import key_budgets
from caxton.security.gate import exposure_warning, load_security
from caxton.services import Core, Lifecycle, Services
from caxton.store import Store
from caxton.store.errors import QdrantStartError
from caxton.store.postgres import PostgresStore
from caxton.store.qdrant import QdrantStore
from caxton.tracing import TracingSettings, open_tracing
from caxton.usage import UsageLedger, UsageService
from caxton.usage.budgets import prices_from
from caxton.wasm import WasmPool

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from opentelemetry.sdk.trace.export import SpanExporter

    from caxton.memory.sql import MemorySQL
    from caxton.store.backend import Backend


LOGGER = logging.getLogger("caxton.server")


@attrs.frozen(kw_only=True)
class ServerInfo:
    """What a started server reports: where it listens, its services, and a way to stop it
    gracefully."""

    api_urls: tuple[str, ...]
    metrics_url: str | None
    services: Services

    def stop(self) -> None:
        """Start a graceful stop, as SIGTERM does."""
        self.services.lifecycle.stopping.set()


async def _start(
    core: Core, nursery: trio.Nursery, name: str, run: Callable[..., Awaitable[Any]]
) -> Any:
    """Start one component, tracking its state for ``/ready``; return what it reported."""
    components = core.components
    components.set(name, ComponentState.STARTING)
    try:
        value = await nursery.start(run)
    except BaseException:
        components.set(name, ComponentState.FAILED)
        raise
    components.set(name, ComponentState.RUNNING)
    return value


@attrs.frozen(kw_only=True)
class _Backend:
    """What ``storage.backend`` chose: the store of record, and how this instance hears of
    changes other instances make there (nothing to hear with the embedded store)."""

    store: Store | PostgresStore
    notifier: Notifier | NullNotifier
    instance_id: str


@attrs.frozen(kw_only=True)
class _Storage:
    backend: _Backend
    memory: MemoryService
    backups: BackupService | None

    @property
    def store(self) -> Store | PostgresStore:
        return self.backend.store


def _choose_backend(config: CaxtonConfig) -> _Backend:
    """The store (not started yet) for ``storage.backend``, with every feature's migrations."""
    instance_id = new_instance_id()
    if config.storage.backend == "postgres":
        settings = config.storage.postgres
        store = PostgresStore(
            settings.url,
            migrations=postgres_migrations(),
            pool_size=settings.pool_size,
            connect_timeout_s=settings.connect_timeout,
            statement_timeout_s=settings.statement_timeout,
        )
        notifier = Notifier(
            settings.url,
            instance_id=instance_id,
            store=store,
            connect_timeout_s=settings.connect_timeout,
        )
        return _Backend(store=store, notifier=notifier, instance_id=instance_id)
    return _Backend(
        store=Store(
            config.database_path,
            migrations=embedded_migrations(),
            memory_limit_bytes=config.memory.duckdb.memory_limit,
            threads=config.memory.duckdb.threads,
        ),
        notifier=NullNotifier(instance_id),
        instance_id=instance_id,
    )


async def serve(
    loaded: LoadedConfig,
    *,
    handle_signals: bool = True,
    span_exporters: Sequence[SpanExporter] = (),
    task_status: trio.TaskStatus[ServerInfo] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run a Caxton server until it is asked to stop.

    The tree: data_dir lock > root (signals, metrics) > storage (store, embedder, memory, WASM
    pool) > agents (conversations, router, registry, watcher) > front (HTTP). Each level is
    cancelled only after the levels inside it have stopped. Every component is built with
    what it needs, in dependency order: nothing is filled in after construction.

    Args:
        loaded: the configuration (from :func:`caxton.config.load_config`).
        handle_signals: install the SIGINT/SIGTERM/SIGHUP handlers (the CLI does; tests
            that run several servers in one process stop them through :meth:`ServerInfo.stop`).
        span_exporters: with ``observability.tracing_enabled``, exporters that get every
            span as it ends, besides the OTLP endpoint (tests pass an in-memory one).

    Raises:
        StartupError: the data_dir is locked or unusable, or a port cannot be bound.

    Cancellation:
        Cancelling the caller stops every component at once; a graceful stop goes through a
        signal (or :meth:`ServerInfo.stop`) instead.
    """
    try:
        observability = loaded.config.observability
        tracing = TracingSettings.resolve(
            enabled=observability.tracing_enabled, otlp_endpoint=observability.otlp_endpoint
        )
        async with open_tracing(tracing, span_exporters):
            await _serve(loaded, handle_signals=handle_signals, task_status=task_status)
    except BaseExceptionGroup as group:
        # a component that cannot start fails inside the nurseries, which wrap it: the caller
        # (the CLI prints one line) gets the StartupError itself, not a group of groups
        failed, _ = group.split(StartupError)
        if failed is None:
            raise
        raise _first_leaf(failed) from None


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _serve(
    loaded: LoadedConfig,
    *,
    handle_signals: bool,
    task_status: trio.TaskStatus[ServerInfo],
) -> None:
    """:func:`serve` until its nurseries wrap what failed."""
    config = loaded.config
    metrics = Metrics()
    lifecycle = Lifecycle()
    security = await trio.to_thread.run_sync(load_security, config, metrics)
    backend = _choose_backend(config)
    async with open_data_dir(config.data_dir) as data_dir:
        if data_dir.starts > 1:
            metrics.restarts.inc(data_dir.starts - 1)
        core = Core(
            config=config,
            lifecycle=lifecycle,
            metrics=metrics,
            components=Components(),
            events=EventHub(),
            agent_logs=AgentLogs(),
            security=security,
            safe_mode=await _load_safe_mode(config, metrics, backend),
        )
        async with trio.open_nursery() as root:
            if handle_signals:
                await root.start(_watch_signals, core, loaded, root.cancel_scope)
            metrics_url: str | None = None
            if config.observability.metrics_enabled:
                host = config.observability.metrics_host or config.server.host
                server = MetricsServer(metrics, host=host, port=config.observability.metrics_port)
                metrics_url = await _start(core, root, "metrics", server.run)

            # outside everything that serves requests: it writes their last lines at stop
            request_log = await root.start(RequestLog(metrics).run)

            async with trio.open_nursery() as storage_nursery:
                storage = await _start_storage(storage_nursery, core, loaded, backend)
                pool = WasmPool(
                    max_concurrent_calls=config.wasm.max_concurrent_calls,
                    module_cache_size=config.wasm.module_cache_size,
                )
                await _start(core, storage_nursery, "wasm", pool.run)
                llm = LLMService(metrics, traced=config.observability.tracing_enabled)
                await _start(core, storage_nursery, "llm", llm.run)
                async with trio.open_nursery() as agents:
                    services = await _start_agents(agents, core, storage, pool, llm)
                    app = create_app(services, (console.routes,), request_log)
                    http = HttpServer(services, app)
                    async with trio.open_nursery() as front:
                        binds: list[str] = await _start(core, front, "http", http.run)
                        # in the agents nursery: it beats until the front has drained
                        await _start_heartbeat(agents, core, services, binds)
                        info = ServerInfo(
                            api_urls=tuple(binds), metrics_url=metrics_url, services=services
                        )
                        _warn_if_exposed(config)
                        # what start-up made (modules, config, models, agent specs) lives as
                        # long as the server: keep the collector from walking it again on
                        # every full collection (~130k objects, ~55 ms each under load)
                        gc.freeze()
                        LOGGER.info(
                            "Caxton %s ready on %s (data_dir %s)",
                            __version__,
                            ", ".join(binds),
                            config.data_dir,
                            extra={"api": binds, "metrics": metrics_url},
                        )
                        task_status.started(info)
                    lifecycle.stopped.set()
                    agents.cancel_scope.cancel()
                storage_nursery.cancel_scope.cancel()
            for status in core.components.statistics():
                core.components.set(status.name, ComponentState.STOPPED)
            root.cancel_scope.cancel()
    LOGGER.info("Caxton stopped")


async def _load_safe_mode(config: CaxtonConfig, metrics: Metrics, backend: _Backend) -> SafeMode:
    """The safe-mode flag, kept so that a restart stays in safe mode, and its gauge.

    Embedded: ``data_dir/safe_mode.json``, read now. PostgreSQL: one row every instance shares,
    read once the store runs (:func:`_start_storage`); a change is pushed to the others.
    """
    store, notifier = backend.store, backend.notifier
    if isinstance(store, PostgresStore):
        flag = PostgresSafeModeFlag(
            store, notify=lambda conn: notifier.notify(conn, "safe_mode", {})
        )
        safe_mode = SafeMode(flag=flag)
    else:
        status = await trio.to_thread.run_sync(read_flag, config.data_dir)
        safe_mode = SafeMode(config.data_dir, status)
        _log_safe_mode(safe_mode)
    metrics.gauge(
        "caxton_server_safe_mode", "1 while safe mode refuses changes, else 0."
    ).set_function(lambda: float(safe_mode.enabled))
    return safe_mode


def _log_safe_mode(safe_mode: SafeMode) -> None:
    if safe_mode.enabled:
        LOGGER.warning(
            "starting in safe mode (enabled %s): changes are refused until "
            "`caxton safe-mode --disable`",
            safe_mode.status.since or "earlier",
        )


async def _start_storage(
    nursery: trio.Nursery, core: Core, loaded: LoadedConfig, backend: _Backend
) -> _Storage:
    """The store (DuckDB or PostgreSQL) with its notices, the embedding model, the memory
    service over both, and backups (of the embedded store)."""
    config = core.config
    memory_config = config.memory
    store = backend.store
    await _start(core, nursery, "store", store.run)
    if isinstance(store, PostgresStore):
        safe_mode = core.safe_mode

        async def refresh_safe_mode(kind: str, payload: dict[str, Any]) -> None:
            await safe_mode.refresh()

        backend.notifier.subscribe("safe_mode", refresh_safe_mode)
        await _start(core, nursery, "notifier", backend.notifier.run)
        await safe_mode.refresh()
        _log_safe_mode(safe_mode)
    embedding = memory_config.embedding_config
    model_path = None
    if memory_config.embedding_model != DEFAULT_MODEL_NAME:
        model_path = config.resolve_path(memory_config.embedding_model)
    embedder = Embedder(
        cache_dir=config.data_dir / "models",
        model_path=model_path,
        batch_size=embedding.batch_size,
        cache_size=embedding.cache_size,
        threads=embedding.threads or default_threads(workers=config.server.workers),
        gathered_threads=embedding.gathered_threads,
        runtime=embedding.runtime,
    )
    await _start(core, nursery, "embedder", embedder.run)
    memory_store: Backend = store
    memory_sql: MemorySQL = postgres_sql if isinstance(store, PostgresStore) else queries
    if memory_config.backend == "qdrant":
        # issue #16: memory alone in Qdrant, its own component (started after the embedder,
        # whose vector size the collection must have)
        memory_store = _qdrant_store(config, embedder.dim)
        await _start(core, nursery, "memory_store", memory_store.run)
        memory_sql = qdrant_memory
    search_seconds = core.metrics.histogram(
        "caxton_memory_search_duration_seconds", "Semantic search time, embedding included."
    )
    memory = MemoryService(
        memory_store,
        embedder,
        sql=memory_sql,
        hnsw_ef_search=config.storage.postgres.hnsw_ef_search,
        search_slots=default_slots(workers=config.server.workers),
        max_entities=memory_config.max_entities,
        on_search=search_seconds.observe,
        entity_cache_bytes=int(memory_config.entity_cache_size),
    )
    await _start(core, nursery, "memory", memory.run)
    _memory_gauges(core.metrics, config, store, embedder, memory)
    backups = None
    if isinstance(store, Store):
        backups = BackupService(BackupSources.from_config(config, loaded.source), store, memory)
    return _Storage(backend=backend, memory=memory, backups=backups)


def _qdrant_store(config: CaxtonConfig, embedding_dim: int) -> QdrantStore:
    """Memory's store (not started) for ``memory.backend: qdrant``: local mode on
    ``qdrant_config.path`` (relative to data_dir) when set, else the server at ``url``.

    Raises:
        QdrantStartError: ``vector_size`` is not the embedding model's.
    """
    settings = config.memory.qdrant_config
    path = None if settings.path is None else config.resolve_path(settings.path)
    store = QdrantStore(
        url=None if path is not None else settings.url,
        path=path,
        collection=settings.collection,
        vector_size=settings.vector_size,
        api_key=settings.api_key,
        timeout_s=settings.timeout,
    )
    if settings.vector_size != embedding_dim:
        raise QdrantStartError(
            store.where,
            f"memory.qdrant_config.vector_size is {settings.vector_size}, but the embedding "
            f"model {config.memory.embedding_model} makes vectors of size {embedding_dim}",
            f"Set memory.qdrant_config.vector_size to {embedding_dim}.",
        )
    return store


def _memory_gauges(
    metrics: Metrics,
    config: CaxtonConfig,
    store: Store | PostgresStore,
    embedder: Embedder,
    memory: MemoryService,
) -> None:
    """The seed's memory metrics, read from the components when Prometheus scrapes (on a
    shared store the totals are read from it first when older than ``counts_refresh_s``)."""
    metrics.refresh_with(memory.fresh_statistics)
    metrics.gauge("caxton_memory_entities_total", "Entities in memory.").set_function(
        lambda: float(memory.statistics().entity_count)
    )
    metrics.gauge("caxton_memory_relations_total", "Relations in memory.").set_function(
        lambda: float(memory.statistics().relation_count)
    )
    metrics.gauge(
        "caxton_memory_search_latency_p99",
        "p99 of semantic search time over the last 1000 searches, in seconds.",
    ).set_function(lambda: memory.statistics().search_p99_ms / 1000.0)
    # PostgreSQL's size is the database server's to report (its own exporter), and the DuckDB
    # file holds no memory with memory.backend: qdrant: 0 here
    size_bytes = (
        store.size_bytes if isinstance(store, Store) and memory.store is store else lambda: 0
    )
    metrics.gauge(
        "caxton_memory_sqlite_size_bytes",
        "Size of the memory database file (DuckDB; the name is kept for the seed's dashboards; "
        "0 with storage.backend: postgres).",
    ).set_function(lambda: float(size_bytes()))
    metrics.gauge(
        "caxton_memory_cache_hit_rate", "Embedding cache hits over lookups since start."
    ).set_function(lambda: embedder.statistics().hit_rate)
    metrics.gauge("caxton_memory_max_entities", "memory.max_entities, for capacity alerts.").set(
        float(config.memory.max_entities)
    )
    metrics.gauge(
        "caxton_memory_backend_info",
        "Where the memory lives, as the label backend (duckdb, postgres or qdrant); always 1.",
        labels=("backend",),
    ).labels(backend=memory.store.dialect).set(1.0)


async def _start_agents(
    nursery: trio.Nursery, core: Core, storage: _Storage, pool: WasmPool, llm: LLMService
) -> Services:
    """Conversations, the router over the agent table, the runtimes (handed the router), the
    registry, API-deployed agents, then the agents_dir watcher (its first scan included)."""
    config = core.config
    messaging = config.messaging
    store, notifier = storage.store, storage.backend.notifier
    shared = isinstance(store, PostgresStore)
    conversations = Conversations(
        store,
        ttl_s=messaging.conversation_ttl,
        sql=POSTGRES_CONVERSATION_SQL if shared else DUCKDB_CONVERSATION_SQL,
    )
    await _start(core, nursery, "conversations", conversations.run)
    table = AgentTable(core.metrics)
    # issue #19: remote A2A agents are providers in the router beside the local ones
    remotes = RemoteAgents(config.a2a, core.metrics, max_message_size=messaging.max_message_size)
    await _start(core, nursery, "a2a_remote_agents", remotes.run)
    router = Router(
        AgentsAndRemotes(table, remotes),
        conversations,
        events=core.events,
        metrics=core.metrics,
        logs=core.agent_logs,
        strategy=messaging.capability_routing.strategy,
        max_hops=messaging.max_hops,
        delivery_timeout_s=messaging.delivery_timeout,
    )
    await _start(core, nursery, "router", router.run)
    a2a = A2AService(
        router,
        tasks=TaskBook(max_tasks=config.a2a.max_tasks, ttl_s=config.a2a.task_ttl),
        metrics=core.metrics,
        max_message_size=messaging.max_message_size,
        delivery_timeout_s=messaging.delivery_timeout,
        max_hops=messaging.max_hops,
        # the tasks' rows: every instance of the cluster answers for them
        records=TaskRecords(
            store,
            notices=notifier,
            instance_id=storage.backend.instance_id,
            max_tasks=config.a2a.max_tasks,
            ttl_s=config.a2a.task_ttl,
        ),
        notices=notifier,
    )
    await _start(core, nursery, "a2a", a2a.run)
    sweeper = ConversationSweeper(conversations, interval_s=messaging.sweep_interval)
    await _start(core, nursery, "maintenance", sweeper.run)
    memory_maintenance = MemoryMaintenance(
        storage.memory,
        MaintenanceSchedule.from_config(config.memory.cleanup),
        metrics=core.metrics,
        paused=lambda: core.safe_mode.enabled,
    )
    await _start(core, nursery, "memory_maintenance", memory_maintenance.run)

    wasm = WasmRuntime(
        pool,
        core.agent_logs,
        core.metrics,
        poster=router,
        max_message_size=messaging.max_message_size,
    )
    deployments: Deployments
    if isinstance(store, PostgresStore):
        deployments = PostgresDeployments(
            store, notify=lambda conn, name: notifier.notify(conn, "agent", {"name": name})
        )
    else:
        deployments = FileDeployments(config.data_dir / "deployed")
    # config agents ask other agents through the router and read earlier turns from the
    # conversations it records
    usage = UsageService(
        UsageLedger(store),
        prices=prices_from(config.usage),
        tokens=llm.metrics.tokens,
        events=core.events,
        key_budget=key_budgets(core.security),
        max_metric_keys=config.usage.max_metric_keys,
    )
    tools = ToolDeps(
        max_message_size=messaging.max_message_size,
        memory=storage.memory,
        asker=router,
        agents=table,
        http=llm.tools_http,
    )
    mcp_clients = McpClients(core.metrics)  # config agents' MCP servers (issue #19)
    await _start(core, nursery, "mcp_clients", mcp_clients.run)
    config_agents = ConfigAgentDeps(
        llm=llm,
        defaults=config.llm,
        tools=tools,
        logs=core.agent_logs,
        environ=os.environ,
        history=conversations,
        api_root=deployments.source_root,
        api_env_allowlist=tuple(config.security.agent_env_allowlist),
        usage=usage,
        mcp=mcp_clients,
    )
    registry = Registry(
        table,
        runtimes={"config": ConfigRuntime(config_agents), "wasm": wasm},
        events=core.events,
        metrics=core.metrics,
        logs=core.agent_logs,
        drain_timeout_s=config.agents.drain_timeout,
        load_timeout_s=config.agents.load_timeout,
    )
    await _start(core, nursery, "registry", registry.run)
    service = AgentService(registry, deployments, agents_dir=config.agents_dir, notices=notifier)

    async def restart_announced(kind: str, payload: dict[str, Any]) -> None:
        name = payload.get("name")
        if kind != RESYNC and isinstance(name, str):
            service.restart_announced(name)

    notifier.subscribe(RESTART_NOTICE, restart_announced)

    async def apply_stored(kind: str, payload: dict[str, Any]) -> None:
        # another instance changed an agent (or notices may have been missed: all of them)
        name = payload.get("name")
        if kind != RESYNC and isinstance(name, str):
            await service.apply_stored(name)
            return
        stored = {agent.name for agent in await deployments.load_all()}
        local = {
            name
            for name, agent in registry.state.agents.items()
            if agent.source == deployments.source_for(name)
        }
        for each in sorted(stored | local):
            await service.apply_stored(each)

    notifier.subscribe("agent", apply_stored)
    await service.restore()
    watcher = AgentsWatcher(
        config.agents_dir,
        registry,
        debounce_ms=max(1, round(config.agents.debounce * 1000)),
        force_polling=config.agents.force_polling,
        paused=lambda: core.safe_mode.enabled,
    )
    core.safe_mode.on_change(watcher.resume)
    await _start(core, nursery, "watcher", watcher.run)
    core.lifecycle.reload_hooks.append(watcher.rescan)
    heartbeat = Heartbeat(
        store,
        instance_id=storage.backend.instance_id,
        address="",  # the API's address, once bound (_start_heartbeat)
        version=__version__,
        agents_fn=lambda: len(registry.state.agents),
    )
    return Services(
        **attrs.asdict(core, recurse=False),
        store=storage.store,
        cluster=heartbeat,
        memory=storage.memory,
        backups=storage.backups,
        table=table,
        registry=registry,
        agents=service,
        conversations=conversations,
        router=router,
        usage=usage,
        a2a=a2a,
        remote_agents=remotes,
    )


async def _start_heartbeat(
    nursery: trio.Nursery, core: Core, services: Services, binds: list[str]
) -> None:
    """This instance's row in the cluster, once the API has its address (with the embedded
    store the cluster is this instance alone: nothing to keep fresh)."""
    heartbeat = services.cluster
    if isinstance(heartbeat, Heartbeat):
        heartbeat.address = binds[0] if binds else ""
        if services.store.shared:
            await _start(core, nursery, "heartbeat", heartbeat.run)


def _warn_if_exposed(config: CaxtonConfig) -> None:
    warning = exposure_warning(config)
    if warning:
        LOGGER.warning("SECURITY: %s", warning)
    for ineffective in ineffective_settings(config):
        LOGGER.warning("config: %s", ineffective)


async def _watch_signals(
    core: Core,
    loaded: LoadedConfig,
    force: trio.CancelScope,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    lifecycle = core.lifecycle
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                await _reload(loaded)
                for hook in lifecycle.reload_hooks:
                    await hook()
            elif lifecycle.stopping.is_set():
                LOGGER.warning("%s again: stopping now without waiting for requests", name)
                force.cancel()
                return
            else:
                LOGGER.info(
                    "%s: stopping; in-flight requests have %ss to finish",
                    name,
                    core.config.server.shutdown_timeout,
                )
                lifecycle.stopping.set()


async def _reload(loaded: LoadedConfig) -> None:
    """Re-read the file and apply what can change while running (the log level)."""
    if loaded.source is None:
        LOGGER.info("SIGHUP: no configuration file to re-read")
        return
    try:
        fresh = await trio.to_thread.run_sync(
            lambda: load_config(loaded.source, overrides=list(loaded.overrides))
        )
    except CaxtonError as exc:
        LOGGER.error("SIGHUP: configuration not reloaded, keeping the running one:\n%s", exc)
        return
    set_level(fresh.config.logging.level)
    LOGGER.info("SIGHUP: configuration re-read; log level %s", fresh.config.logging.level)
