"""``caxton start --workers 2``: a supervisor and two real server processes on one port
(issue #15)."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import trio
from processes import run_cli_async, start_server, wait_exit, write_config

from caxton.errors import StartupError
from caxton.workers import RestartPolicy, Supervisor

if TYPE_CHECKING:
    from processes import ServerProcess


def _postgres_config(tmp_path: Path, url: str) -> Path:
    return write_config(
        tmp_path / "caxton.yaml",
        tmp_path / "data",
        f"storage:\n  backend: postgres\n  postgres:\n    url: {url}\n",
    )


async def _wait_for(server: ServerProcess, match: Any, timeout: float = 60) -> dict[str, Any]:
    """The first log record (supervisor's or a worker's) for which ``match`` holds."""
    with trio.fail_after(timeout):
        while True:
            for record in server.records:
                if match(record):
                    return record
            if server.process.returncode is not None:
                raise AssertionError("supervisor exited:\n" + "\n".join(server.raw[-40:]))
            await trio.sleep(0.05)


def _ready_workers(server: ServerProcess) -> list[int]:
    return [r["worker"] for r in server.records if "ready on" in str(r.get("message"))]


def _socket_owner(port: int, client_port: int, pids: set[int]) -> int:
    """The pid (of ``pids``) holding the server side of the connection from ``client_port``,
    read from /proc: nothing in the API says which worker answered, nor needs to."""
    inode = None
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1].split(":")[1], fields[2].split(":")[1]
        if int(local, 16) == port and int(remote, 16) == client_port:
            inode = fields[9]
    assert inode is not None, f"no server socket for client port {client_port}"
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                if os.readlink(fd) == f"socket:[{inode}]":
                    return pid
            except FileNotFoundError:
                continue
    raise AssertionError(f"no worker holds socket {inode}")


async def _health(port: int, pids: set[int]) -> tuple[dict[str, Any], int]:
    """GET /api/v1/health on a new connection: the report and the pid that served it."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /api/v1/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        response = b""
        while b"\r\n\r\n" not in response:
            response += await stream.receive_some(65536)
        head, _, body = response.partition(b"\r\n\r\n")
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length:")
        )
        while len(body) < length:
            body += await stream.receive_some(65536)
        assert head.startswith(b"HTTP/1.1 200"), response
        owner = _socket_owner(port, stream.socket.getsockname()[1], pids)
    return json.loads(body), owner


async def test_two_workers_share_the_port_are_restarted_and_drain(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    config = _postgres_config(tmp_path, postgres_url)
    server = await start_server(
        nursery, "--config", str(config), "--workers", "2", wait_ready=False
    )
    supervising = await _wait_for(
        server, lambda r: "supervising 2 workers" in str(r.get("message"))
    )
    port = supervising["port"]
    assert port > 0  # port: 0 in the file; the supervisor picked one and kept it
    assert f"127.0.0.1:{port}" in supervising["message"]
    pids = set(supervising["pids"])
    assert len(pids) == 2
    assert server.process.pid not in pids
    with trio.fail_after(90):
        while sorted(_ready_workers(server)) != [0, 1]:
            assert server.process.returncode is None, "\n".join(server.raw[-40:])
            await trio.sleep(0.05)
    # each worker has its own data_dir (and lock); the supervisor holds the operator's
    data = tmp_path / "data"
    assert (data / "caxton.lock").read_text().strip() == str(server.process.pid)
    for index in (0, 1):
        assert (data / "workers" / str(index) / "caxton.lock").is_file()

    served = set()
    for _ in range(24):
        report, pid = await _health(port, pids)
        assert report["status"] == "healthy", report
        served.add(pid)
    assert served == pids  # the kernel spread the connections (all on one: 2**-23)

    started = {
        r["worker"]: r["pid"]
        for r in server.records
        if r.get("logger") == "caxton.workers" and " started, pid " in r["message"]
    }
    victim = started[0]
    os.kill(victim, signal.SIGKILL)
    crashed = await _wait_for(
        server, lambda r: "exited unasked" in str(r.get("message")) and r.get("pid") == victim
    )
    assert "worker 0" in crashed["message"]
    assert "killed by SIGKILL" in crashed["message"]
    assert crashed["level"] == "error"
    restarted = await _wait_for(
        server,
        lambda r: "worker 0 started" in str(r.get("message")) and r.get("pid") != victim,
    )
    with trio.fail_after(90):
        while _ready_workers(server).count(0) < 2:
            await trio.sleep(0.05)
    pids = {restarted["pid"], started[1]}
    report, _ = await _health(port, pids)
    assert report["status"] == "healthy"

    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process, timeout=40) == 0
    messages = server.messages()
    assert any("SIGTERM: stopping the workers" in m for m in messages)
    assert "all workers stopped" in messages
    assert sum(m == "Caxton stopped" for m in messages) == 2  # both drained, neither killed
    for pid in pids:
        assert not await trio.Path(f"/proc/{pid}").exists()


async def test_workers_need_the_postgres_backend(tmp_path: Path) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    refused = await run_cli_async("start", "--config", str(config), "--workers", "2")
    assert refused.returncode == 1
    stderr = refused.stderr.decode()
    assert "server.workers: 2 processes cannot share the embedded store" in stderr
    assert "set storage.backend: postgres" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "data" / "workers").exists()


async def test_a_worker_that_cannot_start_stops_the_supervisor(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    config = _postgres_config(tmp_path, postgres_url)
    config.write_text(
        config.read_text()
        + "security:\n  tls:\n    enabled: true\n    cert_file: missing.pem\n"
        + "    key_file: missing.key\n"
    )
    server = await start_server(
        nursery, "--config", str(config), "--workers", "2", wait_ready=False
    )
    # Bounded, not timed: the healthy worker may still be starting (imports, model) when it is
    # told to stop, and gets shutdown_timeout (10 s) plus its margin; on a busy machine the
    # whole takes tens of seconds.
    assert await wait_exit(server.process, timeout=90) == 1
    raw = "\n".join(server.raw)
    assert f"security.tls.cert_file: {tmp_path / 'data' / 'missing.pem'} does not exist" in raw
    assert "could not start (exit code 1)" in raw
    assert "Traceback" not in raw


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_drain_time(
    tmp_path: Path,
) -> None:
    stubborn = (
        "import pathlib, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "pathlib.Path(sys.argv[1]).touch()\n"
        "time.sleep(60)\n"
    )
    supervisor = Supervisor(
        count=2,
        command=lambda i: [*_python(stubborn), str(tmp_path / str(i))],
        shutdown_timeout_s=0.3,
        stop_margin_s=0.2,
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            pids = await nursery.start(supervisor.run)
            assert len(pids) == 2
            while not all((tmp_path / str(i)).exists() for i in (0, 1)):
                await trio.sleep(0.02)
            stopping = trio.current_time()
            nursery.cancel_scope.cancel()
    assert 0.5 <= trio.current_time() - stopping < 5
    assert supervisor.killed
    assert supervisor.pids() == {}


async def test_a_crashing_worker_is_started_again_with_backoff(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # each run appends a line; runs after the first exit at once with code 3
    flaky = (
        "import pathlib, sys, time\n"
        "runs = pathlib.Path(sys.argv[1])\n"
        "first = not runs.exists()\n"
        "with runs.open('a') as f: f.write('run\\n')\n"
        "time.sleep(60 if first else 0)\n"
        "sys.exit(3)\n"
    )
    supervisor = Supervisor(
        count=1,
        command=lambda i: [*_python(flaky), str(tmp_path / "runs")],
        shutdown_timeout_s=1,
        policy=RestartPolicy(first_delay_s=0.1, max_delay_s=0.4, stable_after_s=5.0),
    )
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            pids = await nursery.start(supervisor.run)
            while not (tmp_path / "runs").exists():
                await trio.sleep(0.02)
            os.kill(pids[0], signal.SIGKILL)
            while supervisor.restarts < 4:
                await trio.sleep(0.02)
            nursery.cancel_scope.cancel()
    assert not supervisor.killed
    assert (tmp_path / "runs").read_text().count("run") >= 4
    exits = [r.getMessage() for r in caplog.records if "exited unasked" in r.getMessage()]
    assert "(killed by SIGKILL); starting it again in 0.2s" in exits[0]
    assert [m.rsplit(" ", 1)[1] for m in exits[1:4]] == ["0.4s", "0.4s", "0.4s"]
    assert all("(exit code 3)" in m for m in exits[1:])


async def test_a_worker_that_fails_at_once_is_not_started_again(tmp_path: Path) -> None:
    supervisor = Supervisor(
        count=2,
        command=lambda i: _python(f"import sys, time; time.sleep({i} * 30); sys.exit(2)"),
        shutdown_timeout_s=1,
    )
    with (
        trio.fail_after(20),
        pytest.RaisesGroup(
            pytest.RaisesExc(StartupError, match=r"worker 0 could not start \(exit code 2\)"),
            flatten_subgroups=True,
        ),
    ):
        await supervisor.run()
    assert supervisor.restarts == 0
