"""The typed shape of ``caxton.yaml``: frozen attrs classes, one per section.

Attribute names are the YAML keys (DESIGN §3, the seed's operator guide). Durations are held in
seconds (:data:`Seconds`) and sizes in bytes (:data:`Bytes`); the loader turns "30s" and "10MB"
into those. Every field carries ``help`` metadata: ``caxton.config.docs`` renders it, and a test
checks that README and ``conf/caxton.yaml`` mention every key.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, NewType

import attrs

Seconds = NewType("Seconds", float)
Bytes = NewType("Bytes", int)

LogLevel = Literal["trace", "debug", "info", "warn", "warning", "error", "critical"]
LogFormat = Literal["json", "text"]
MemoryBackend = Literal["embedded", "qdrant"]
StorageBackendName = Literal["embedded", "postgres"]
RoutingStrategy = Literal["best_match", "round_robin", "broadcast"]
LLMProvider = Literal["none", "openai", "anthropic", "local"]


def _help(text: str) -> dict[str, str]:
    return {"help": text}


@attrs.frozen(kw_only=True)
class ServerConfig:
    host: str = attrs.field(default="127.0.0.1", metadata=_help("Address the HTTP API binds."))
    port: int = attrs.field(default=8080, metadata=_help("Port of the HTTP API (0 = any)."))
    data_dir: str = attrs.field(
        default="./data",
        metadata=_help(
            "Directory for the database, deployed agents, logs and locks. Relative to the "
            "working directory; other relative paths in this file resolve against it."
        ),
    )
    agents_dir: str = attrs.field(
        default="agents", metadata=_help("Directory watched for agent TOML files.")
    )
    shutdown_timeout: Seconds = attrs.field(
        default=Seconds(30.0),
        metadata=_help("How long in-flight requests may drain on SIGTERM before a hard stop."),
    )
    max_request_size: Bytes = attrs.field(
        default=Bytes(10_000_000),
        metadata=_help("Largest accepted request body or WebSocket frame (413 / close 1009)."),
    )
    allowed_hosts: list[str] = attrs.field(
        factory=list,
        metadata=_help(
            "Host header values (any port) served while authentication is off, besides "
            "localhost, 127.0.0.1 and [::1]; others get 421 (DNS rebinding)."
        ),
    )
    workers: int = attrs.field(
        default=1,
        metadata=_help(
            "Server processes sharing the port (SO_REUSEPORT), supervised by the parent; "
            "more than 1 needs storage.backend: postgres (env CAXTON_WORKERS)."
        ),
    )


@attrs.frozen(kw_only=True)
class SqliteCompatConfig:
    """The seed's SQLite tuning block; mapped onto DuckDB where it has an equivalent."""

    cache_size: int | None = attrs.field(
        default=None, metadata=_help("SQLite cache in KiB; becomes DuckDB's memory_limit.")
    )
    journal_mode: str | None = attrs.field(
        default=None, metadata=_help("DuckDB always keeps a write-ahead log; only WAL is exact.")
    )
    synchronous: str | None = attrs.field(
        default=None, metadata=_help("No DuckDB equivalent (commits are always durable).")
    )
    temp_store: str | None = attrs.field(
        default=None, metadata=_help("No DuckDB equivalent (DuckDB spills to data_dir).")
    )
    mmap_size: int | None = attrs.field(default=None, metadata=_help("No DuckDB equivalent."))
    page_size: int | None = attrs.field(default=None, metadata=_help("No DuckDB equivalent."))
    busy_timeout: int | None = attrs.field(
        default=None, metadata=_help("No DuckDB equivalent (one writer task, no busy waits).")
    )


@attrs.frozen(kw_only=True)
class DuckDBConfig:
    memory_limit: Bytes = attrs.field(
        default=Bytes(512 * 1024 * 1024),
        metadata=_help(
            "DuckDB's buffer memory limit, set when the store opens (sized for a 2-4 GiB "
            "machine beside the memory index; 0 = DuckDB's own, 80% of RAM)."
        ),
    )
    threads: int = attrs.field(
        default=1,
        metadata=_help(
            "DuckDB worker threads, set when the store opens (0 = number of cores). One by "
            "default: the server's reads are small and many run at once, and a second thread "
            "per statement only adds contention (bulk scans, such as the restart's content "
            "check, take longer)."
        ),
    )


@attrs.frozen(kw_only=True)
class EmbeddingConfig:
    batch_size: int = attrs.field(default=32, metadata=_help("Texts encoded per model call."))
    cache_size: int = attrs.field(
        default=10_000, metadata=_help("Recent embeddings kept in an LRU cache.")
    )
    model_device: Literal["cpu", "cuda"] = attrs.field(
        default="cpu", metadata=_help("Where the embedding model runs.")
    )
    threads: int | None = attrs.field(
        default=None,
        metadata=_help(
            "Inference threads (default: the cores, at most 4, shared among server.workers)."
        ),
    )
    gathered_threads: int | None = attrs.field(
        default=None,
        metadata=_help(
            "Inference threads for a batch gathered from several callers under concurrent "
            "load (default: one less than threads, at least 1: a core left to the event loop "
            "and the store). One caller's texts, such as a lone search, run on threads. "
            "OpenVINO only."
        ),
    )
    runtime: Literal["auto", "openvino", "onnxruntime"] = attrs.field(
        default="auto",
        metadata=_help(
            "What runs the model: openvino (bfloat16 where the CPU has it, 2-3 times faster "
            "there), onnxruntime, or auto (OpenVINO, else onnxruntime)."
        ),
    )


@attrs.frozen(kw_only=True)
class CleanupConfig:
    vacuum_interval: Seconds = attrs.field(
        default=Seconds(86_400.0),
        metadata=_help(
            "How often the database is compacted (CHECKPOINT + VACUUM), counted from the "
            "server's start; 0 = off."
        ),
    )
    analyze_interval: Seconds = attrs.field(
        default=Seconds(43_200.0),
        metadata=_help(
            "How often query statistics are refreshed (ANALYZE), counted from the server's "
            "start; 0 = off."
        ),
    )
    cleanup_threshold: float = attrs.field(
        default=0.1,
        metadata=_help(
            "Free blocks over total blocks of the database file that trigger a compaction "
            "early; checked at the shorter interval, at least hourly; 0 = off."
        ),
    )


@attrs.frozen(kw_only=True)
class QdrantConfig:
    url: str = attrs.field(
        default="http://localhost:6333", metadata=_help("Qdrant URL (env QDRANT_URL).")
    )
    path: str | None = attrs.field(
        default=None,
        metadata=_help(
            "A folder for qdrant-client's local mode instead of url (one process; for "
            "single-node trials and tests), relative to data_dir."
        ),
    )
    collection: str = attrs.field(default="caxton-memory", metadata=_help("Collection name."))
    vector_size: int = attrs.field(default=384, metadata=_help("Embedding dimension."))
    api_key: str | None = attrs.field(default=None, metadata=_help("Qdrant API key."))
    timeout: Seconds = attrs.field(default=Seconds(10.0), metadata=_help("Per-call timeout."))


@attrs.frozen(kw_only=True)
class MemoryConfig:
    backend: MemoryBackend = attrs.field(
        default="embedded", metadata=_help("embedded (DuckDB, one process) or qdrant.")
    )
    database_path: str = attrs.field(
        default="memory.duckdb",
        metadata=_help("DuckDB file, relative to data_dir (sqlite_path is an alias)."),
    )
    sqlite_path: str | None = attrs.field(
        default=None, metadata=_help("Alias of database_path kept for older files.")
    )
    embedding_model: str = attrs.field(
        default="all-MiniLM-L6-v2",
        metadata=_help("all-MiniLM-L6-v2 (installed with Caxton) or a local model folder."),
    )
    max_entities: int = attrs.field(
        default=100_000, metadata=_help("Entities the memory accepts before refusing writes.")
    )
    entity_cache_size: Bytes = attrs.field(
        default=Bytes(64 * 1024 * 1024),
        metadata=_help(
            "Entities kept in memory for searches and reads by name (embedded store; 0 = "
            "off): filled at start with the most recently updated, then the most recently "
            "read. A searched entity not held costs a store read (~2 ms on DuckDB)."
        ),
    )
    sqlite_config: SqliteCompatConfig | None = attrs.field(
        default=None, metadata=_help("SQLite tuning keys; mapped to DuckDB or warned about.")
    )
    duckdb: DuckDBConfig = attrs.field(
        factory=DuckDBConfig, metadata=_help("DuckDB engine settings.")
    )
    embedding_config: EmbeddingConfig = attrs.field(
        factory=EmbeddingConfig, metadata=_help("Embedding model settings.")
    )
    cleanup: CleanupConfig = attrs.field(
        factory=CleanupConfig,
        metadata=_help("Scheduled maintenance of the memory database; held while in safe mode."),
    )
    qdrant_config: QdrantConfig = attrs.field(
        factory=QdrantConfig, metadata=_help("Settings for backend: qdrant.")
    )


@attrs.frozen(kw_only=True)
class LoggingConfig:
    level: LogLevel = attrs.field(
        default="info", metadata=_help("Log level (env CAXTON_LOG_LEVEL, or RUST_LOG).")
    )
    format: LogFormat = attrs.field(default="text", metadata=_help("json or text."))
    file: str | None = attrs.field(
        default=None, metadata=_help("Also write logs to this file (relative to data_dir).")
    )


@attrs.frozen(kw_only=True)
class ObservabilityConfig:
    metrics_enabled: bool = attrs.field(default=True, metadata=_help("Serve /metrics."))
    metrics_port: int = attrs.field(
        default=9090, metadata=_help("Port of the Prometheus endpoint (0 = any).")
    )
    metrics_host: str | None = attrs.field(
        default=None, metadata=_help("Address of the metrics endpoint (default: server.host).")
    )
    tracing_enabled: bool = attrs.field(
        default=False, metadata=_help("Record OpenTelemetry spans.")
    )
    otlp_endpoint: str | None = attrs.field(
        default=None, metadata=_help("OTLP collector URL spans are exported to.")
    )


@attrs.frozen(kw_only=True)
class TLSConfig:
    enabled: bool = attrs.field(default=False, metadata=_help("Serve HTTPS."))
    cert_file: str | None = attrs.field(default=None, metadata=_help("PEM certificate chain."))
    key_file: str | None = attrs.field(default=None, metadata=_help("PEM private key."))


@attrs.frozen(kw_only=True)
class AuthenticationConfig:
    enabled: bool = attrs.field(default=False, metadata=_help("Require credentials on the API."))
    jwt_secret_file: str | None = attrs.field(
        default=None, metadata=_help("File holding the HS256 secret for bearer tokens.")
    )
    token_expiry: Seconds = attrs.field(
        default=Seconds(86_400.0), metadata=_help("Lifetime of issued tokens.")
    )


@attrs.frozen(kw_only=True)
class CorsConfig:
    allowed_origins: list[str] = attrs.field(
        factory=list, metadata=_help("Origins allowed by CORS (empty = CORS off).")
    )
    allowed_methods: list[str] = attrs.field(
        factory=lambda: ["GET", "POST", "PUT", "DELETE"], metadata=_help("CORS methods.")
    )
    allowed_headers: list[str] = attrs.field(
        factory=lambda: ["Authorization", "Content-Type", "X-API-Key", "X-Request-ID"],
        metadata=_help("CORS request headers."),
    )
    max_age: Seconds = attrs.field(
        default=Seconds(600.0), metadata=_help("How long browsers cache a preflight.")
    )


@attrs.frozen(kw_only=True)
class RateLimitConfig:
    enabled: bool | None = attrs.field(
        default=None,
        metadata=_help(
            "Limit requests per API key or token (per client address without one; IPv6 by "
            "/64). Unset: on, except that loopback clients are not limited while "
            "authentication is off. true: every client, loopback included. false: off."
        ),
    )
    requests_per_minute: int = attrs.field(
        default=1000, metadata=_help("Sustained rate per key or IP.")
    )
    burst_size: int = attrs.field(default=100, metadata=_help("Requests allowed in a burst."))


@attrs.frozen(kw_only=True)
class ApiKeysConfig:
    required: bool = attrs.field(default=False, metadata=_help("Require an API key."))
    key_file: str | None = attrs.field(
        default=None, metadata=_help("YAML file of hashed keys and their roles.")
    )


@attrs.frozen(kw_only=True)
class AuditConfig:
    enabled: bool = attrs.field(default=True, metadata=_help("Record every mutating call."))
    log_file: str = attrs.field(
        default="audit.log", metadata=_help("Audit log file (relative to data_dir).")
    )


@attrs.frozen(kw_only=True)
class SecurityConfig:
    tls: TLSConfig = attrs.field(factory=TLSConfig, metadata=_help("HTTPS."))
    authentication: AuthenticationConfig = attrs.field(
        factory=AuthenticationConfig, metadata=_help("API authentication.")
    )
    cors: CorsConfig = attrs.field(factory=CorsConfig, metadata=_help("CORS."))
    rate_limiting: RateLimitConfig = attrs.field(
        factory=RateLimitConfig, metadata=_help("Rate limits.")
    )
    api_keys: ApiKeysConfig = attrs.field(factory=ApiKeysConfig, metadata=_help("API keys."))
    audit: AuditConfig = attrs.field(factory=AuditConfig, metadata=_help("Audit log."))
    agent_env_allowlist: list[str] = attrs.field(
        factory=list,
        metadata=_help(
            "Environment variables that ${VAR} in agents deployed through the API may read "
            "(files in agents_dir read the whole environment). Empty: none."
        ),
    )


@attrs.frozen(kw_only=True)
class CapabilityRoutingConfig:
    strategy: RoutingStrategy = attrs.field(
        default="best_match", metadata=_help("best_match, round_robin or broadcast.")
    )


@attrs.frozen(kw_only=True)
class MessagingConfig:
    conversation_ttl: Seconds = attrs.field(
        default=Seconds(86_400.0), metadata=_help("Idle conversations expire after this.")
    )
    max_hops: int = attrs.field(
        default=8, metadata=_help("Agent-to-agent hops before a message is refused.")
    )
    capability_routing: CapabilityRoutingConfig = attrs.field(
        factory=CapabilityRoutingConfig, metadata=_help("How a capability picks its agent.")
    )
    delivery_timeout: Seconds = attrs.field(
        default=Seconds(30.0),
        metadata=_help("How long a routed message waits for its reply (then a TIMEOUT failure)."),
    )
    max_message_size: Bytes = attrs.field(
        default=Bytes(1_000_000),
        metadata=_help(
            "Largest message content accepted, from clients (HTTP, WebSocket) and agents "
            "alike (413 over HTTP)."
        ),
    )
    sweep_interval: Seconds = attrs.field(
        default=Seconds(300.0),
        metadata=_help("How often expired conversations are removed."),
    )


@attrs.frozen(kw_only=True)
class LLMConfig:
    """Server-wide LLM defaults; an agent's ``[llm]`` table overrides them key by key."""

    provider: LLMProvider = attrs.field(
        default="none", metadata=_help("openai, anthropic, local (OpenAI-compatible) or none.")
    )
    model: str | None = attrs.field(default=None, metadata=_help("Model name."))
    base_url: str | None = attrs.field(default=None, metadata=_help("Endpoint URL."))
    api_key: str | None = attrs.field(default=None, metadata=_help("API key (use ${VAR})."))
    temperature: float | None = attrs.field(default=None, metadata=_help("Sampling temperature."))
    max_tokens: int | None = attrs.field(default=None, metadata=_help("Reply length limit."))
    top_p: float | None = attrs.field(default=None, metadata=_help("Nucleus sampling."))
    timeout: Seconds = attrs.field(default=Seconds(60.0), metadata=_help("Per-call timeout."))
    max_retries: int = attrs.field(default=2, metadata=_help("Retries on transient errors."))


@attrs.frozen(kw_only=True)
class AgentsConfig:
    force_polling: bool = attrs.field(
        default=False, metadata=_help("Poll agents_dir instead of inotify (network filesystems).")
    )
    debounce: Seconds = attrs.field(
        default=Seconds(0.1), metadata=_help("File changes closer than this are one reload.")
    )
    drain_timeout: Seconds = attrs.field(
        default=Seconds(30.0),
        metadata=_help("How long a replaced version may finish its in-flight requests."),
    )
    load_timeout: Seconds = attrs.field(
        default=Seconds(30.0), metadata=_help("How long a new version may take to start.")
    )


@attrs.frozen(kw_only=True)
class WasmConfig:
    max_concurrent_calls: int | None = attrs.field(
        default=None,
        metadata=_help(
            "Guest calls running at once (default: 16 x cores, at least 32); "
            "one agent holds at most max(2, cores) of them."
        ),
    )
    module_cache_size: int = attrs.field(
        default=64, metadata=_help("Compiled modules kept in memory.")
    )


@attrs.frozen(kw_only=True)
class PostgresConfig:
    url: str = attrs.field(
        default="",
        metadata=_help(
            "postgresql://user:password@host:5432/dbname (env CAXTON_DATABASE_URL; write "
            "${VAR} to keep the password out of the file)."
        ),
    )
    pool_size: int = attrs.field(
        default=8, metadata=_help("Connections each server process keeps (calls at once).")
    )
    connect_timeout: Seconds = attrs.field(
        default=Seconds(5.0),
        metadata=_help("Bound on connecting, and on waiting for a free connection."),
    )
    statement_timeout: Seconds = attrs.field(
        default=Seconds(30.0), metadata=_help("PostgreSQL cancels a statement that runs longer.")
    )
    hnsw_ef_search: int = attrs.field(
        default=100,
        metadata=_help("pgvector hnsw.ef_search for memory search (recall against speed)."),
    )


@attrs.frozen(kw_only=True)
class StorageConfig:
    backend: StorageBackendName = attrs.field(
        default="embedded",
        metadata=_help(
            "embedded (one DuckDB file in data_dir, one process) or postgres (shared by "
            "several instances; env CAXTON_STORAGE_BACKEND)."
        ),
    )
    postgres: PostgresConfig = attrs.field(
        factory=PostgresConfig, metadata=_help("Settings for backend: postgres.")
    )


@attrs.frozen(kw_only=True)
class ModelPriceConfig:
    """The price of a million tokens of one model, per kind (issue #18)."""

    input: float = attrs.field(default=0.0, metadata=_help("Per million input tokens."))
    output: float = attrs.field(default=0.0, metadata=_help("Per million output tokens."))
    cache_read: float = attrs.field(
        default=0.0, metadata=_help("Per million prompt tokens read from the provider's cache.")
    )
    cache_write: float = attrs.field(
        default=0.0, metadata=_help("Per million prompt tokens written to the provider's cache.")
    )


@attrs.frozen(kw_only=True)
class RemoteA2AAgentConfig:
    """One remote A2A agent that becomes a provider of capabilities in the router (issue #19)."""

    name: str = attrs.field(
        metadata=_help("Name local agents and clients send to (an agent name: no clash).")
    )
    card_url: str = attrs.field(
        metadata=_help("URL of the remote agent's card (.../.well-known/agent-card.json).")
    )
    api_key: str | None = attrs.field(
        default=None,
        metadata=_help("Sent as X-API-Key, only to the card's own origin (use ${VAR})."),
    )
    bearer_token: str | None = attrs.field(
        default=None,
        metadata=_help("Sent as Authorization: Bearer, only to the card's own origin."),
    )
    timeout: Seconds = attrs.field(
        default=Seconds(30.0), metadata=_help("Bound on one call to the remote agent.")
    )
    capabilities: list[str] = attrs.field(
        factory=list, metadata=_help("Capabilities it provides besides its card's skill ids.")
    )
    streaming: bool = attrs.field(
        default=True, metadata=_help("Stream replies when the remote's card says it can.")
    )


@attrs.frozen(kw_only=True)
class UsageConfig:
    """Token accounting and its prices (issue #18)."""

    prices: dict[str, ModelPriceConfig] = attrs.field(
        factory=dict,
        metadata=_help(
            "Price per million tokens by model name, e.g. {gpt-4o: {input: 2.5, output: 10, "
            "cache_read: 1.25, cache_write: 0}}; unlisted models cost 0."
        ),
    )
    max_metric_keys: int = attrs.field(
        default=20,
        metadata=_help(
            'Callers with their own key label in caxton_llm_tokens_total; later ones are "other".'
        ),
    )


@attrs.frozen(kw_only=True)
class A2AConfig:
    """The Agent2Agent protocol: Caxton's agents served over A2A 1.0, and remote A2A agents
    as providers in the router (issue #19)."""

    enabled: bool = attrs.field(
        default=True,
        metadata=_help("Serve agent cards and the JSON-RPC endpoints /a2a/{name}."),
    )
    max_tasks: int = attrs.field(
        default=10_000,
        metadata=_help(
            "Tasks kept in the store (shared by a cluster's instances); the oldest finished "
            "go first."
        ),
    )
    task_ttl: Seconds = attrs.field(
        default=Seconds(3600.0),
        metadata=_help("How long a finished task stays readable (GetTask, ListTasks)."),
    )
    remote_agents: list[RemoteA2AAgentConfig] = attrs.field(
        factory=list,
        metadata=_help(
            "Remote A2A agents: name, card_url, api_key | bearer_token, timeout, "
            "capabilities, streaming."
        ),
    )
    card_refresh: Seconds = attrs.field(
        default=Seconds(60.0),
        metadata=_help("How often remote cards are fetched again (and failed ones retried)."),
    )
    max_response_size: Bytes = attrs.field(
        default=Bytes(4_000_000),
        metadata=_help("Largest card or answer read from a remote A2A agent."),
    )


@attrs.frozen(kw_only=True)
class CaxtonConfig:
    """The whole ``caxton.yaml``."""

    server: ServerConfig = attrs.field(factory=ServerConfig, metadata=_help("HTTP server."))
    storage: StorageConfig = attrs.field(
        factory=StorageConfig, metadata=_help("Where durable state lives.")
    )
    memory: MemoryConfig = attrs.field(factory=MemoryConfig, metadata=_help("Embedded memory."))
    logging: LoggingConfig = attrs.field(factory=LoggingConfig, metadata=_help("Logs."))
    observability: ObservabilityConfig = attrs.field(
        factory=ObservabilityConfig, metadata=_help("Metrics and tracing.")
    )
    security: SecurityConfig = attrs.field(factory=SecurityConfig, metadata=_help("Security."))
    messaging: MessagingConfig = attrs.field(
        factory=MessagingConfig, metadata=_help("Messages and conversations.")
    )
    llm: LLMConfig = attrs.field(factory=LLMConfig, metadata=_help("Default LLM for agents."))
    agents: AgentsConfig = attrs.field(
        factory=AgentsConfig, metadata=_help("The agents_dir watcher and version swaps.")
    )
    wasm: WasmConfig = attrs.field(factory=WasmConfig, metadata=_help("The WASM runtime."))
    usage: UsageConfig = attrs.field(
        factory=UsageConfig, metadata=_help("Token accounting, prices and budgets.")
    )
    a2a: A2AConfig = attrs.field(
        factory=A2AConfig, metadata=_help("Agent2Agent: A2A server and remote agents.")
    )

    @property
    def data_dir(self) -> Path:
        """The data directory as an absolute path."""
        return Path(self.server.data_dir).expanduser().absolute()

    def resolve_path(self, value: str) -> Path:
        """Resolve a path from this file: absolute as is, relative against ``data_dir``."""
        path = Path(value).expanduser()
        return Path(os.path.normpath(path if path.is_absolute() else self.data_dir / path))

    @property
    def agents_dir(self) -> Path:
        return self.resolve_path(self.server.agents_dir)

    @property
    def database_path(self) -> Path:
        return self.resolve_path(self.memory.database_path)
