"""The pure parts of ``server.workers``: the port reservation, restart delays, what a worker
changes in the operator's configuration (issue #15)."""

from __future__ import annotations

import errno
import socket
from typing import TYPE_CHECKING

import pytest

from caxton.config import CaxtonConfig, Override, load_config
from caxton.errors import StartupError
from caxton.http.server import bind_reuse_port
from caxton.workers import (
    RestartPolicy,
    describe_exit,
    reserve_port,
    worker_command,
    worker_overrides,
    worker_problems,
)

if TYPE_CHECKING:
    from pathlib import Path

POSTGRES = "storage:\n  backend: postgres\n  postgres:\n    url: postgresql://u@localhost/db\n"


def _config(text: str, tmp_path: Path, *overrides: Override) -> CaxtonConfig:
    path = tmp_path / "caxton.yaml"
    path.write_text(f"server:\n  data_dir: {tmp_path / 'data'}\n" + text)
    return load_config(path, environ={}, overrides=list(overrides)).config


def test_a_reserved_port_takes_reuseport_binds_but_no_connection() -> None:
    with reserve_port("127.0.0.1", 0) as port:
        assert port > 0
        # a plain bind (a program that is no worker) cannot take the port
        with socket.socket() as plain, pytest.raises(OSError, match="in use") as taken:
            plain.bind(("127.0.0.1", port))
        assert taken.value.errno == errno.EADDRINUSE
        # workers can, and the one that listens gets every connection
        with bind_reuse_port("127.0.0.1", port) as worker:
            worker.listen(8)
            worker.settimeout(5)
            for _ in range(5):
                with socket.create_connection(("127.0.0.1", port), timeout=5):
                    accepted, _ = worker.accept()
                    accepted.close()


def test_two_listening_workers_share_the_port() -> None:
    with (
        reserve_port("127.0.0.1", 0) as port,
        bind_reuse_port("127.0.0.1", port) as first,
        bind_reuse_port("127.0.0.1", port) as second,
    ):
        first.listen(64)
        second.listen(64)
        clients = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(32)]
        try:
            first.setblocking(False)
            second.setblocking(False)
            counts = []
            for listener in (first, second):
                count = 0
                while True:
                    try:
                        accepted, _ = listener.accept()
                    except BlockingIOError:
                        break
                    accepted.close()
                    count += 1
                counts.append(count)
        finally:
            for client in clients:
                client.close()
    assert sum(counts) == 32
    assert all(counts), counts  # the kernel spread them (all on one: 2**-31)


def test_a_port_another_program_listens_on_is_refused_with_the_fix() -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        port = other.getsockname()[1]
        with pytest.raises(StartupError) as refused, reserve_port("127.0.0.1", port):
            pass
    message = refused.value.message
    assert f"cannot bind 127.0.0.1:{port}" in message
    assert "set server.port (or --port) to a free one" in message


def test_restart_delay_doubles_while_a_worker_keeps_crashing() -> None:
    policy = RestartPolicy(first_delay_s=0.5, max_delay_s=4.0, stable_after_s=10.0)
    quick, delays = 0, []
    for _ in range(6):
        quick, delay = policy.after_exit(quick, ran_s=0.2)
        delays.append(delay)
    assert delays == [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    # a worker that ran a while is started again soon, and the count starts over
    assert policy.after_exit(quick, ran_s=60.0) == (0, 0.5)
    assert policy.after_exit(0, ran_s=0.1) == (1, 1.0)


def test_exits_are_described_by_code_or_signal() -> None:
    assert describe_exit(1) == "exit code 1"
    assert describe_exit(0) == "exit code 0"
    assert describe_exit(-9) == "killed by SIGKILL"
    assert describe_exit(-200) == "killed by signal 200"


def test_a_worker_gets_its_own_data_dir_and_the_operators_files(tmp_path: Path) -> None:
    config = _config(
        "  agents_dir: agents\n"
        "observability:\n  metrics_port: 9300\n"
        "logging:\n  file: caxton.log\n"
        "security:\n  tls:\n    cert_file: /etc/caxton/cert.pem\n    key_file: tls/key.pem\n"
        + POSTGRES,
        tmp_path,
    )
    data = tmp_path / "data"
    by_key = {o.path: o.value for o in worker_overrides(config, 2)}
    assert by_key[("server", "data_dir")] == str(data / "workers" / "2")
    assert by_key[("server", "agents_dir")] == str(data / "agents")
    assert by_key[("logging", "file")] == str(data / "caxton.log")
    assert by_key[("security", "tls", "cert_file")] == "/etc/caxton/cert.pem"
    assert by_key[("security", "tls", "key_file")] == str(data / "tls" / "key.pem")
    assert by_key[("security", "audit", "log_file")] == str(data / "audit.log")
    assert by_key[("observability", "metrics_port")] == 9302
    assert ("memory", "embedding_model") not in by_key  # the packaged model is no file
    assert all(o.origin == "worker 2" for o in worker_overrides(config, 2))

    # loaded again with them, the worker resolves every file where the operator meant it
    path = tmp_path / "caxton.yaml"
    worker = load_config(path, environ={}, overrides=worker_overrides(config, 2)).config
    assert worker.data_dir == data / "workers" / "2"
    assert worker.agents_dir == data / "agents"
    assert worker.database_path == data / "workers" / "2" / "memory.duckdb"


def test_metrics_port_zero_stays_zero(tmp_path: Path) -> None:
    config = _config("observability:\n  metrics_port: 0\n" + POSTGRES, tmp_path)
    paths = [o.path for o in worker_overrides(config, 1)]
    assert ("observability", "metrics_port") not in paths


def test_metrics_ports_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    workers = Override(("server", "workers"), 4, "--workers")
    past = _config("observability:\n  metrics_port: 65534\n" + POSTGRES, tmp_path, workers)
    assert "65537 is past 65535" in worker_problems(past)[0]
    cover = _config(
        "  port: 9092\nobservability:\n  metrics_port: 9090\n" + POSTGRES, tmp_path, workers
    )
    assert "9090-9093 cover server.port 9092" in worker_problems(cover)[0]
    fine = _config("observability:\n  metrics_port: 9090\n" + POSTGRES, tmp_path, workers)
    assert worker_problems(fine) == []


def test_embedded_backend_refuses_workers(tmp_path: Path) -> None:
    from caxton.errors import ConfigError

    with pytest.raises(ConfigError) as refused:
        _config("", tmp_path, Override(("server", "workers"), 2, "--workers"))
    assert "set storage.backend: postgres" in refused.value.message


def test_worker_command_runs_the_ordinary_server() -> None:
    command = worker_command(["--config", "c.yaml", "--workers", "2"], 8123, 1)
    assert command[1:] == [
        "-m",
        "caxton",
        "start",
        "--config",
        "c.yaml",
        "--workers",
        "2",
        "--port",
        "8123",
        "--worker-index",
        "1",
    ]


def test_workers_share_the_cores_among_their_models(tmp_path: Path) -> None:
    """Without ``memory.embedding_config.threads`` each worker's model gets its share of the
    cores (at most 4 in all), never fewer than one thread."""
    from caxton.memory.embedder import default_threads

    assert default_threads(cores=2) == 2
    assert default_threads(workers=2, cores=2) == 1
    assert default_threads(workers=3, cores=2) == 1
    assert default_threads(workers=2, cores=16) == 2
    assert default_threads(cores=16) == 4
    workers = Override(("server", "workers"), 2, "--workers")
    config = _config(POSTGRES, tmp_path, workers)
    assert default_threads(workers=config.server.workers, cores=8) == 2


def test_workers_share_the_search_statements() -> None:
    """On PostgreSQL each worker runs its share of the host's search statements at once,
    never fewer than one: more ran beside the workers' event loops than the cores took."""
    from caxton.memory.search_batches import DEFAULT_SLOTS, default_slots

    assert default_slots() == DEFAULT_SLOTS == 2
    assert default_slots(workers=2) == 1
    assert default_slots(workers=4) == 1
