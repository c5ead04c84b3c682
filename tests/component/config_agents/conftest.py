"""Config agents against the scripted LLM server of ``tools/llm_server.py`` on loopback.

The LLM endpoint is the one seam the outside world owns; Caxton (HTTP, registry, watcher,
memory, WASM, the LLM clients) runs for real in the test's nursery.
"""

from __future__ import annotations

import functools
import shutil
import socket
from typing import TYPE_CHECKING, Any

import pytest
from servers import REPO, load_llm_server, loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

    import trio

llm_server_tool = load_llm_server()


@pytest.fixture
def refused_url() -> str:
    """A loopback URL where nothing listens (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


@pytest.fixture
def start_llm(nursery: trio.Nursery):
    """``await start_llm(script)``: a scripted LLM server in the test's nursery."""

    async def start(script: dict[str, Any] | None = None) -> Any:
        return await nursery.start(llm_server_tool.serve_llm, script)

    return start


@pytest.fixture
def agents_dir(tmp_path: Path) -> Path:
    path = tmp_path / "agents"
    path.mkdir()
    shutil.copy(REPO / "agents" / "echo.toml", path / "echo.toml")
    shutil.copy(REPO / "agents" / "echo.wat", path / "echo.wat")
    return path


@pytest.fixture
def start_caxton(nursery: trio.Nursery, tmp_path: Path, agents_dir: Path):
    """``await start_caxton({"name.toml": text}, **config)``: a server over those agents."""

    async def start(files: dict[str, str], **config: object) -> ServerInfo:
        for filename, text in files.items():
            (agents_dir / filename).write_text(text)
        loaded = loopback_config(
            tmp_path / "data",
            server__agents_dir=str(agents_dir),
            **{"agents__drain_timeout": "10s", **config},
        )
        info: ServerInfo = await nursery.start(
            functools.partial(serve, loaded, handle_signals=False)
        )
        return info

    return start
