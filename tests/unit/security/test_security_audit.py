"""Audit lines and their rotation."""

from __future__ import annotations

import json
import stat
from typing import TYPE_CHECKING

import pytest

from caxton.security.audit import AuditLog, AuditRecord, outcome_of

if TYPE_CHECKING:
    from pathlib import Path


def _record(status: int = 201) -> AuditRecord:
    return AuditRecord.now(
        identity="ci",
        role="operator",
        auth="api_key",
        method="POST",
        route="/api/v1/agents",
        target="/api/v1/agents",
        status=status,
        request_id="r-1",
        client="127.0.0.1",
    )


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, "ok"),
        (201, "ok"),
        (401, "denied"),
        (403, "denied"),
        (429, "denied"),
        (404, "rejected"),
        (422, "rejected"),
        (500, "error"),
        (503, "error"),
    ],
)
def test_outcomes(status: int, outcome: str) -> None:
    assert outcome_of(status) == outcome


def test_a_line_is_one_json_object_with_every_field() -> None:
    line = _record().line()
    assert line.endswith("\n")
    assert line.count("\n") == 1
    data = json.loads(line)
    assert set(data) == {
        "time",
        "identity",
        "role",
        "auth",
        "method",
        "route",
        "target",
        "status",
        "outcome",
        "request_id",
        "client",
        "protocol",
    }
    assert data["protocol"] == "http"
    assert data["time"].endswith("Z")
    assert data["outcome"] == "ok"


def test_log_rotates_by_size_and_keeps_backups(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.log"
    line = _record().line()
    log = AuditLog(path, max_bytes=len(line) * 3, backups=2)
    for _ in range(10):
        log.write_line(line)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["audit.log", "audit.log.1", "audit.log.2"]
    assert len(path.read_text().splitlines()) == 1  # 10 lines = 3 + 3 + 3 + 1
    for name in ("audit.log.1", "audit.log.2"):
        assert len((path.parent / name).read_text().splitlines()) == 3


async def test_record_writes_through_a_worker_thread(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit.log")
    await log.record(_record(403))
    assert json.loads((tmp_path / "audit.log").read_text())["outcome"] == "denied"
