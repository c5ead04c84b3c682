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
