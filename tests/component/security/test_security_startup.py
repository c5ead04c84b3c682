"""What ``security:`` does at start: refusals, warnings, and the open (default) mode."""

from __future__ import annotations

import functools
import json
import logging
from typing import TYPE_CHECKING

import httpx
import pytest
from security_servers import write_keys
from servers import loopback_config

from caxton.errors import StartupError
from caxton.metrics import Metrics
from caxton.security.errors import KeyFileError, TokenSecretError
from caxton.security.gate import load_security
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

    import trio

    from caxton.config import CaxtonConfig


def _config(tmp_path: Path, **extra: object) -> CaxtonConfig:
    return loopback_config(tmp_path / "data", **extra).config


def test_authentication_without_any_credential_source_is_refused(tmp_path: Path) -> None:
    for switch in ("security__authentication__enabled", "security__api_keys__required"):
        with pytest.raises(StartupError, match="no caller could ever authenticate"):
            load_security(_config(tmp_path, **{switch: True}), Metrics())


def test_missing_or_bad_files_are_refused(tmp_path: Path) -> None:
    on = {"security__authentication__enabled": True}
    with pytest.raises(KeyFileError, match="caxton keys create"):
        load_security(_config(tmp_path, **on, security__api_keys__key_file="nope.yaml"), Metrics())
    (tmp_path / "short").write_text("tiny")
    with pytest.raises(TokenSecretError, match="at least 32"):
        load_security(
            _config(
                tmp_path, **on, security__authentication__jwt_secret_file=str(tmp_path / "short")
            ),
            Metrics(),
        )
    with pytest.raises(StartupError, match=r"security\.tls\.cert_file: .* does not exist"):
        load_security(
            _config(
                tmp_path,
                security__tls__enabled=True,
                security__tls__cert_file="missing.crt",
                security__tls__key_file="missing.key",
            ),
            Metrics(),
        )
    with pytest.raises(StartupError, match="at least 1"):
        load_security(
            _config(
                tmp_path,
                **on,
                security__api_keys__key_file="k.yaml",
                security__rate_limiting__burst_size=0,
            ),
            Metrics(),
        )


def test_world_readable_key_and_secret_files_are_warned_about(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key_file = tmp_path / "keys.yaml"
    write_keys(key_file)
    key_file.chmod(0o644)
    secret = tmp_path / "secret"
    secret.write_text("x" * 40)
    secret.chmod(0o604)
    with caplog.at_level(logging.WARNING, logger="caxton.security"):
        gate = load_security(
            _config(
                tmp_path,
                security__authentication__enabled=True,
                security__api_keys__key_file=str(key_file),
                security__authentication__jwt_secret_file=str(secret),
            ),
            Metrics(),
        )
    assert gate.required
    warnings = [r.getMessage() for r in caplog.records]
    assert any(f"chmod 600 {key_file}" in w for w in warnings), warnings
    assert any(f"chmod 600 {secret}" in w for w in warnings), warnings


async def test_authentication_off_is_open_unlimited_and_still_audited(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    loaded = loopback_config(
        tmp_path / "data",
        security__rate_limiting__requests_per_minute=1,
        security__rate_limiting__burst_size=1,
    )
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    async with httpx.AsyncClient(base_url=info.api_urls[0]) as client:
        for _ in range(3):  # loopback callers are spared unless limits are enabled explicitly
            listed = await client.get("/api/v1/agents", headers={"X-API-Key": "ignored"})
            assert listed.status_code == 200
            assert "X-RateLimit-Limit" not in listed.headers
        entity = {"name": "open", "entity_type": "t", "observations": ["o"]}
        assert (await client.post("/api/v1/memory/entities", json=entity)).status_code == 201
        report = (await client.get("/api/v1/health")).json()
    assert report["security"]["authentication"] is False
    assert report["security"]["warnings"] == []  # loopback
    audit = json.loads((tmp_path / "data" / "audit.log").read_text())
    assert (audit["identity"], audit["role"], audit["auth"]) == ("anonymous", "admin", "none")


async def test_exposed_without_authentication_shows_in_health(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded = loopback_config(tmp_path / "data", server__host="0.0.0.0")
    with caplog.at_level(logging.WARNING):
        info: ServerInfo = await nursery.start(
            functools.partial(serve, loaded, handle_signals=False)
        )
    port = info.api_urls[0].rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        report = (await client.get("/api/v1/health")).json()
    [warning] = report["security"]["warnings"]
    assert "0.0.0.0 with authentication disabled" in warning
    assert any("SECURITY" in r.getMessage() and "0.0.0.0" in r.getMessage() for r in caplog.records)
