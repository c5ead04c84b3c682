"""What tracing costs: the WASM echo path with tracing off and on, in the same run (issue #18).

Two ``caxton start`` servers with the example echo agent, one with
``observability.tracing_enabled: false`` (the default) and one with tracing on, exporting its
spans over OTLP/HTTP to a small collector on loopback (a separate process that answers 200 to
every batch), so the measure includes the spans (server, ``invoke_agent echo``, ``wasm echo``),
the batch processor and the export. The same load (keep-alive connections, a 1 s warm-up,
then ``--duration`` seconds) goes to ``POST /api/v1/agents/echo/messages`` of each in turn,
``--rounds`` times, alternating.

Goal: tracing on keeps at least 85% of the requests/s of tracing off (costs less than 15%).

    .venv/bin/python tools/bench/tracing.py [--duration 5] [--connections 32] [--rounds 1]
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BenchServer, header, report_exit
from wasm_http import ECHO_BODY, line, measure, run_python, run_wrk

#: issue #18: tracing on costs less than 15% of the echo throughput
GOAL_RATIO = 0.85

COLLECTOR = """
import http.server, sys

class Collector(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length") or 0))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Collector).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_collector() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-c", COLLECTOR, str(port)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"http://127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise SystemExit("the loopback OTLP collector did not start")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per measure (5)")
    parser.add_argument("--connections", type=int, default=32, help="keep-alive connections (32)")
    parser.add_argument("--rounds", type=int, default=1, help="off/on pairs; median ratio (1)")
    parser.add_argument(
        "--client", choices=["auto", "wrk", "python"], default="auto", help="load generator"
    )
    args = parser.parse_args()
    use_wrk = args.client == "wrk" or (args.client == "auto" and shutil.which("wrk"))
    client = run_wrk if use_wrk else run_python
    header(
        "Tracing off vs on: POST /api/v1/agents/echo/messages (WASM echo)",
        f"{args.connections} keep-alive connections, {args.duration:g} s per measure after a "
        f"1 s warm-up, {args.rounds} round(s), load generator: "
        f"{'wrk' if use_wrk else 'trio keep-alive client (separate process)'}; spans exported "
        "over OTLP/HTTP to a loopback collector",
    )
    collector, endpoint = start_collector()
    rounds: list[tuple[dict[str, object], dict[str, object]]] = []
    try:
        traced_yaml = f"  tracing_enabled: true\n  otlp_endpoint: {endpoint}\n"
        with (
            BenchServer(("echo",), log_level="warning") as off,
            BenchServer(("echo",), log_level="warning", observability_yaml=traced_yaml) as on,
        ):
            for server in (off, on):
                httpx.post(
                    f"{server.url}/api/v1/agents/echo/messages",
                    content=ECHO_BODY,
                    headers={"Content-Type": "application/json"},
                ).raise_for_status()
            path = "/api/v1/agents/echo/messages"
            for _ in range(args.rounds):
                rounds.append(
                    (
                        measure(off, path, ECHO_BODY, args, client),
                        measure(on, path, ECHO_BODY, args, client),
                    )
                )
            ok = report_exit(off) and report_exit(on)
    finally:
        collector.kill()
        collector.wait()
    ratios = []
    for number, (untraced, traced) in enumerate(rounds, 1):
        if args.rounds > 1:
            print(f"-- round {number}")
        print(line("tracing off", untraced))
        print(line("tracing on (OTLP export)", traced))
        ratios.append(float(traced["rps"]) / float(untraced["rps"]) if untraced["rps"] else 0.0)  # type: ignore[arg-type]
    value = statistics.median(ratios)
    verdict = "met" if value >= GOAL_RATIO else "NOT met"
    kind = "median ratio" if args.rounds > 1 else "ratio"
    print(
        f"tracing on / off, requests/s {kind}: {value:.2f} "
        f"(cost {(1 - value) * 100:.0f}%; goal: ratio >= {GOAL_RATIO} (cost < 15%): {verdict})"
    )
    failed = any(r["failed"] for pair in rounds for r in pair)
    if not ok or failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
