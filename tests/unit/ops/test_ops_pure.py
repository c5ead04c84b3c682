"""The pure parts of the operations commands: manifests, checksums, restore plans, safe mode."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from caxton.datadir import hold_offline, holder_pid
from caxton.errors import DataDirLockedError
from caxton.ops import archive, safe_mode
from caxton.ops.restore import AgentsAction, Move, RestorePlan, plan

NOW = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def entry(path: str, digest: str = "a" * 64, size: int = 3) -> archive.FileEntry:
    return archive.FileEntry(path=path, sha256=digest, size=size)


def manifest(*entries: archive.FileEntry) -> archive.Manifest:
    return archive.new_manifest(entries, sources={"data_dir": "/d"}, now=NOW)


@pytest.mark.parametrize(
    ("name", "safe"),
    [
        ("database/memory.duckdb", True),
        ("deployed/echo/versions/abc/agent.toml", True),
        ("/etc/passwd", False),
        ("database/../../etc/passwd", False),
        ("database//x", False),
        ("./database/x", False),
        ("database\\x", False),
        ("", False),
    ],
)
def test_member_names_must_stay_inside_the_target(name: str, safe: bool) -> None:
    assert archive.safe_member_name(name) is safe


def test_manifest_round_trips_and_is_sorted() -> None:
    made = manifest(entry("deployed/b"), entry("database/memory.duckdb"))
    assert [f.path for f in made.files] == ["database/memory.duckdb", "deployed/b"]
    assert made.created_at == "2026-01-02T03:04:05Z"
    parsed, problems = archive.parse_manifest(made.to_json())
    assert problems == []
    assert parsed == made


def test_manifest_with_unsafe_or_incomplete_entries_is_rejected() -> None:
    data = manifest(entry("database/memory.duckdb")).to_json()
    data["files"].append({"path": "../escape", "sha256": "b" * 64, "size": 1})
    data["files"].append({"path": "agents/x.toml"})
    parsed, problems = archive.parse_manifest(data)
    assert parsed is None
    assert any("unsafe path '../escape'" in p for p in problems)
    assert any("files[2] needs path, sha256 and size" in p for p in problems)
    assert archive.parse_manifest({"format": 99, "files": []})[1][0].startswith(
        "manifest.json has format 99"
    )


def test_checksums_text_round_trips() -> None:
    files = [entry("database/a", "1" * 64), entry("agents/b c.toml", "2" * 64)]
    text = archive.checksums_text(files)
    assert text.splitlines()[0] == "1" * 64 + "  database/a"
    assert archive.parse_checksums(text) == {"database/a": "1" * 64, "agents/b c.toml": "2" * 64}


def test_check_contents_names_every_problem() -> None:
    made = manifest(
        entry("database/memory.duckdb", "1" * 64, 10),
        entry("deployed/a", "2" * 64, 5),
        entry("agents/x.toml", "3" * 64, 7),
    )
    checksums = {f.path: f.sha256 for f in made.files}
    digests = {
        "database/memory.duckdb": ("9" * 64, 10),  # same size, other bytes
        "deployed/a": ("2" * 64, 4),  # truncated
        "agents/extra.toml": ("4" * 64, 1),  # not listed
    }
    problems = archive.check_contents(made, digests, checksums)
    assert problems == [
        "agents/x.toml is listed in the manifest but missing",
        "database/memory.duckdb does not match its SHA-256 (the file is corrupted)",
        "deployed/a has 4 bytes, the manifest says 5",
        "agents/extra.toml is in the archive but not in the manifest",
    ]
    sound = {f.path: (f.sha256, f.size) for f in made.files}
    assert archive.check_contents(made, sound, checksums) == []
    checksums["deployed/a"] = "0" * 64
    assert archive.check_contents(made, sound, checksums) == [
        "checksums.sha256 disagrees with the manifest about deployed/a"
    ]


def _plan(agents_present: dict[str, str] | None, *, replace: bool = False) -> RestorePlan:
    made = manifest(
        entry("database/old.duckdb"),
        entry("database/old.duckdb.wal"),
        entry("database/old.duckdb.hnsw"),
        entry("deployed/echo/active"),
        entry("agents/echo.toml", "e" * 64),
    )
    return plan(
        made,
        data_dir=Path("/d"),
        database_path=Path("/d/memory.duckdb"),
        agents_dir=Path("/agents"),
        agents_present=agents_present,
        replace_agents=replace,
    )


def test_restore_plan_maps_the_database_to_the_configured_path() -> None:
    decided = _plan(None)
    assert set(decided.moves[:3]) == {
        Move(source="database/old.duckdb", destination=Path("/d/memory.duckdb")),
        Move(source="database/old.duckdb.wal", destination=Path("/d/memory.duckdb.wal")),
        Move(source="database/old.duckdb.hnsw", destination=Path("/d/memory.duckdb.hnsw")),
    }
    assert Path("/d/deployed") in decided.aside
    assert Path("/d/memory.duckdb.hnsw.json") in decided.aside
    assert decided.agents is AgentsAction.RESTORE


def test_restore_plan_keeps_a_different_agents_dir_unless_asked() -> None:
    other = {"mine.toml": "f" * 64}
    kept = _plan(other)
    assert kept.agents is AgentsAction.KEPT
    assert all(m.destination.parent != Path("/agents") for m in kept.moves)
    replaced = _plan(other, replace=True)
    assert replaced.agents is AgentsAction.RESTORE
    assert Path("/agents/mine.toml") in replaced.aside
    assert _plan({"echo.toml": "e" * 64}).agents is AgentsAction.UNCHANGED


@pytest.mark.parametrize(
    ("enabled", "mutating", "endpoint", "refused"),
    [
        (False, True, "memory.create_entities", False),
        (True, False, "agents.send_message", False),
        (True, True, "memory.create_entities", True),
        (True, True, "admin.set_safe_mode", False),
    ],
)
def test_safe_mode_refuses_only_mutating_routes(
    enabled: bool, mutating: bool, endpoint: str, refused: bool
) -> None:
    exempt = frozenset({"admin.set_safe_mode"})
    assert (
        safe_mode.refuses(enabled=enabled, mutating=mutating, endpoint=endpoint, exempt=exempt)
        is refused
    )


def test_safe_mode_flag_file_round_trips(tmp_path: Path) -> None:
    assert safe_mode.read_flag(tmp_path) == safe_mode.OFF
    status = safe_mode.enabled_now("incident 7")
    safe_mode.write_flag(tmp_path, status)
    assert safe_mode.read_flag(tmp_path) == status
    safe_mode.write_flag(tmp_path, safe_mode.OFF)
    assert not (tmp_path / safe_mode.FLAG_FILE).exists()
    (tmp_path / safe_mode.FLAG_FILE).write_text("{not json")
    damaged = safe_mode.read_flag(tmp_path)
    assert damaged.enabled
    assert "unreadable" in (damaged.reason or "")


def test_offline_lock_refuses_a_second_holder_and_names_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    assert holder_pid(data_dir) is None
    with hold_offline(data_dir):
        assert holder_pid(data_dir) == os.getpid()
        with (
            pytest.raises(DataDirLockedError, match=rf"\(pid {os.getpid()}\); stop it first"),
            hold_offline(data_dir, wait_s=0.2),
        ):
            pass
    assert holder_pid(data_dir) is None
    with hold_offline(data_dir):
        pass
