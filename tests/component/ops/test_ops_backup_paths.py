"""The admin backup writes new files only: under data_dir/backups, or a new file the caller
names, never over an existing file and never through a symbolic link (issue #13)."""

from __future__ import annotations

import os
import stat
from typing import TYPE_CHECKING

import httpx
import trio
from ops_servers import running

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.config import LoadedConfig


async def test_backups_never_replace_a_file_nor_follow_a_link(
    ops_config: LoadedConfig, tmp_path: Path
) -> None:
    precious = tmp_path / "precious.tar.gz"
    precious.write_bytes(b"do not overwrite")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    linked_dir = tmp_path / "linked"
    linked_dir.symlink_to(elsewhere)
    dangling = tmp_path / "dangling.tar.gz"
    dangling.symlink_to(tmp_path / "target-of-link.tar.gz")
    backups = ops_config.config.data_dir / "backups"
    with trio.fail_after(60):
        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):

            async def backup(path: str) -> httpx.Response:
                return await client.post("/api/v1/admin/backup", json={"path": path})

            refused = {
                str(precious): 409,
                str(dangling): 400,
                str(linked_dir / "new.tar.gz"): 400,
                str(tmp_path / "missing-folder" / "new.tar.gz"): 400,
                str(tmp_path / "not-an-archive.txt"): 400,
                "../escape.tar.gz": 400,
                "sub/dir.tar.gz": 400,
            }
            for path, status in refused.items():
                response = await backup(path)
                assert response.status_code == status, (path, response.text)
                code = response.json()["error"]["code"]
                assert code == ("BACKUP_EXISTS" if status == 409 else "BACKUP_PATH_REFUSED")

            named = await backup("nightly.tar.gz")  # a bare name: under data_dir/backups
            fresh = await backup(str(tmp_path / "fresh.tar.gz"))
            default = await client.post("/api/v1/admin/backup")
            again = await backup("nightly.tar.gz")
    assert named.status_code == 200, named.text
    assert named.json()["path"] == str(backups / "nightly.tar.gz")
    assert fresh.status_code == 200, fresh.text
    assert default.status_code == 200, default.text
    assert again.status_code == 409
    assert precious.read_bytes() == b"do not overwrite"
    assert not (tmp_path / "target-of-link.tar.gz").exists()
    assert list(elsewhere.iterdir()) == []
    for written in (backups / "nightly.tar.gz", tmp_path / "fresh.tar.gz"):
        assert stat.S_IMODE(os.stat(written).st_mode) == 0o600
