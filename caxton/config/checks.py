"""Checks of a loaded configuration against the filesystem (used by ``caxton validate``).

A file the config names that does not exist yet is a warning, not an error (DESIGN §11):
operators often validate before provisioning secrets and certificates.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from caxton.config.model import CaxtonConfig


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


def security_refusals(config: CaxtonConfig) -> list[str]:
    """Security settings ``caxton start`` refuses: no caller could ever authenticate, a key
    file that exists but is malformed (naming its line), ..."""
    from caxton.security.errors import KeyFileError
    from caxton.security.gate import auth_required
    from caxton.security.gate import security_refusals as refusals
    from caxton.security.keys import read_key_file

    problems = refusals(config)
    key_file = config.security.api_keys.key_file
    if auth_required(config) and key_file and config.resolve_path(key_file).exists():
        try:
            read_key_file(config.resolve_path(key_file))
        except KeyFileError as exc:
            problems.append(exc.message)
    return problems


def ineffective_settings(config: CaxtonConfig) -> list[str]:
    """One warning per setting that is set (differs from its default) but has no effect.

    Each names the setting, why it does nothing, and the switch that would make it count
    (issue #13: ``rate_limiting`` looked configured while authentication was off).
    """
    from caxton.config import model
    from caxton.security.gate import auth_required, is_loopback

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
    if memory.backend == "qdrant":
        warnings.append(
            "memory.backend: qdrant has no effect: this version keeps memory in the embedded "
            "DuckDB store only (remove the key, or unset CAXTON_MEMORY_BACKEND)"
        )
    if memory.embedding_config.model_device != "cpu":
        warnings.append(
            f"memory.embedding_config.model_device: {memory.embedding_config.model_device} has "
            "no effect: the embedding model runs on the CPU (the onnxruntime package installed "
            "with Caxton has no GPU provider)"
        )
    if memory.backend == "embedded":
        unused(
            memory,
            model.MemoryConfig(),
            "memory",
            ("qdrant_config",),
            "memory.backend is embedded (set backend: qdrant to use Qdrant)",
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
    # Spans are not recorded by this version yet: both switches are accepted for the seed's
    # files, and named here so that nobody believes a trace is being kept.
    unused(
        observability,
        model.ObservabilityConfig(),
        "observability",
        ("tracing_enabled", "otlp_endpoint"),
        "this version of Caxton records no OpenTelemetry spans yet (watch the metrics port "
        "and the audit log instead)",
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
