"""A server in this process with the example agents that talk to each other."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from messaging_servers import copy_agents, start_server

if TYPE_CHECKING:
    from pathlib import Path

    import trio

    from caxton.server import ServerInfo


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agents"
    path.mkdir()
    copy_agents(path, "echo", "wordcount", "asker")
    return path


@pytest.fixture
async def server(nursery: trio.Nursery, tmp_path: Path, agents_dir: Path) -> ServerInfo:
    return await start_server(nursery, tmp_path / "data", agents_dir)
