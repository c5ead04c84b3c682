"""Servers in this process with authentication on (see ``security_servers``)."""

from __future__ import annotations

import functools
import secrets
from typing import TYPE_CHECKING

import pytest
from security_servers import DASHBOARD, Secured, StartSecured, write_keys
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

    import trio


@pytest.fixture
def start_secured(nursery: trio.Nursery, tmp_path: Path) -> StartSecured:
    """Start a server with authentication on; keyword arguments override config keys."""
    count = 0

    async def start(**extra: object) -> Secured:
        nonlocal count
        count += 1
        base = tmp_path / f"secured-{count}"
        base.mkdir()
        key_file = base / "api-keys.yaml"
        keys = write_keys(key_file)
        secret = secrets.token_hex(32).encode()
        (base / "jwt-secret").write_bytes(secret + b"\n")
        (base / "jwt-secret").chmod(0o600)
        settings: dict[str, object] = {
            "security__authentication__enabled": True,
            "security__authentication__jwt_secret_file": str(base / "jwt-secret"),
            "security__api_keys__required": True,
            "security__api_keys__key_file": str(key_file),
            "security__rate_limiting__requests_per_minute": 100_000,
            "security__rate_limiting__burst_size": 100_000,
            "security__cors__allowed_origins": [DASHBOARD],
            **extra,
        }
        loaded = loopback_config(base / "data", **settings)
        info: ServerInfo = await nursery.start(
            functools.partial(serve, loaded, handle_signals=False)
        )
        return Secured(
            info=info, keys=keys, secret=secret, key_file=key_file, data_dir=base / "data"
        )

    return start


@pytest.fixture
async def secured(start_secured: StartSecured) -> Secured:
    return await start_secured()
