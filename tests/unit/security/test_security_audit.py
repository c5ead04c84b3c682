"""Audit lines and their rotation."""

from __future__ import annotations

import json
import stat
import threading
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
import trio.testing

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


def _numbered(i: int) -> AuditRecord:
    return attrs.evolve(_record(), request_id=f"r-{i}")


async def test_concurrent_calls_share_writes_and_each_returns_after_its_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    missing: list[int] = []

    async def call(i: int) -> None:
        await log.record(_numbered(i))
        if f'"request_id":"r-{i}"' not in path.read_text():
            missing.append(i)

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(call, i)
    assert missing == []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(int(line["request_id"][2:]) for line in lines) == list(range(40))
    # calls that came while a write waited or ran are written together
    assert log.writes < 10


async def test_a_cancelled_callers_line_is_still_written_and_others_finish(
    tmp_path: Path,
) -> None:
    path = tmp_path / "audit.log"
    log = AuditLog(path)
    gate = threading.Event()  # holds the first write in its worker thread
    write_lines = log.write_lines

    def gated(lines: list[str]) -> None:
        gate.wait(10)
        write_lines(lines)

    log.write_lines = gated  # type: ignore[method-assign]
    scopes = [trio.CancelScope() for _ in range(4)]

    async def call(i: int) -> None:
        with scopes[i]:
            await log.record(_numbered(i))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 0)  # writes first, alone, held at the gate
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, 1)  # writes the next batch once the first is written
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(call, 2)  # wait for that batch
        nursery.start_soon(call, 3)
        await trio.testing.wait_all_tasks_blocked()
        scopes[1].cancel()  # the batch's writer, then one who waits for it
        scopes[2].cancel()
        await trio.testing.wait_all_tasks_blocked()
        gate.set()
    ids = sorted(json.loads(line)["request_id"] for line in path.read_text().splitlines())
    assert ids == ["r-0", "r-1", "r-2", "r-3"]
    assert log.writes == 2


async def test_a_failed_write_is_logged_for_every_line_in_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "audit.log"
    path.mkdir()  # cannot be opened for writing
    log = AuditLog(path)
    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(log.record, _numbered(i))
    failed = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
    assert sorted(json.loads(m[m.index("{") :])["request_id"] for m in failed) == [
        f"r-{i}" for i in range(5)
    ]


def test_lines_written_together_rotate_where_one_would_pass_the_size(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    line = _record().line()
    log = AuditLog(path, max_bytes=len(line) * 3, backups=3)
    log.write_lines([line] * 7)
    assert [
        len((tmp_path / n).read_text().splitlines())
        for n in ("audit.log.2", "audit.log.1", "audit.log")
    ] == [3, 3, 1]
