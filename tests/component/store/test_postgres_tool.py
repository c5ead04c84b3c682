"""tools/postgres.py: the test PostgreSQL's start, stop, url and status, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from postgres import REPO, load_postgres_tool

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = [pytest.mark.postgres, pytest.mark.slow]
tool = load_postgres_tool()


@pytest.fixture
def directory() -> Iterator[Path]:
    """A directory the server's user can reach (as root: ``nobody``; tmp_path is 0700)."""
    parent = Path(tempfile.mkdtemp(prefix="caxton-pgtool-"))
    parent.chmod(0o711)
    try:
        yield parent / "pg"
    finally:
        if (parent / "pg" / tool.STATE_FILE).exists():
            tool.stop(parent / "pg")
        shutil.rmtree(parent, ignore_errors=True)


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "postgres.py"), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_start_stop_status_url_and_idempotence(directory: Path) -> None:
    started = run("start", directory, "--output", "json")
    assert started.returncode == 0, started.stderr
    first = json.loads(started.stdout)
    assert first["running"]
    assert first["url"].startswith("postgresql://postgres:")
    assert first["url"].endswith(f"@127.0.0.1:{first['port']}/postgres")
    with psycopg.connect(first["url"]) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    # start on a running server: the same server
    again = run("start", directory, "-o", "json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["pid"] == first["pid"]
    assert run("url", directory).stdout.strip() == first["url"]
    status = run("status", directory)
    assert status.returncode == 0
    assert status.stdout.startswith("running")
    assert (directory / tool.STATE_FILE).stat().st_mode & 0o077 == 0
    # stop twice, then status says stopped
    assert run("stop", directory).returncode == 0
    assert run("stop", directory).returncode == 0
    stopped = run("status", directory, "-o", "json")
    assert stopped.returncode == tool.EXIT_STOPPED
    assert json.loads(stopped.stdout)["running"] is False
    # a restart keeps the port it recorded, and the data
    restarted = run("start", directory, "-o", "json")
    assert restarted.returncode == 0, restarted.stderr
    assert json.loads(restarted.stdout)["port"] == first["port"]


def test_errors_say_what_to_do(directory: Path) -> None:
    missing = run("status", directory)
    assert missing.returncode == 1
    assert "run `tools/postgres.py start" in missing.stderr
    assert run("stop", directory).returncode == 0  # nothing to stop is no error
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run("start", directory, "--port", port)
    assert busy.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in busy.stderr


@pytest.mark.skipif(os.geteuid() != 0, reason="the server's user differs from ours only as root")
def test_as_root_an_unreachable_installation_is_mirrored(
    directory: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # an installation only root can reach, as a virtualenv under /root is (CI's may be)
    private = Path(tempfile.mkdtemp(prefix="caxton-private-"))
    try:
        package = tool.bin_dir().parent.parent
        for tree in (package, package.parent / f"{package.name}.libs"):
            shutil.copytree(tree, private / tree.name, copy_function=os.link, symlinks=True)
        programs = private / package.name / "pginstall" / "bin"
        monkeypatch.setattr(tool, "bin_dir", lambda: programs)
        server = tool.start(directory, fsync=False)
        assert server.running
        mirrored = tool.programs(directory, server.run_as)
        assert mirrored.is_relative_to(directory)
        assert (mirrored / "postgres").is_file()
        with psycopg.connect(server.url) as conn:
            assert conn.execute("SELECT current_user").fetchone() == ("postgres",)
        assert tool.stop(directory).running is False
    finally:
        shutil.rmtree(private, ignore_errors=True)
