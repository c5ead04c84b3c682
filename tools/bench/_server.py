"""Shared pieces of the agent benchmarks: a real `caxton start` on loopback, figures, load.

* :class:`BenchServer` copies agents from ``agents/`` into a temporary agents_dir, starts
  ``caxton start`` on 127.0.0.1 with port 0 (JSON logs written to a file in the temporary
  directory, so a chatty log never blocks the server on a full pipe), waits for ``/ready``,
  and at the end stops it with SIGTERM, checks the exit status and removes the directory.
* :func:`percentile`, :func:`header` and :func:`cpu_seconds` format and measure.
* A keep-alive HTTP/1.1 load generator over raw trio sockets, run in its own process so that
  its CPU use is not mixed with the process that times reloads::

      .venv/bin/python tools/bench/_server.py load --url URL --path /health --connections 32
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_AGENTS = REPO / "agents"
CAXTON = shutil.which("caxton", path=str(Path(sys.executable).parent)) or "caxton"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 60.0


class BenchServer:
    """A ``caxton start`` subprocess with its own data_dir and agents_dir.

    Args:
        agents: names of example agents to copy (``<name>.toml`` and the module it names).
        log_level: the server's ``logging.level``.
        extra_yaml: more top-level YAML appended to the generated config.
        observability_yaml: more keys of the ``observability`` section (indented lines).
        args: more arguments of ``caxton start`` (``--workers 2``).
    """

    def __init__(
        self,
        agents: tuple[str, ...] = ("echo",),
        *,
        log_level: str = "info",
        extra_yaml: str = "",
        observability_yaml: str = "",
        args: tuple[str, ...] = (),
    ) -> None:
        self.agents = agents
        self.log_level = log_level
        self.extra_yaml = extra_yaml
        self.observability_yaml = observability_yaml
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="caxton-bench-"))
        self.agents_dir = self.workdir / "agents"
        self.log_path = self.workdir / "server.log"
        self.config_path = self.workdir / "caxton.yaml"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""
        self.exit_code: int | None = None

    @property
    def ws_url(self) -> str:
        return "ws" + self.url.removeprefix("http")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> BenchServer:
        try:
            self.start()
        except BaseException:
            self.stop()
            shutil.rmtree(self.workdir, ignore_errors=True)
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def start(self) -> None:
        self.agents_dir.mkdir()
        for name in self.agents:
            manifest = EXAMPLE_AGENTS / f"{name}.toml"
            shutil.copy(manifest, self.agents_dir)
            for suffix in (".wat", ".wasm"):
                module = EXAMPLE_AGENTS / f"{name}{suffix}"
                if module.exists():
                    shutil.copy(module, self.agents_dir)
        # The "ready on" line that names the bound port is logged at info; below that level a
        # free port is picked here instead (a small race with other processes, loopback only).
        port = 0 if self.log_level.lower() in ("debug", "info") else free_port()
        config = self.config_path
        config.write_text(
            f"server:\n  host: 127.0.0.1\n  port: {port}\n  data_dir: {self.workdir / 'data'}\n"
            f"  agents_dir: {self.agents_dir}\n"
            "observability:\n  metrics_port: 0\n"
            + self.observability_yaml
            + f"logging:\n  format: json\n  level: {self.log_level}\n"
            + self.extra_yaml
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [CAXTON, "start", "--config", str(config), *self.args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
            )
        if port:
            self.url = f"http://127.0.0.1:{port}"
        else:
            self.url = self._wait_ready_line()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(
                    f"server exited ({self.process.returncode}); log:\n{self.log_tail()}"
                )
            try:
                if httpx.get(f"{self.url}/ready", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.01)
        raise SystemExit(f"server never answered /ready 200; log:\n{self.log_tail()}")

    def _wait_ready_line(self) -> str:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        offset = 0
        while time.monotonic() < deadline:
            data = self.log_path.read_bytes()
            end = data.rfind(b"\n") + 1
            for line in data[offset:end].splitlines():
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if "ready on" in record.get("message", ""):
                    return str(record["api"][0])
            offset = end
            if self.process.poll() is not None:
                raise SystemExit(
                    f"server exited ({self.process.returncode}) before it was ready; log:\n"
                    f"{self.log_tail()}"
                )
            time.sleep(0.02)
        raise SystemExit(
            f"no 'ready on' line within {READY_TIMEOUT_S:.0f}s; log:\n{self.log_tail()}"
        )

    def stop(self) -> int | None:
        """SIGTERM, wait, and remember the exit status (``None`` if it never started)."""
        if self.process is None or self.exit_code is not None:
            return self.exit_code
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.exit_code = self.process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            self.exit_code = -9
        return self.exit_code

    def set_log_level(self, level: str) -> None:
        """Make ``level`` the running server's ``logging.level``: written into its config file,
        then SIGHUP (the server re-reads the file and sets the level). Returns once a request
        shows the new level: its line written at ``info`` or ``debug``, none after a pause
        otherwise (the request log writes its lines within 50 ms)."""
        assert self.process is not None
        text = self.config_path.read_text()
        old, new = (f"logging:\n  format: json\n  level: {x}\n" for x in (self.log_level, level))
        if old not in text:
            raise SystemExit(f"no logging section {old!r} in {self.config_path}")
        self.config_path.write_text(text.replace(old, new))
        self.log_level = level
        self.process.send_signal(signal.SIGHUP)
        logged = level.lower() in ("debug", "info")
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            marker = os.urandom(16).hex()
            httpx.get(f"{self.url}/health", headers={"X-Request-ID": marker}, timeout=10)
            time.sleep(0.2)
            if (marker.encode() in self.log_path.read_bytes()) == logged:
                return
        raise SystemExit(f"the server's log level never became {level}; log:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                continue
        return records


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def report_exit(server: BenchServer) -> bool:
    """Stop ``server``, print how it exited; ``True`` when it exited 0."""
    code = server.stop()
    print(f"server stopped with SIGTERM: exit {code}" + ("" if code == 0 else "  <-- not 0"))
    if code != 0:
        print(server.log_tail())
    return code == 0


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (``nan`` for no values)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def header(title: str, measures: str) -> None:
    from caxton import __version__

    print(f"== {title} ==")
    print(
        f"machine: {os.cpu_count()} cores ({cpu_model()}), {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}, Caxton {__version__}"
    )
    load1 = os.getloadavg()[0]
    busy = "  <-- busy: other processes compete for the cores" if load1 > 0.5 else ""
    print(f"load average (1 min) before the run: {load1:.2f}{busy}")
    print(f"measures: {measures}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_pids(pid: int) -> list[int]:
    """``pid`` and its descendants (from /proc's children lists)."""
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{current}/task").iterdir():
                with contextlib.suppress(OSError):
                    queue += [int(p) for p in (task / "children").read_text().split()]
    return found


def tree_cpu(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` and their descendants."""
    total = 0.0
    for pid in pids:
        for each in tree_pids(pid):
            with contextlib.suppress(OSError):
                total += cpu_seconds(each)
    return total


def listening_sockets(port: int) -> int:
    """How many sockets listen on TCP ``port`` of 127.0.0.1 or any address (from
    /proc/net/tcp): ``caxton start --workers N`` has N once every worker is serving (the
    supervisor's own socket on the port only reserves it)."""
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        address, state = fields[1], fields[3]
        if state == "0A" and int(address.rsplit(":", 1)[1], 16) == port:
            count += 1
    return count


def wait_listening(server: BenchServer, count: int) -> None:
    """Wait until ``count`` processes listen on ``server``'s port (every worker serving)."""
    port = int(server.url.rsplit(":", 1)[1])
    deadline = time.monotonic() + READY_TIMEOUT_S
    while listening_sockets(port) < count:
        if time.monotonic() > deadline:
            raise SystemExit(f"{count} workers never listened; log:\n{server.log_tail()}")
        time.sleep(0.05)


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have spent busy (from /proc/stat)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# -- load generator (runs in its own process) ---------------------------------------------------


def start_load(
    url: str,
    path: str,
    *,
    connections: int,
    duration: float,
    warmup: float = 0.0,
    body: str | None = None,
) -> subprocess.Popen[str]:
    """Start the load generator; it prints ``started`` once connected, then a JSON summary."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "load",
        "--url",
        url,
        "--path",
        path,
        "--connections",
        str(connections),
        "--duration",
        str(duration),
        "--warmup",
        str(warmup),
    ]
    if body is not None:
        command += ["--body", body]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)
    assert process.stdout is not None
    line = process.stdout.readline()
    if line.strip() != "started":
        process.kill()
        raise SystemExit(f"load generator failed to start: {line!r}")
    return process


def finish_load(process: subprocess.Popen[str], *, stop: bool = False) -> dict[str, Any]:
    """Wait for (or, with ``stop``, SIGTERM) the load generator and return its summary."""
    if stop and process.poll() is None:
        process.send_signal(signal.SIGTERM)
    out, _ = process.communicate(timeout=60)
    if process.returncode != 0:
        raise SystemExit(f"load generator exited {process.returncode}")
    summary: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return summary


class _ProtocolError(Exception):
    pass


async def _read_response(stream: Any, buffer: bytearray) -> tuple[int, bytes, bool]:
    """One HTTP/1.1 response: (status, body, server wants the connection closed)."""
    while (end := buffer.find(b"\r\n\r\n")) < 0:
        chunk = await stream.receive_some(65536)
        if not chunk:
            raise _ProtocolError("connection closed by the server")
        buffer += chunk
    head = bytes(buffer[:end]).decode("latin-1").split("\r\n")
    del buffer[: end + 4]
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise _ProtocolError(f"bad status line {head[0][:60]!r}")
    status = int(parts[1])
    headers = {}
    for line in head[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    close = headers.get("connection", "").lower() == "close"
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(buffer) < length:
            chunk = await stream.receive_some(65536)
            if not chunk:
                raise _ProtocolError("connection closed inside a response body")
            buffer += chunk
        body = bytes(buffer[:length])
        del buffer[:length]
        return status, body, close
    if headers.get("transfer-encoding", "").lower() == "chunked":
        chunked = bytearray()
        while True:
            while (eol := buffer.find(b"\r\n")) < 0:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise _ProtocolError("connection closed inside a chunked body")
                buffer += chunk
            size = int(bytes(buffer[:eol]).split(b";")[0], 16)
            while len(buffer) < eol + 2 + size + 2:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise _ProtocolError("connection closed inside a chunk")
                buffer += chunk
            chunked += buffer[eol + 2 : eol + 2 + size]
            del buffer[: eol + 2 + size + 2]
            if size == 0:
                return status, bytes(chunked), close
    raise _ProtocolError("response without content-length or chunked encoding")


def _describe(status: int, body: bytes) -> str:
    try:
        error = json.loads(body)["error"]
        return f"HTTP {status} {error.get('code')}: {str(error.get('message'))[:120]}"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {status}: {body[:120]!r}"


async def _load(args: argparse.Namespace) -> dict[str, Any]:
    import trio

    target = httpx.URL(args.url)
    host, port = target.host, target.port or 80
    payload = (args.body or "").encode()
    method = "POST" if args.body is not None else "GET"
    request = (
        f"{method} {args.path} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        + (
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
            if args.body is not None
            else ""
        )
        + "\r\n"
    ).encode() + payload
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    window = {"start": 0.0, "end": 0.0}
    recording = False

    async def connection(ready: trio.Event, ready_count: list[int]) -> None:
        stream = None
        buffer = bytearray()
        signalled = False
        while True:
            try:
                if stream is None:
                    stream = await trio.open_tcp_stream(host, port)
                    buffer.clear()
                    if not signalled:
                        signalled = True
                        ready_count[0] -= 1
                        if ready_count[0] == 0:
                            ready.set()
                started = time.perf_counter()
                with trio.fail_after(args.timeout):
                    await stream.send_all(request)
                    status, body, close = await _read_response(stream, buffer)
                elapsed = time.perf_counter() - started
                if recording:
                    latencies.append(elapsed)
                    statuses[status] += 1
                    if not 200 <= status < 300:
                        errors[_describe(status, body)] += 1
                if close:
                    await stream.aclose()
                    stream = None
            except (OSError, trio.BrokenResourceError, trio.TooSlowError, _ProtocolError) as exc:
                if recording:
                    kind = "timeout" if isinstance(exc, trio.TooSlowError) else type(exc).__name__
                    errors[f"{kind}: {exc}"[:160]] += 1
                if stream is not None:
                    with trio.CancelScope(shield=True):
                        await trio.aclose_forcefully(stream)
                stream = None
                await trio.sleep(0.01)

    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            ready = trio.Event()
            count = [args.connections]
            for _ in range(args.connections):
                nursery.start_soon(connection, ready, count)
            with trio.fail_after(30):
                await ready.wait()
            print("started", flush=True)
            stopped = trio.Event()

            async def on_sigterm() -> None:
                async for _ in signals:
                    stopped.set()
                    return

            nursery.start_soon(on_sigterm)
            with trio.move_on_after(args.warmup):
                await stopped.wait()
            recording = True
            cpu_start = time.process_time()
            window["start"] = time.perf_counter()
            with trio.move_on_after(args.duration):
                await stopped.wait()
            window["end"] = time.perf_counter()
            recording = False
            cpu = time.process_time() - cpu_start
            nursery.cancel_scope.cancel()
    elapsed = window["end"] - window["start"]
    failed = sum(errors.values())
    return {
        "requests": len(latencies) + sum(n for e, n in errors.items() if not e.startswith("HTTP")),
        "responses": len(latencies),
        "failed": failed,
        "errors": dict(errors.most_common()),
        "statuses": {str(k): v for k, v in statuses.items()},
        "seconds": elapsed,
        "rps": len(latencies) / elapsed if elapsed else 0.0,
        "p50_ms": percentile(latencies, 50) * 1000,
        "p99_ms": percentile(latencies, 99) * 1000,
        "max_ms": max(latencies, default=math.nan) * 1000,
        "client_cpu_s": cpu,
    }


def _main() -> None:
    parser = argparse.ArgumentParser(description="Keep-alive HTTP/1.1 load generator (trio).")
    sub = parser.add_subparsers(dest="command", required=True)
    load = sub.add_parser("load", help="hammer one URL with N keep-alive connections")
    load.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8080")
    load.add_argument("--path", required=True)
    load.add_argument("--body", default=None, help="JSON body; POST when given, else GET")
    load.add_argument("--connections", type=int, default=32)
    load.add_argument("--duration", type=float, default=10.0, help="seconds measured")
    load.add_argument("--warmup", type=float, default=0.0, help="seconds before measuring")
    load.add_argument("--timeout", type=float, default=10.0, help="per-request timeout")
    args = parser.parse_args()
    import trio

    print(json.dumps(trio.run(_load, args)), flush=True)


if __name__ == "__main__":
    _main()
