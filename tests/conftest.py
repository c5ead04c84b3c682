"""Fixtures shared by every test layer."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest

from caxton.config import LoadedConfig, Override, load_config
from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

    import trio


def loopback_config(data_dir: Path, **extra: object) -> LoadedConfig:
    """Defaults on 127.0.0.1 with port 0 for the API and metrics, data under ``data_dir``."""
    values: dict[tuple[str, ...], object] = {
        ("server", "host"): "127.0.0.1",
        ("server", "port"): 0,
        ("server", "data_dir"): str(data_dir),
        ("server", "shutdown_timeout"): "5s",
        ("observability", "metrics_port"): 0,
    }
    for dotted, value in extra.items():
        values[tuple(dotted.split("__"))] = value
    overrides = [Override(path, value, "test") for path, value in values.items()]
    return load_config(None, environ={}, overrides=overrides)


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path) -> ServerInfo:
    """A server in this process, on loopback ports chosen by the kernel."""
    loaded = loopback_config(tmp_path / "data")
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info
