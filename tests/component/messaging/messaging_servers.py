"""Start a server in this process with the example agents that talk to each other."""

from __future__ import annotations

import functools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    import trio

REPO_AGENTS = Path(__file__).parents[3] / "agents"
EXAMPLES = {
    "echo": "echo.wat",
    "counter": "counter.wat",
    "wordcount": "wordcount.wasm",
    "asker": "asker.wasm",
}


def copy_agents(agents_dir: Path, *names: str) -> None:
    for name in names:
        shutil.copy(REPO_AGENTS / f"{name}.toml", agents_dir / f"{name}.toml")
        shutil.copy(REPO_AGENTS / EXAMPLES[name], agents_dir / EXAMPLES[name])


async def start_server(
    nursery: trio.Nursery, data_dir: Path, agents_dir: Path, **overrides: object
) -> ServerInfo:
    loaded = loopback_config(data_dir, server__agents_dir=str(agents_dir), **overrides)
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    return info
