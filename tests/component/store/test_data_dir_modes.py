"""Everything under data_dir is its owner's only: 0700 folders, 0600 files, tightened at start
when an older install or another umask left them open (issue #13)."""

from __future__ import annotations

import functools
import logging
import os
import stat
from typing import TYPE_CHECKING

import httpx
import trio
from servers import loopback_config

from caxton.server import ServerInfo, serve

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

AGENT = 'name = "keyholder"\nsystem_prompt = "x"\n[llm]\nprovider = "openai"\nmodel = "m"\n'


def mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


async def test_data_dir_and_every_file_in_it_are_owner_only(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # what an older version left behind, world-readable
    data_dir = tmp_path / "data"
    old_agent = data_dir / "deployed" / "old" / "versions" / "abc" / "agent.toml"
    old_agent.parent.mkdir(parents=True)
    old_agent.write_text('api_key = "sk-left-open"\n')
    for folder in (data_dir, *old_agent.parents):
        if data_dir in (folder, *folder.parents):
            folder.chmod(0o755)
    old_agent.chmod(0o644)
    outside = tmp_path / "outside.txt"
    outside.write_text("not ours to change")
    outside.chmod(0o644)
    (data_dir / "link-out").symlink_to(outside)

    caplog.set_level(logging.WARNING, logger="caxton.datadir")
    loaded = loopback_config(data_dir)
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client:
            deployed = await client.post("/api/v1/agents", json={"content": AGENT})
            assert deployed.status_code == 201, deployed.text
            backup = await client.post("/api/v1/admin/backup")
            assert backup.status_code == 200, backup.text

    assert "removed group/other access from" in caplog.text
    assert mode(outside) == 0o644  # a link out of data_dir is not followed
    written = [path for path in data_dir.rglob("*") if not path.is_symlink()]
    names = {path.name for path in written}
    assert {"memory.duckdb", "agent.toml", "audit.log", "state.json", "caxton.lock"} <= names
    assert any(name.endswith(".tar.gz") for name in names)
    assert mode(data_dir) == 0o700
    loose = {
        str(path.relative_to(data_dir)): oct(mode(path))
        for path in written
        if mode(path) & 0o077 or (path.is_dir() and mode(path) != 0o700)
    }
    assert not loose


async def test_servers_stopping_in_any_order_give_the_umask_back(tmp_path: Path) -> None:
    """In-process servers (tests, a cluster of them) hold the owner-only umask while any runs;
    the one from before comes back when the last stops, whichever order they stop in."""
    from caxton.datadir import SERVER_UMASK, open_data_dir

    before = os.umask(0o022)
    try:
        first = open_data_dir(tmp_path / "one")
        second = open_data_dir(tmp_path / "two")
        await first.__aenter__()
        await second.__aenter__()
        assert os.umask(SERVER_UMASK) == SERVER_UMASK
        await first.__aexit__(None, None, None)  # not the last in, the first out
        assert os.umask(SERVER_UMASK) == SERVER_UMASK  # the other still runs
        await second.__aexit__(None, None, None)
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)
