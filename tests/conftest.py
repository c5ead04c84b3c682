"""Fixtures shared by every test layer."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

    import trio

# a real PostgreSQL for the tests that ask for one (postgres_url)
pytest_plugins = ["postgres"]


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> ServerInfo:
    """A server in this process, on loopback ports chosen by the kernel."""
    loaded = loopback_config(tmp_path / "data")
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info
