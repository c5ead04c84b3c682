"""``server.workers: N`` (issue #15): N server processes on one port, and their supervisor.

With ``server.workers`` above 1, ``caxton start`` does not serve: it becomes the supervisor.
It holds ``data_dir``'s lock (so no second server and no offline command takes that data_dir
while the workers run), reserves the API port, and runs N children, each the ordinary server
(``python -m caxton start ... --port P --worker-index i``). Every child binds ``host:P`` with
``SO_REUSEPORT`` (:func:`caxton.http.server.bind_reuse_port`) and the kernel spreads new
connections among them. Workers share their durable state through PostgreSQL, which is why the
loader refuses ``workers > 1`` without ``storage.backend: postgres``.

Choices, and why:

* **Port 0.** The supervisor binds the port first, with ``SO_REUSEPORT``, and keeps that
  socket open without listening: the port stays reserved across worker restarts and never
  receives a connection (the kernel only hands connections to listening sockets). Every
  worker is told the port it picked.
* **data_dir.** Each server locks its data_dir (:mod:`caxton.datadir`), so worker ``i`` gets
  its own, ``<data_dir>/workers/<i>``: its lock, ``state.json`` (start counts, clean stop),
  the model folder and whatever a server still keeps in files (the DuckDB file while
  storage is not wired to PostgreSQL yet). The files the operator names in ``caxton.yaml``
  keep meaning what they meant: ``server.agents_dir``, ``logging.file``, the TLS, API-key,
  JWT-secret and audit files and a local embedding model are handed to the worker as
  absolute paths resolved against the operator's data_dir (:func:`worker_overrides`), so
  every worker watches the same agents_dir, writes one audit log and serves one certificate.
  The lock stays one file per server rather than becoming per worker: the datadir module and
  every offline command keep the one rule "one lock, one server".
* **Metrics.** The API has no ``/metrics`` of its own, and a port can have only one metrics
  server, so worker ``i`` serves Prometheus on ``observability.metrics_port + i`` (0 stays
  0: any free port, logged by the worker). The supervisor refuses ports past 65535 or a
  range that covers ``server.port``.
* **Signals.** Workers run in their own process group, so a terminal's Ctrl-C reaches the
  supervisor alone; it sends SIGTERM to every worker once, waits up to
  ``server.shutdown_timeout`` plus :data:`STOP_MARGIN_S` (the worker drains requests within
  the timeout, then closes its store), then SIGKILLs what is left. A second SIGTERM/SIGINT
  is forwarded, which makes the workers stop at once. SIGHUP is forwarded (log level). If
  the supervisor itself is SIGKILLed, its workers keep running until stopped (systemd's
  control group stops them all).
* **Crashes.** A worker that exits unasked is started again after :class:`RestartPolicy`'s
  delay, which doubles while it keeps exiting within ``stable_after_s`` of its start.
  Every exit is logged with its exit code or signal. One exception: a worker whose first
  run ends with an error exit code within ``stable_after_s`` could not start (a missing
  certificate, say), and would not on the next try either; the supervisor then stops the
  others and exits 1 (:func:`worker_start_failed`), as ``caxton start`` without workers would.

Every log line of a worker carries ``worker=<i>`` (:func:`tag_worker_logs`); the supervisor
logs the port and each worker's pid (``caxton.workers``).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import signal
import sys
from typing import TYPE_CHECKING

import attrs
import trio

from caxton.config import Override
from caxton.config.model import MemoryConfig
from caxton.datadir import open_data_dir
from caxton.errors import StartupError
from caxton.http.server import bind_address, bind_reuse_port

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence
    from pathlib import Path

    from caxton.config import CaxtonConfig, LoadedConfig
    from caxton.config.loader import KeyPath

LOGGER = logging.getLogger("caxton.workers")
#: Worker ``i``'s data_dir is ``<data_dir>/workers/<i>``.
WORKERS_DIR = "workers"
#: Time a worker has, beyond ``server.shutdown_timeout``, to close its components after the
#: requests drained, before the supervisor SIGKILLs it.
STOP_MARGIN_S = 5.0


def worker_data_dir(data_dir: Path, index: int) -> Path:
    """Worker ``index``'s own data_dir under the operator's ``data_dir``."""
    return data_dir / WORKERS_DIR / str(index)


def _operator_files(config: CaxtonConfig) -> Iterator[tuple[KeyPath, str]]:
    """The paths in the configuration that name the operator's files, not a server's own."""
    security = config.security
    named: list[tuple[KeyPath, str | None]] = [
        (("server", "agents_dir"), config.server.agents_dir),
        (("logging", "file"), config.logging.file),
        (("security", "tls", "cert_file"), security.tls.cert_file),
        (("security", "tls", "key_file"), security.tls.key_file),
        (
            ("security", "authentication", "jwt_secret_file"),
            security.authentication.jwt_secret_file,
        ),
        (("security", "api_keys", "key_file"), security.api_keys.key_file),
        (("security", "audit", "log_file"), security.audit.log_file),
    ]
    model = config.memory.embedding_model
    if model != attrs.fields(MemoryConfig).embedding_model.default:
        named.append((("memory", "embedding_model"), model))
    for path, value in named:
        if value:
            yield path, value


def worker_overrides(config: CaxtonConfig, index: int) -> list[Override]:
    """What worker ``index`` changes in the operator's ``config`` (see the module docstring).

    Args:
        config: the configuration as the operator wrote it (file, env and flags applied).
        index: the worker, from 0.

    Returns:
        Overrides for ``load_config``: the worker's data_dir, the operator's files as absolute
        paths, and its metrics port (``metrics_port + index``; 0 stays 0).
    """
    origin = f"worker {index}"
    overrides = [
        Override(("server", "data_dir"), str(worker_data_dir(config.data_dir, index)), origin)
    ]
    overrides.extend(
        Override(path, str(config.resolve_path(value)), origin)
        for path, value in _operator_files(config)
    )
    metrics_port = config.observability.metrics_port
    if metrics_port:
        overrides.append(Override(("observability", "metrics_port"), metrics_port + index, origin))
    return overrides


def worker_problems(config: CaxtonConfig) -> list[str]:
    """What keeps ``server.workers`` processes from starting side by side, each with its fix."""
    workers = config.server.workers
    observability = config.observability
    first = observability.metrics_port
    if not (observability.metrics_enabled and first and workers > 1):
        return []
    last = first + workers - 1
    if last > 65535:
        return [
            f"observability.metrics_port: worker i serves metrics on {first} + i, and "
            f"{last} is past 65535; lower metrics_port (or 0 for any free port)"
        ]
    if first <= config.server.port <= last:
        return [
            f"observability.metrics_port: the workers' metrics ports {first}-{last} cover "
            f"server.port {config.server.port}; move one of them (or metrics_port: 0)"
        ]
    return []


@contextlib.contextmanager
def reserve_port(host: str, port: int) -> Iterator[int]:
    """Hold ``host:port`` (0: a free port) for the workers, without listening; yield the port.

    Raises:
        StartupError: the port cannot be bound (another program listens on it).

    Resource handling:
        The socket is closed when the block exits.
    """
    sock = bind_reuse_port(host, port)
    with sock:
        yield int(sock.getsockname()[1])


def tag_worker_logs(index: int) -> None:
    """Give every log record of this process ``worker=<index>`` (a worker calls it at start)."""
    make_record = logging.getLogRecordFactory()

    def tagged(*args: object, **kwargs: object) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        record.worker = index
        return record

    logging.setLogRecordFactory(tagged)


def worker_start_failed(index: int, returncode: int) -> StartupError:
    """The error of a worker whose first run ended at once: the supervisor stops too."""
    return StartupError(
        f"worker {index} could not start ({describe_exit(returncode)}); its error is the "
        "line logged just before, and `caxton start` without --workers reports the same",
        details={"worker": index, "returncode": returncode},
    )


def describe_exit(returncode: int) -> str:
    """``exit code 1`` or ``killed by SIGKILL``."""
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    return f"exit code {returncode}"


@attrs.frozen(kw_only=True)
class RestartPolicy:
    """How long to wait before starting a worker again that exited unasked (no I/O, no clock).

    A worker that ran at least ``stable_after_s`` is started again after ``first_delay_s``;
    each exit sooner than that after its start doubles the delay, up to ``max_delay_s``, so a
    worker that keeps crashing does not spin.
    """

    first_delay_s: float = 0.5
    max_delay_s: float = 30.0
    stable_after_s: float = 10.0

    def after_exit(self, quick_exits: int, ran_s: float) -> tuple[int, float]:
        """The quick exits in a row so far (counting this one) and the delay before the next start.

        Args:
            quick_exits: the count returned for the previous exit (0 at first).
            ran_s: how long the worker ran before this exit.
        """
        quick = 0 if ran_s >= self.stable_after_s else quick_exits + 1
        return quick, min(self.max_delay_s, self.first_delay_s * 2.0**quick)


class Supervisor:
    """Keeps ``count`` worker processes running; drains them when cancelled.

    Args:
        count: how many workers.
        command: the argv of worker ``i``.
        shutdown_timeout_s: ``server.shutdown_timeout``; a worker gets this plus
            ``stop_margin_s`` after SIGTERM before SIGKILL.
        stop_margin_s: the time to close its components after its requests drained.
        policy: when a worker that exited is started again.
    """

    def __init__(
        self,
        *,
        count: int,
        command: Callable[[int], Sequence[str]],
        shutdown_timeout_s: float,
        stop_margin_s: float = STOP_MARGIN_S,
        policy: RestartPolicy | None = None,
    ) -> None:
        self.count = count
        self.command = command
        self.shutdown_timeout_s = shutdown_timeout_s
        self.stop_margin_s = stop_margin_s
        self.policy = policy or RestartPolicy()
        #: Workers started again after an exit, since the supervisor started.
        self.restarts = 0
        #: Whether a worker had to be SIGKILLed while stopping.
        self.killed = False
        self._processes: dict[int, trio.Process] = {}

    def pids(self) -> dict[int, int]:
        """Each running worker's pid, by index."""
        return {i: p.pid for i, p in sorted(self._processes.items()) if p.returncode is None}

    def signal_workers(self, signum: int) -> None:
        """Send ``signum`` to every worker still running."""
        for process in self._processes.values():
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signum)

    async def run(
        self, *, task_status: trio.TaskStatus[dict[int, int]] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start every worker, report their pids, and start again any that exits.

        Cancellation:
            Cancelling is the stop: every worker gets SIGTERM, and the call returns once they
            have all exited (each SIGKILLed after ``shutdown_timeout_s`` plus
            ``stop_margin_s``). The wait is shielded: it ends only when the processes did.
        """
        async with trio.open_nursery() as nursery:
            for index in range(self.count):
                await nursery.start(self._keep_running, index)
            task_status.started(self.pids())

    async def _keep_running(
        self, index: int, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED
    ) -> None:
        quick_exits = 0
        reported = False
        first_run = True
        while True:
            started_at = trio.current_time()
            async with trio.open_nursery() as nursery:
                process: trio.Process = await nursery.start(
                    functools.partial(
                        trio.run_process,
                        list(self.command(index)),
                        check=False,
                        deliver_cancel=self._stop,
                        # Ctrl-C in a terminal signals the supervisor only: it stops the
                        # workers itself, once (a second signal would make them hurry)
                        process_group=0,
                    )
                )
                self._processes[index] = process
                LOGGER.info(
                    "worker %d started, pid %d",
                    index,
                    process.pid,
                    extra={"worker": index, "pid": process.pid},
                )
                if not reported:
                    reported = True
                    task_status.started(process.pid)
                returncode = await process.wait()
            ran_s = trio.current_time() - started_at
            if first_run and returncode > 0 and ran_s < self.policy.stable_after_s:
                raise worker_start_failed(index, returncode)
            first_run = False
            quick_exits, delay = self.policy.after_exit(quick_exits, ran_s)
            self.restarts += 1
            LOGGER.error(
                "worker %d (pid %d) exited unasked (%s); starting it again in %.1fs",
                index,
                process.pid,
                describe_exit(returncode),
                delay,
                extra={"worker": index, "pid": process.pid, "returncode": returncode},
            )
            await trio.sleep(delay)

    async def _stop(self, process: trio.Process) -> None:
        """SIGTERM, then SIGKILL after the drain time (trio.run_process's deliver_cancel)."""
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        await trio.sleep(self.shutdown_timeout_s + self.stop_margin_s)
        LOGGER.warning(
            "worker pid %d did not stop within %.1fs of SIGTERM; killing it",
            process.pid,
            self.shutdown_timeout_s + self.stop_margin_s,
        )
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            process.kill()


def worker_command(args: Sequence[str], port: int, index: int) -> list[str]:
    """``python -m caxton start ARGS --port PORT --worker-index INDEX``."""
    return [
        sys.executable,
        "-m",
        "caxton",
        "start",
        *args,
        "--port",
        str(port),
        "--worker-index",
        str(index),
    ]


async def supervise(
    loaded: LoadedConfig, args: Sequence[str], *, policy: RestartPolicy | None = None
) -> bool:
    """Run ``server.workers`` workers on one port until SIGTERM or SIGINT.

    Args:
        loaded: the operator's configuration.
        args: the ``caxton start`` arguments every worker gets (``--config`` and the
            override flags, without ``--port``).
        policy: restart delays (tests shorten them).

    Returns:
        True when every worker stopped by itself after SIGTERM, False when one was killed.

    Raises:
        StartupError: data_dir is locked, the port cannot be bound, the metrics ports of
            the workers do not fit, or a worker's first run failed at once (the others are
            stopped first).

    Cancellation:
        Cancelling the caller stops the workers as a signal does (SIGTERM, then SIGKILL).
    """
    config = loaded.config
    server = config.server
    problems = worker_problems(config)
    if problems:
        raise StartupError("; ".join(problems))
    async with open_data_dir(config.data_dir):
        with reserve_port(server.host, server.port) as port:
            supervisor = Supervisor(
                count=server.workers,
                command=functools.partial(worker_command, args, port),
                shutdown_timeout_s=float(server.shutdown_timeout),
                policy=policy,
            )
            try:
                async with trio.open_nursery() as root:
                    stop = trio.Event()
                    await root.start(_watch_signals, supervisor, stop)
                    async with trio.open_nursery() as workers:
                        pids = await workers.start(supervisor.run)
                        LOGGER.info(
                            "supervising %d workers on %s (data_dir %s), pids %s",
                            len(pids),
                            bind_address(server.host, port),
                            config.data_dir,
                            ", ".join(str(pid) for pid in pids.values()),
                            extra={"port": port, "pids": list(pids.values())},
                        )
                        await stop.wait()
                        workers.cancel_scope.cancel()
                    root.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                failed, _ = group.split(StartupError)
                if failed is None:
                    raise
                raise _first_leaf(failed) from None
    LOGGER.info(
        "all workers stopped%s", "" if not supervisor.killed else " (some had to be killed)"
    )
    return not supervisor.killed


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


async def _watch_signals(
    supervisor: Supervisor,
    stop: trio.Event,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
        task_status.started()
        async for signum in signals:
            name = signal.Signals(signum).name
            if signum == signal.SIGHUP:
                LOGGER.info("SIGHUP: passed on to the workers")
                supervisor.signal_workers(signal.SIGHUP)
            elif stop.is_set():
                LOGGER.warning("%s again: the workers stop now without waiting for requests", name)
                supervisor.signal_workers(signal.SIGTERM)
            else:
                LOGGER.info(
                    "%s: stopping the workers; in-flight requests have %ss to finish",
                    name,
                    supervisor.shutdown_timeout_s,
                )
                stop.set()
