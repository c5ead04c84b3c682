"""A server in this process whose agents_dir is a temporary folder the test controls."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    import trio

REPO_AGENTS = Path(__file__).parents[3] / "agents"


def copy_agent(agents_dir: Path, name: str) -> None:
    """Copy the repository's example agent ``name`` (manifest and module) into agents_dir."""
    shutil.copy(REPO_AGENTS / f"{name}.toml", agents_dir / f"{name}.toml")
    shutil.copy(REPO_AGENTS / f"{name}.wat", agents_dir / f"{name}.wat")


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agents"
    path.mkdir()
    copy_agent(path, "echo")
    copy_agent(path, "counter")
    return path


@pytest.fixture
async def agents_server(nursery: trio.Nursery, tmp_path: Path, agents_dir: Path) -> ServerInfo:
    loaded = loopback_config(
        tmp_path / "data",
        server__agents_dir=str(agents_dir),
        agents__drain_timeout="5s",
    )
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info
