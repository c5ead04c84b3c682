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


def unsupported_security(config: CaxtonConfig) -> list[str]:
    """Security settings this build cannot enforce yet; starting with them would be unsafe."""
    security = config.security
    problems = []
    if security.authentication.enabled:
        problems.append(
            "security.authentication.enabled is true, but this build does not check "
            "credentials yet; refusing to start rather than serve an open API that looks "
            "protected. Set it to false and keep server.host on 127.0.0.1 (or behind an "
            "authenticating proxy) until authentication is available"
        )
    if security.api_keys.required:
        problems.append(
            "security.api_keys.required is true, but this build does not check API keys yet; "
            "set it to false and keep the API on 127.0.0.1 (or behind an authenticating proxy)"
        )
    return problems
