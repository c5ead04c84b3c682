"""Fair sharing of the WASM pool: echo latency while eight other agents loop at their limit.

One `caxton start` on loopback with the example echo agent. Eight more WASM agents are
deployed through the API, each a guest that loops forever with ``max_execution_time`` of
``--limit`` seconds (and fuel to spare), so every call to them burns its whole time limit.

1. Baseline: ``--samples`` sequential ``POST /api/v1/agents/echo/messages`` on an idle server.
2. Under load: eight clients keep one call running on each looping agent (a new call as soon
   as the last one ends with ``WASM_LIMIT_EXCEEDED``), and the same echo calls are timed
   meanwhile, for ``--duration`` seconds.

It prints echo p50/p99 for both and their ratio. Goal (issue #13 item 12, DESIGN §4.2: one
agent's limits never affect another): under load, echo p99 <= 100 ms ("within tens of ms").
Eight spinning guests on a machine with fewer cores share the CPU with the server, so part of
the ratio is the operating system's scheduler, not the pool.

    .venv/bin/python tools/bench/wasm_fairness.py [--duration 10] [--limit 5] [--samples 200]
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from pathlib import Path

import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import BenchServer, cpu_seconds, header, percentile, report_exit

GOAL_P99_MS = 100.0
LOOPERS = 8
LOOP_WAT = """(module
  (memory (export "memory") 1)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param i32 i32) (result i32)
    (loop $forever (br $forever))
    (i32.const 0)))"""


def looper_body(name: str, limit_s: float) -> dict[str, str]:
    manifest = (
        f'name = "{name}"\nversion = "1.0.0"\n'
        f'[limits]\nmax_execution_time = "{limit_s:g}s"\nmax_fuel = 1000000000000000\n[wasm]\n'
    )
    return {"manifest": manifest, "wasm_module": base64.b64encode(LOOP_WAT.encode()).decode()}


async def echo_latencies(
    client: httpx.AsyncClient, *, count: int | None, until: float | None
) -> list[float]:
    samples: list[float] = []
    while (count is None or len(samples) < count) and (until is None or time.monotonic() < until):
        started = time.perf_counter()
        response = await client.post("/api/v1/agents/echo/messages", json={"content": "ping"})
        samples.append(time.perf_counter() - started)
        if response.status_code != 200:
            raise SystemExit(f"echo answered {response.status_code}: {response.text}")
        await trio.sleep(0.005)
    return samples


async def keep_looping(client: httpx.AsyncClient, name: str, calls: list[int]) -> None:
    while True:
        response = await client.post(f"/api/v1/agents/{name}/messages", json={"content": "x"})
        if response.status_code not in (200, 422, 503):
            raise SystemExit(f"{name} answered {response.status_code}: {response.text}")
        calls.append(response.status_code)


def line(label: str, samples: list[float]) -> str:
    return (
        f"{label:<34} p50 {percentile(samples, 50) * 1e3:8.2f} ms   "
        f"p99 {percentile(samples, 99) * 1e3:8.2f} ms   max {max(samples) * 1e3:8.2f} ms   "
        f"(n={len(samples)})"
    )


async def run(url: str, pid: int, args: argparse.Namespace) -> bool:
    limits = httpx.Limits(max_connections=LOOPERS + 4)
    async with httpx.AsyncClient(base_url=url, timeout=args.limit * 4, limits=limits) as client:
        for i in range(LOOPERS):
            body = looper_body(f"loop-{i}", args.limit)
            response = await client.post("/api/v1/agents", json=body)
            if response.status_code != 201:
                raise SystemExit(f"deploying loop-{i}: {response.status_code} {response.text}")
        await echo_latencies(client, count=20, until=None)  # warm-up
        baseline = await echo_latencies(client, count=args.samples, until=None)
        calls: list[int] = []
        cpu_before = cpu_seconds(pid)
        async with trio.open_nursery() as nursery:
            for i in range(LOOPERS):
                nursery.start_soon(keep_looping, client, f"loop-{i}", calls)
            await trio.sleep(0.5)  # every looper is running
            started = time.monotonic()
            loaded = await echo_latencies(client, count=None, until=started + args.duration)
            elapsed = time.monotonic() - started
            nursery.cancel_scope.cancel()
        cpu = cpu_seconds(pid) - cpu_before
    print(line("echo, idle server (baseline)", baseline))
    print(line(f"echo, {LOOPERS} agents looping", loaded))
    p50 = percentile(loaded, 50) / percentile(baseline, 50)
    p99 = percentile(loaded, 99) / percentile(baseline, 99)
    print(f"ratio loaded/baseline: p50 x{p50:.2f}   p99 x{p99:.2f}")
    print(
        f"looping calls ended meanwhile: {len(calls)} (each at its {args.limit:g} s limit); "
        f"server CPU {cpu:.1f} s over {elapsed:.1f} s"
    )
    ok = percentile(loaded, 99) * 1e3 <= GOAL_P99_MS
    print(
        f"goal: echo p99 under load <= {GOAL_P99_MS:.0f} ms: "
        + ("met" if ok else "NOT met  <-- see the note on cores in the docstring")
    )
    return ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds under load (10)")
    parser.add_argument("--limit", type=float, default=5.0, help="loopers' time limit, s (5)")
    parser.add_argument("--samples", type=int, default=200, help="baseline echo calls (200)")
    args = parser.parse_args()
    header(
        "WASM pool fairness",
        f"echo latency alone, then while {LOOPERS} other agents' guests loop at their "
        f"{args.limit:g} s time limit",
    )
    with BenchServer(("echo",), log_level="info") as server:
        ok = trio.run(run, server.url, server.pid, args)
        clean = report_exit(server)
    sys.exit(0 if ok and clean else 1)


if __name__ == "__main__":
    main()
