"""Servers in this process that tests stop and start again on the same data_dir."""

from __future__ import annotations

import base64
import contextlib
import functools
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import trio
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from caxton.config import LoadedConfig

REPO_AGENTS = Path(__file__).resolve().parents[3] / "agents"


@contextlib.asynccontextmanager
async def running(loaded: LoadedConfig) -> AsyncIterator[ServerInfo]:
    """A server for the length of the block, stopped gracefully at its end."""
    async with trio.open_nursery() as nursery:
        info: ServerInfo = await nursery.start(
            functools.partial(serve, loaded, handle_signals=False)
        )
        try:
            yield info
        finally:
            info.stop()


def counter_deploy_body() -> dict[str, str]:
    """The counter WASM agent as an API deploy body (manifest + base64 module)."""
    manifest = (REPO_AGENTS / "counter.toml").read_text().replace('module = "counter.wat"\n', "")
    module = (REPO_AGENTS / "counter.wat").read_bytes()
    return {"manifest": manifest, "wasm_module": base64.b64encode(module).decode()}


@pytest.fixture
def ops_config(tmp_path: Path) -> LoadedConfig:
    """data_dir and agents_dir (holding the echo agent) under tmp_path."""
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO_AGENTS / name, agents / name)
    return loopback_config(tmp_path / "data", server__agents_dir=str(agents))
