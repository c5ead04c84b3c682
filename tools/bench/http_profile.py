"""Where Caxton's server CPU goes per request: py-spy samples of a loaded ``caxton start``.

Starts ``caxton start`` with the echo agent (as ``wasm_http.py`` does), sends ``wrk`` load
(32 connections) to ``GET /health`` and then to ``POST /api/v1/agents/echo/messages``, and
meanwhile samples the server with ``py-spy record`` (``.venv/bin/pip install py-spy``; needs
ptrace rights on the server process). Each sample's stack is put in the first piece below
whose test matches, and a piece's share of the samples times the server CPU per request
(from /proc) gives its microseconds per request. Sampling slows the server down; the
shares, not the request rate, are the result.

    .venv/bin/python tools/bench/http_profile.py [--duration 8] [--rate 250]
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BenchServer, cpu_seconds, header

if TYPE_CHECKING:
    from collections.abc import Callable

ECHO_BODY = '{"content": "hello from the benchmark"}'
PY_SPY = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def _has(*names: str) -> Callable[[list[str]], bool]:
    return lambda stack: all(any(name in frame for frame in stack) for name in names)


def _leaf_in(name: str) -> Callable[[list[str]], bool]:
    return lambda stack: name in stack[-1]


#: (piece, test on the stack's frames), first match wins.
PIECES: tuple[tuple[str, Callable[[list[str]], bool]], ...] = (
    ("security hooks (Host/Origin/auth/rate)", _has("caxton/http/guard.py")),
    ("security hooks (Host/Origin/auth/rate)", _has("caxton/security/")),
    ("request log line (app._finish_request)", _has("_finish_request", "logging/")),
    ("request log line (app._finish_request)", _has("_finish_request", "request_log.py")),
    ("request log writer (its own task, batched)", _has("caxton/http/request_log.py")),
    ("request metrics (histogram)", _has("_finish_request", "prometheus_client")),
    ("request id, timing, log/metric glue", _has("_finish_request")),
    ("request id + start (app._start_request)", _has("_start_request")),
    ("safe-mode check", _has("refuse_in_safe_mode")),
    ("JSON body: Content-Type, parse, bounds", _has("caxton/http/params.py")),
    ("agent log line (AgentLogs.write)", _has("AgentLogs.write")),
    ("message ids", _has("new_id")),
    ("conversation store write (thread)", _has("Store._run_write")),
    ("WASM guest call (thread)", _has("_run_batch")),
    ("WASM queue and worker trips (trio side)", _has("caxton/wasm/")),
    ("agent runtime: message JSON, reply, metrics", _has("AgentTable.send")),
    ("agent runtime: message JSON, reply, metrics", _has("Registry.send")),
    ("router: conversation record, reply, events", _has("Router.deliver")),
    ("router: conversation record, reply, events", _has("Router.send_to")),
    ("agent route: lookup, message, answer", _has("caxton/http/agents.py")),
    ("ASGI wrapper own code (asgi.py)", _leaf_in("caxton/http/asgi.py")),
    ("JSON answer encoding (Quart)", _has("json/provider.py")),
    ("hypercorn + Quart + trio (the rest)", lambda stack: True),
)


def _counted(stack: list[str]) -> bool:
    """The event loop, and worker threads that run Caxton code (not an idle watcher)."""
    if "Thread._bootstrap" not in stack[0]:
        return True
    return any("caxton/" in frame for frame in stack) and "watch" not in ";".join(stack)


def profile(server: BenchServer, path: str, body: str | None, args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="caxton-profile-") as tmp:
        command = ["wrk", "-t1", "-c32", f"-d{args.duration + 2:g}s"]
        if body is not None:
            script = Path(tmp) / "post.lua"
            script.write_text(
                f'wrk.method = "POST"\nwrk.body = {body!r}\n'
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
            command += ["-s", str(script)]
        samples = Path(tmp) / "samples.txt"
        load = subprocess.Popen(
            [*command, f"{server.url}{path}"], stdout=subprocess.PIPE, text=True
        )
        time.sleep(1)
        cpu = cpu_seconds(server.pid)
        spy = subprocess.run(
            [
                str(PY_SPY),
                "record",
                "--format",
                "raw",
                "-r",
                str(args.rate),
                "-d",
                f"{args.duration:g}",
                "-o",
                str(samples),
                "-p",
                str(server.pid),
            ],
            capture_output=True,
            text=True,
        )
        cpu = cpu_seconds(server.pid) - cpu
        out, _ = load.communicate()
        if spy.returncode != 0 or not samples.exists():
            raise SystemExit(f"py-spy failed: {spy.stderr.strip()[-400:]}")
        lines = samples.read_text().splitlines()
    rate = next(
        (float(x.split()[1]) for x in out.splitlines() if x.startswith("Requests/sec:")), 0.0
    )
    per_request_us = cpu / (rate * args.duration) * 1e6 if rate else float("nan")
    pieces: collections.Counter[str] = collections.Counter()
    total = 0
    for row in lines:
        stack_text, _, count = row.rpartition(" ")
        stack = stack_text.split(";")
        if not _counted(stack):
            continue
        total += int(count)
        pieces[next(name for name, test in PIECES if test(stack))] += int(count)
    method = "POST" if body is not None else "GET"
    print(
        f"-- {method} {path}: {rate:.0f} req/s while sampled, server CPU "
        f"~{per_request_us:.0f} us/request, {total} samples"
    )
    for name, _ in PIECES:
        if name in pieces:
            share = pieces.pop(name) / total
            print(f"  {name:<46} {share * 100:5.1f}%  ~{share * per_request_us:5.0f} us")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=8.0, help="seconds sampled per route")
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--log-level", default="info", help="server logging.level (info)")
    args = parser.parse_args()
    if PY_SPY is None or not shutil.which("wrk"):
        raise SystemExit(
            "needs py-spy (.venv/bin/pip install py-spy) and wrk (apt-get install wrk)"
        )
    header(
        "server CPU per request, by piece (py-spy samples)",
        f"wrk -c32, {args.duration:g} s sampled at {args.rate}/s per route; "
        f"server logging.level {args.log_level}",
    )
    with BenchServer(("echo",), log_level=args.log_level) as server:
        profile(server, "/health", None, args)
        profile(server, "/api/v1/agents/echo/messages", ECHO_BODY, args)


if __name__ == "__main__":
    main()
