"""Throughput of Caxton over HTTP against a bare QuartTrio app measured in the same run.

Two servers on loopback, each in its own process: ``caxton start`` with the example echo agent
(agents/echo.toml + echo.wat), and the floor, ``bare_app.py``: a bare QuartTrio app on hypercorn
with Caxton's hypercorn settings and nothing else. The same load (32 keep-alive connections,
default 10 s each after a 1 s warm-up) is sent in turn to

* the bare ``GET /bare`` (a tiny JSON answer), then Caxton's ``GET /health``;
* the bare JSON ``POST /echo``, then ``POST /api/v1/agents/echo/messages`` (request id, log
  line, metrics, security edge checks, conversation record and a WASM call).

Goals (issue #14), as ratios of the same run: ``/health`` >= 0.85 of bare GET; WASM echo >= 0.7
of bare POST echo. ``--rounds N`` repeats the four measures and reports the median ratios.

Two figures move less than requests/s when other processes share the cores, and are printed
as ratios too: the server's CPU per request (every thread), and the event loop's (the main
thread's) CPU per request. The event loop holds the GIL for most of a request, so its CPU per
request is what bounds requests/s; the other threads (the conversation store's DuckDB writes,
the WASM worker threads) mostly run without the GIL, on the other core.

The load generator runs in its own process: ``wrk`` when it is on PATH (``apt-get install
wrk``), otherwise the keep-alive trio client of ``_server.py``; ``--client`` picks one. Both
share the machine's cores with the servers, which the output shows as CPU seconds.

    .venv/bin/python tools/bench/wasm_http.py [--duration 10] [--connections 32] [--rounds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import (
    BenchServer,
    children_cpu_seconds,
    cpu_seconds,
    finish_load,
    header,
    machine_busy_seconds,
    report_exit,
    start_load,
)
from bare_app import BareServer

ECHO_BODY = json.dumps({"content": "hello from the benchmark"})
#: issue #14: Caxton's GET /health against the bare GET, the WASM echo against the bare POST
GOAL_HEALTH_RATIO = 0.85
GOAL_ECHO_RATIO = 0.7

WRK_SCRIPT = """
{setup}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'JSON {{"requests": %d, "seconds": %f, "p50_ms": %f, "p99_ms": %f, "max_ms": %f, '
    .. '"socket_errors": %d, "non2xx": %d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3,
    latency:percentile(99) / 1e3, latency.max / 1e3,
    e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def run_wrk(url: str, path: str, body: str | None, args: argparse.Namespace) -> dict[str, Any]:
    setup = ""
    if body is not None:
        setup = (
            'wrk.method = "POST"\n'
            f"wrk.body = {json.dumps(body)}\n"
            'wrk.headers["Content-Type"] = "application/json"\n'
        )
    return run_wrk_script(url, path, WRK_SCRIPT.format(setup=setup), args)


def run_wrk_script(
    url: str, path: str, lua: str, args: argparse.Namespace, *, warm_up: bool = True
) -> dict[str, Any]:
    """``wrk`` with the Lua script ``lua`` on ``url + path``: a 1 s warm-up (not measured;
    ``warm_up`` False: none), then ``args.duration`` seconds with ``args.connections``
    connections; the script's JSON report plus ``rps`` and ``failed``."""
    with tempfile.TemporaryDirectory(prefix="caxton-bench-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(lua)
        base = ["wrk", "-t1", f"-c{args.connections}", "-s", str(script), f"{url}{path}"]
        if warm_up:
            subprocess.run(
                [*base[:3], "-d1s", *base[3:]], check=True, capture_output=True, timeout=60
            )
        out = subprocess.run(
            [*base[:3], f"-d{args.duration:g}s", "--timeout", "10s", *base[3:]],
            check=True,
            capture_output=True,
            text=True,
            timeout=args.duration + 60,
        ).stdout
    line = next(x for x in out.splitlines() if x.startswith("JSON "))
    result: dict[str, Any] = json.loads(line[5:])
    result["failed"] = result["socket_errors"] + result["non2xx"]
    result["rps"] = result["requests"] / result["seconds"]
    return result


def run_python(url: str, path: str, body: str | None, args: argparse.Namespace) -> dict[str, Any]:
    process = start_load(
        url, path, connections=args.connections, duration=args.duration, warmup=1.0, body=body
    )
    return finish_load(process)


def loop_cpu_seconds(pid: int) -> float:
    """User + system CPU time of the main thread of process ``pid`` (its event loop)."""
    fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Client = Callable[[str, str, "str | None", argparse.Namespace], dict[str, Any]]


def measure(
    server: BenchServer | BareServer,
    path: str,
    body: str | None,
    args: argparse.Namespace,
    client: Client,
) -> dict[str, Any]:
    server_cpu = cpu_seconds(server.pid)
    loop_cpu = loop_cpu_seconds(server.pid)
    client_cpu = children_cpu_seconds()
    busy = machine_busy_seconds()
    wall = time.perf_counter()
    result: dict[str, Any] = client(server.url, path, body, args)
    wall = time.perf_counter() - wall
    result["server_cpu_s"] = cpu_seconds(server.pid) - server_cpu
    result["loop_cpu_s"] = loop_cpu_seconds(server.pid) - loop_cpu
    result["client_cpu_s"] = children_cpu_seconds() - client_cpu
    result["other_cpu_s"] = max(
        0.0, machine_busy_seconds() - busy - result["server_cpu_s"] - result["client_cpu_s"]
    )
    result["wall_s"] = wall
    return result


def line(label: str, r: dict[str, Any]) -> str:
    server_share = r["server_cpu_s"] / r["wall_s"]
    client_share = r["client_cpu_s"] / r["wall_s"]
    per_request_us = server_share / r["rps"] * 1e6 if r["rps"] else float("nan")
    loop_us = r["loop_cpu_s"] / r["wall_s"] / r["rps"] * 1e6 if r["rps"] else float("nan")
    return (
        f"{label:<27} {r['rps']:>6.0f} req/s  p50 {r['p50_ms']:6.1f} ms  "
        f"p99 {r['p99_ms']:6.1f} ms  failed {r['failed']}  "
        f"server CPU {server_share * 100:3.0f}% of a core (~{per_request_us:.0f} us/req, "
        f"event loop ~{loop_us:.0f}), "
        f"client CPU {client_share * 100:3.0f}%, "
        f"other processes {r['other_cpu_s'] / r['wall_s'] * 100:3.0f}%"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds measured per endpoint (10)"
    )
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (32)")
    parser.add_argument(
        "--client",
        choices=["auto", "wrk", "python"],
        default="auto",
        help="load generator: wrk if installed (auto), or the trio keep-alive client",
    )
    parser.add_argument("--log-level", default="info", help="server logging.level (default info)")
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the four measures; median ratios (1)"
    )
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    if args.client == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install wrk), use --client python")
    client = run_wrk if use_wrk else run_python
    client_name = (
        "wrk -t1 (separate process)"
        if use_wrk
        else "trio keep-alive client in a separate Python process (_server.py load)"
    )

    header(
        "Caxton over HTTP vs a bare QuartTrio app on hypercorn",
        f"{args.connections} keep-alive connections, {args.duration:g} s per endpoint after "
        f"a 1 s warm-up, {args.rounds} round(s), load generator: {client_name}; "
        f"server logging.level {args.log_level}",
    )
    ok = True
    rounds: list[dict[str, dict[str, Any]]] = []
    with BareServer() as bare, BenchServer(("echo",), log_level=args.log_level) as server:
        reply = httpx.post(
            f"{server.url}/api/v1/agents/echo/messages",
            content=ECHO_BODY,
            headers={"Content-Type": "application/json"},
        )
        reply.raise_for_status()
        httpx.post(
            f"{bare.url}/echo", content=ECHO_BODY, headers={"Content-Type": "application/json"}
        ).raise_for_status()
        for _ in range(args.rounds):
            rounds.append(
                {
                    "bare GET /bare": measure(bare, "/bare", None, args, client),
                    "GET /health": measure(server, "/health", None, args, client),
                    "bare POST /echo": measure(bare, "/echo", ECHO_BODY, args, client),
                    "POST echo/messages (WASM)": measure(
                        server, "/api/v1/agents/echo/messages", ECHO_BODY, args, client
                    ),
                }
            )
        ok = report_exit(server)
    for number, figures in enumerate(rounds, 1):
        if args.rounds > 1:
            print(f"-- round {number}")
        for label, r in figures.items():
            print(line(label, r))
            if r.get("errors"):
                print(f"  errors: {r['errors']}")
    kind = "median ratio" if args.rounds > 1 else "ratio"
    pairs = (
        ("/health vs bare GET", "GET /health", "bare GET /bare", GOAL_HEALTH_RATIO),
        (
            "WASM echo vs bare POST echo",
            "POST echo/messages (WASM)",
            "bare POST /echo",
            GOAL_ECHO_RATIO,
        ),
    )
    for label, ours, floor, goal in pairs:
        value = statistics.median(ratio(r[ours], r[floor]) for r in rounds)
        cpu = statistics.median(cpu_ratio(r[ours], r[floor]) for r in rounds)
        loop = statistics.median(cpu_ratio(r[ours], r[floor], "loop_cpu_s") for r in rounds)
        print(
            f"{verdict(f'{label}: requests/s {kind}', value, goal)}; "
            f"CPU per request, bare/Caxton (less moved by other processes): server {cpu:.2f}, "
            f"event loop {loop:.2f}"
        )
    print(f"machine: {os.cpu_count()} cores shared by the servers and the load generator")
    failed = any(r["failed"] for figures in rounds for r in figures.values())
    if not ok or failed:
        raise SystemExit(1)


def ratio(caxton: dict[str, Any], bare: dict[str, Any]) -> float:
    return float(caxton["rps"] / bare["rps"]) if bare["rps"] else 0.0


def cpu_ratio(caxton: dict[str, Any], bare: dict[str, Any], key: str = "server_cpu_s") -> float:
    """CPU per request (``key``: the server's, or its event loop's) of the bare app over
    Caxton's (1.0: Caxton costs no more)."""
    ours = caxton[key] / caxton["rps"] / caxton["wall_s"] if caxton["rps"] else 0.0
    floor = bare[key] / bare["rps"] / bare["wall_s"] if bare["rps"] else 0.0
    return float(floor / ours) if ours else 0.0


def verdict(label: str, value: float, goal: float) -> str:
    return f"{label} {value:.2f} (goal >= {goal:g}: {'met' if value >= goal else 'NOT met'})"


if __name__ == "__main__":
    main()
