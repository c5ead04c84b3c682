"""Throughput and latency of the echo WASM agent over HTTP, against the bare /health endpoint.

One `caxton start` on loopback with the example echo agent (agents/echo.toml + echo.wat).
The same load (32 keep-alive connections, default 10 s each after a 1 s warm-up) is sent first
to ``GET /health`` (the floor: routing, middleware and HTTP only), then to
``POST /api/v1/agents/echo/messages`` (the same plus a WASM call that streams two chunks).
Goals: echo >= 1,000 req/s, echo/health ratio >= 0.6.

The load generator runs in its own process: ``wrk`` when it is on PATH (``apt-get install
wrk``), otherwise the keep-alive trio client of ``_server.py``; ``--client`` picks one. Both
share the machine's cores with the server, which the output shows as CPU seconds.

    .venv/bin/python tools/bench/wasm_http.py [--duration 10] [--connections 32] [--client auto]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
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

ECHO_BODY = json.dumps({"content": "hello from the benchmark"})
GOAL_RPS = 1000.0
GOAL_RATIO = 0.6

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
    with tempfile.TemporaryDirectory(prefix="caxton-bench-wrk-") as tmp:
        script = Path(tmp) / "bench.lua"
        script.write_text(WRK_SCRIPT.format(setup=setup))
        base = ["wrk", "-t1", f"-c{args.connections}", "-s", str(script), f"{url}{path}"]
        # warm-up (not measured), then the measured run
        subprocess.run([*base[:3], "-d1s", *base[3:]], check=True, capture_output=True, timeout=60)
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


def measure(server: BenchServer, path: str, body: str | None, args, client) -> dict[str, Any]:
    server_cpu = cpu_seconds(server.pid)
    client_cpu = children_cpu_seconds()
    busy = machine_busy_seconds()
    wall = time.perf_counter()
    result = client(server.url, path, body, args)
    wall = time.perf_counter() - wall
    result["server_cpu_s"] = cpu_seconds(server.pid) - server_cpu
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
    return (
        f"{label:<27} {r['rps']:>6.0f} req/s  p50 {r['p50_ms']:6.1f} ms  "
        f"p99 {r['p99_ms']:6.1f} ms  failed {r['failed']}  "
        f"server CPU {server_share * 100:3.0f}% of a core (~{per_request_us:.0f} us/req), "
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
        "WASM echo over HTTP vs bare GET /health",
        f"{args.connections} keep-alive connections, {args.duration:g} s per endpoint after "
        f"a 1 s warm-up, load generator: {client_name}; server logging.level {args.log_level}",
    )
    ok = True
    with BenchServer(("echo",), log_level=args.log_level) as server:
        reply = httpx.post(
            f"{server.url}/api/v1/agents/echo/messages",
            content=ECHO_BODY,
            headers={"Content-Type": "application/json"},
        )
        reply.raise_for_status()
        health = measure(server, "/health", None, args, client)
        echo = measure(server, "/api/v1/agents/echo/messages", ECHO_BODY, args, client)
        ok = report_exit(server)
    print(line("GET /health (baseline)", health))
    print(line("POST echo/messages (WASM)", echo))
    ratio = echo["rps"] / health["rps"] if health["rps"] else 0.0
    print(
        f"echo: {echo['rps']:.0f} req/s (goal >= {GOAL_RPS:.0f}: "
        f"{'met' if echo['rps'] >= GOAL_RPS else 'NOT met'})"
    )
    print(
        f"ratio echo/health: {ratio:.2f} (goal >= {GOAL_RATIO}: "
        f"{'met' if ratio >= GOAL_RATIO else 'NOT met'})"
    )
    for label, r in (("health", health), ("echo", echo)):
        if r.get("errors"):
            print(f"{label} errors: {r['errors']}")
    print(f"machine: {os.cpu_count()} cores shared by server and load generator")
    if not ok:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
