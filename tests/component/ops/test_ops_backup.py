"""Online backup under writes, then restore into a wiped data_dir; refusals that change nothing."""

from __future__ import annotations

import datetime as dt
import gzip
import io
import json
import shutil
import tarfile
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from ops_servers import counter_deploy_body, running

from caxton.errors import DataDirLockedError
from caxton.ops import archive
from caxton.ops.errors import ArchiveInvalid
from caxton.ops.restore import AgentsAction, RestoreReport, restore

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.config import LoadedConfig

NOW = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
CAT = {"name": "Whiskers", "entity_type": "pet", "observations": ["a small cat"]}


def _restore(loaded: LoadedConfig, path: Path) -> RestoreReport:
    config = loaded.config
    return restore(
        path,
        data_dir=config.data_dir,
        database_path=config.database_path,
        agents_dir=config.agents_dir,
    )


async def test_backup_under_writes_then_restore_into_a_wiped_data_dir(
    ops_config: LoadedConfig, tmp_path: Path
) -> None:
    target = tmp_path / "backups" / "one.tar.gz"
    target.parent.mkdir()
    acknowledged: list[str] = []
    with trio.fail_after(90):
        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):
            assert (await client.post("/api/v1/memory/entities", json=CAT)).status_code == 201
            deployed = await client.post("/api/v1/agents", json=counter_deploy_body())
            assert deployed.status_code == 201, deployed.text
            done = trio.Event()

            async def write_loop() -> None:
                i = 0
                while not done.is_set():
                    name = f"note-{i}"
                    entity = {"name": name, "entity_type": "note", "observations": ["x"]}
                    created = await client.post("/api/v1/memory/entities", json=entity)
                    assert created.status_code == 201
                    acknowledged.append(name)
                    i += 1

            async with trio.open_nursery() as nursery:
                nursery.start_soon(write_loop)
                while len(acknowledged) < 3:
                    await trio.sleep(0.01)
                before = list(acknowledged)
                response = await client.post("/api/v1/admin/backup", json={"path": str(target)})
                done.set()
            assert response.status_code == 200, response.text
            report = response.json()
            bogus = await client.post("/api/v1/admin/backup", json={"bogus": 1})
            assert bogus.status_code == 422
            with pytest.raises(DataDirLockedError, match="stop it first"):
                _restore(ops_config, target)

        assert report["path"] == str(target)
        manifest = archive.verify_archive(target)
        paths = {f.path for f in manifest.files}
        assert "database/memory.duckdb" in paths
        assert {"agents/echo.toml", "agents/echo.wat"} <= paths
        assert any(p.startswith("deployed/counter/versions/") for p in paths)
        assert report["files"] == len(manifest.files)

        shutil.rmtree(ops_config.config.data_dir)
        result = _restore(ops_config, target)
        assert result.agents is AgentsAction.UNCHANGED

        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):
            names = {
                e["name"] for e in (await client.get("/api/v1/memory/export")).json()["entities"]
            }
            assert {"Whiskers", *before} <= names
            # the copy is one consistent point: a prefix of the acknowledged writes
            restored_notes = sorted(n for n in names if n.startswith("note-"))
            assert restored_notes == sorted(acknowledged[: len(restored_notes)])
            agents = (await client.get("/api/v1/agents")).json()["agents"]
            assert {a["name"] for a in agents} == {"counter", "echo"}
            reply = await client.post("/api/v1/agents/counter/messages", json={"content": "a"})
            assert reply.status_code == 200, reply.text
            verify = (await client.get("/api/v1/admin/storage/verify")).json()
            assert verify["ok"], verify


def _rewrite(source: Path, target: Path, name: str) -> None:
    """Copy an archive with one byte of member ``name`` changed (the manifest kept as it was)."""
    with tarfile.open(source, "r:gz") as old, tarfile.open(target, "w:gz") as new:
        for member in old.getmembers():
            handle = old.extractfile(member)
            assert handle is not None
            data = handle.read()
            if member.name == name:
                data = bytes([data[0] ^ 0x20]) + data[1:]
            new.addfile(member, io.BytesIO(data))


async def test_damaged_archives_are_refused_and_change_nothing(
    ops_config: LoadedConfig, tmp_path: Path
) -> None:
    target = tmp_path / "b.tar.gz"
    with trio.fail_after(60):
        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):
            assert (await client.post("/api/v1/memory/entities", json=CAT)).status_code == 201
            response = await client.post("/api/v1/admin/backup", json={"path": str(target)})
            assert response.status_code == 200, response.text
    data_dir = ops_config.config.data_dir
    before = sorted(p.relative_to(data_dir) for p in data_dir.rglob("*"))

    tampered = tmp_path / "tampered.tar.gz"
    _rewrite(target, tampered, "agents/echo.toml")
    with pytest.raises(ArchiveInvalid, match="does not match its SHA-256"):
        _restore(ops_config, tampered)

    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(target.read_bytes()[: target.stat().st_size // 2])
    with pytest.raises(ArchiveInvalid, match=r"not a readable tar\.gz"):
        _restore(ops_config, truncated)

    not_a_backup = tmp_path / "other.tar.gz"
    not_a_backup.write_bytes(gzip.compress(b"hello"))
    with pytest.raises(ArchiveInvalid):
        _restore(ops_config, not_a_backup)

    no_manifest = tmp_path / "nomanifest.tar.gz"
    with tarfile.open(no_manifest, "w:gz") as tar:
        info_ = tarfile.TarInfo("database/memory.duckdb")
        info_.size = 3
        tar.addfile(info_, io.BytesIO(b"abc"))
    with pytest.raises(ArchiveInvalid, match=r"no manifest\.json"):
        _restore(ops_config, no_manifest)

    garbage = tmp_path / "garbage"
    (garbage / "database").mkdir(parents=True)
    (garbage / "database" / "memory.duckdb").write_bytes(b"not a database" * 1000)
    sealed = archive.new_manifest(archive.describe_tree(garbage), sources={}, now=NOW)
    archive.write_archive(garbage, sealed, tmp_path / "garbage.tar.gz")
    with pytest.raises(ArchiveInvalid, match="the database in the backup cannot be opened"):
        _restore(ops_config, tmp_path / "garbage.tar.gz")

    assert sorted(p.relative_to(data_dir) for p in data_dir.rglob("*")) == before
    with tarfile.open(target, "r:gz") as tar:
        first = tar.next()
        assert first is not None
        assert first.name == "manifest.json"
        handle = tar.extractfile(first)
        assert handle is not None
        assert json.load(handle)["format"] == archive.FORMAT
