"""Checks of a loaded configuration: files it names, settings that do nothing (used by
``caxton validate`` and at start). The security settings ``caxton start`` refuses are judged
in :mod:`caxton.security.checks`.

A file the config names that does not exist yet is a warning, not an error (DESIGN §11):
operators often validate before provisioning secrets and certificates.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caxton.config.model import CaxtonConfig

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def auth_required(config: CaxtonConfig) -> bool:
    """Whether callers must authenticate (either switch of the seed turns it on)."""
    security = config.security
    return security.authentication.enabled or security.api_keys.required


def is_loopback_address(address: str | None) -> bool:
    """Whether an IP address is this machine (127.0.0.0/8, ::1, or IPv4-mapped 127.x); a name
    or an IPv6 zone suffix (``%eth0``) is not looked up."""
    if not address:
        return False
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def is_loopback(host: str) -> bool:
    """Whether a bind address or host name (``localhost``, ``[::1]``) is this machine."""
    return host == "localhost" or is_loopback_address(host.strip("[]"))


def missing_files(config: CaxtonConfig) -> list[str]:
    """One warning per named file or directory that does not exist."""
    security = config.security
    named: list[tuple[str, str | None]] = [
        ("server.agents_dir", config.server.agents_dir),
        ("security.tls.cert_file", security.tls.cert_file if security.tls.enabled else None),
        ("security.tls.key_file", security.tls.key_file if security.tls.enabled else None),
        ("security.authentication.jwt_secret_file", security.authentication.jwt_secret_file),
        ("security.api_keys.key_file", security.api_keys.key_file),
    ]
    warnings = []
    for key, value in named:
        if value and not config.resolve_path(value).exists():
            warnings.append(f"{key}: {config.resolve_path(value)} does not exist yet")
    return warnings


def ineffective_settings(config: CaxtonConfig) -> list[str]:
    """One warning per setting that is set (differs from its default) but has no effect.

    Each names the setting, why it does nothing, and the switch that would make it count
    (issue #13: ``rate_limiting`` looked configured while authentication was off).
    """
    from caxton.config import model

    warnings: list[str] = []

    def unused(
        section: object, default: object, prefix: str, names: tuple[str, ...], why: str
    ) -> None:
        changed = [n for n in names if getattr(section, n) != getattr(default, n)]
        for name in changed:
            warnings.append(f"{prefix}.{name} has no effect: {why}")

    security = config.security
    auth = auth_required(config)
    if not auth:
        unused(
            security.authentication,
            model.AuthenticationConfig(),
            "security.authentication",
            ("jwt_secret_file", "token_expiry"),
            "authentication is off (set security.authentication.enabled: true)",
        )
        unused(
            security.api_keys,
            model.ApiKeysConfig(),
            "security.api_keys",
            ("key_file",),
            "authentication is off (set security.authentication.enabled: true or "
            "security.api_keys.required: true)",
        )
    else:
        unused(
            config.server,
            model.ServerConfig(),
            "server",
            ("allowed_hosts",),
            "it lists Host values accepted while authentication is off, and authentication is on",
        )
    limits = security.rate_limiting
    if limits.enabled is False:
        unused(
            limits,
            model.RateLimitConfig(),
            "security.rate_limiting",
            ("requests_per_minute", "burst_size"),
            "rate limiting is off (security.rate_limiting.enabled: false)",
        )
    elif limits.enabled is None and not auth and is_loopback(config.server.host):
        unused(
            limits,
            model.RateLimitConfig(),
            "security.rate_limiting",
            ("requests_per_minute", "burst_size"),
            f"the API listens on {config.server.host} only, and loopback clients are not "
            "limited while authentication is off (set security.rate_limiting.enabled: true)",
        )
    if not security.tls.enabled:
        unused(
            security.tls,
            model.TLSConfig(),
            "security.tls",
            ("cert_file", "key_file"),
            "TLS is off (set security.tls.enabled: true to serve HTTPS)",
        )
    if not security.cors.allowed_origins:
        unused(
            security.cors,
            model.CorsConfig(),
            "security.cors",
            ("allowed_methods", "allowed_headers", "max_age"),
            "CORS is off while security.cors.allowed_origins is empty",
        )
    if not security.audit.enabled:
        unused(
            security.audit,
            model.AuditConfig(),
            "security.audit",
            ("log_file",),
            "the audit log is off (security.audit.enabled: false)",
        )
    memory = config.memory
    if memory.embedding_config.model_device != "cpu":
        warnings.append(
            f"memory.embedding_config.model_device: {memory.embedding_config.model_device} has "
            "no effect: the embedding model runs on the CPU (Caxton runs it with OpenVINO or "
            "onnxruntime on the CPU only)"
        )
    embedding = memory.embedding_config
    if embedding.runtime == "onnxruntime" and embedding.gathered_threads is not None:
        warnings.append(
            "memory.embedding_config.gathered_threads has no effect: onnxruntime runs every "
            "model call on memory.embedding_config.threads (gathered_threads is OpenVINO's)"
        )
    # qdrant_config is read with either backend: `caxton memory migrate --to qdrant` takes its
    # target from it while memory is still embedded (issue #16)
    if config.storage.backend == "postgres":
        unused(
            memory,
            model.MemoryConfig(),
            "memory",
            ("database_path", "sqlite_path", "sqlite_config", "duckdb"),
            "storage.backend is postgres: memory lives in PostgreSQL (storage.postgres), not "
            "in a DuckDB file",
        )
    else:
        unused(
            config.storage,
            model.StorageConfig(),
            "storage",
            ("postgres",),
            "storage.backend is embedded (set storage.backend: postgres to use PostgreSQL)",
        )
    observability = config.observability
    if not observability.metrics_enabled:
        unused(
            observability,
            model.ObservabilityConfig(),
            "observability",
            ("metrics_port", "metrics_host"),
            "metrics are off (observability.metrics_enabled: false)",
        )
    if not observability.tracing_enabled:
        unused(
            observability,
            model.ObservabilityConfig(),
            "observability",
            ("otlp_endpoint",),
            "tracing is off (observability.tracing_enabled: false)",
        )
    if config.llm.provider == "none":
        unused(
            config.llm,
            model.LLMConfig(),
            "llm",
            ("model", "base_url", "api_key"),
            "llm.provider is none, so agents inherit no endpoint from caxton.yaml (set "
            "llm.provider: openai, anthropic or local)",
        )
    return warnings
