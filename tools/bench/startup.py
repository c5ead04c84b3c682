"""Start -> /ready time and idle RSS of `caxton start`, median of 5 runs.

Baseline measured in the same run: a bare Python that only imports the web stack (trio,
hypercorn, quart-trio), i.e. the floor any server built on it pays.

    .venv/bin/python tools/bench/startup.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

CAXTON = shutil.which("caxton", path=str(Path(sys.executable).parent)) or "caxton"


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def one_run(workdir: Path) -> tuple[float, int]:
    config = workdir / "caxton.yaml"
    config.write_text(
        f"server:\n  port: 0\n  data_dir: {workdir / 'data'}\n"
        "observability:\n  metrics_port: 0\nlogging:\n  format: json\n"
    )
    started = time.perf_counter()
    process = subprocess.Popen(
        [CAXTON, "start", "--config", str(config)],
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert process.stderr is not None
    url = None
    try:
        for line in process.stderr:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "ready on" in record.get("message", ""):
                url = record["api"][0]
                break
        if url is None:
            raise SystemExit("server exited before it was ready")
        while True:
            try:
                if httpx.get(f"{url}/ready", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.005)
        elapsed = time.perf_counter() - started
        time.sleep(1.0)  # idle
        rss = rss_bytes(process.pid)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=30)
    return elapsed, rss


def baseline() -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import trio, hypercorn.trio, quart_trio"], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    times, rss, base = [], [], []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            elapsed, resident = one_run(Path(tmp))
        times.append(elapsed)
        rss.append(resident)
        base.append(baseline())
    start_ms = statistics.median(times) * 1000
    base_ms = statistics.median(base) * 1000
    print(
        f"caxton start -> /ready 200: median {start_ms:.0f} ms over {args.runs} runs "
        f"(min {min(times) * 1000:.0f}, max {max(times) * 1000:.0f})"
    )
    print(f"idle RSS after ready: median {statistics.median(rss) / 2**20:.1f} MiB")
    print(f"baseline (python importing trio+hypercorn+quart-trio): median {base_ms:.0f} ms")
    print(f"ratio start/baseline: {start_ms / base_ms:.2f}")
    print(f"machine: {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
