"""Message routing: WASM agent -> WASM agent through the router, and POST /api/v1/messages.

Part 1 runs a server in this process (``caxton.server.serve``) with two WASM agents: the
example ``echo`` and ``relay``, which, for every message it handles, sends
``{"capability": "echo", "content": "ping"}`` through ``caxton.send_message``. The router
delivers it to echo, then hands echo's reply back to relay as an ``inform``, on which relay
sends again: each chain is 8 WASM-to-WASM messages until the loop guard (``messaging.max_hops``)
refuses the ninth. Several chains run at once for ``--duration`` seconds. Figures: routed
messages per second, and p50/p99 of the routing latency of each message (capability lookup,
conversation recording, echo's WASM call, the reply), taken from the ``message_routed``
events, and what recording the conversations cost (batches written, and the store writer's
CPU per batch and per routed message). The router's per-agent send rate (1,000/s by
default) is lifted for the run, so the figures are the routing cost. Goal (issue #14): one
chain at a time >= 1,000 messages/s with p99 <= 2 ms.

Part 2 starts ``caxton start`` on loopback with echo and sends ``{"capability": "echo"}``
envelopes to ``POST /api/v1/messages`` from ``--connections`` keep-alive clients for
``--duration`` seconds: requests per second and client-side p50/p99.

    .venv/bin/python tools/bench/routing.py [--duration 5] [--chains 4] [--connections 8]
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import attrs
import httpx
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import EXAMPLE_AGENTS, BenchServer, header, percentile, report_exit

from caxton.config import Override, load_config
from caxton.messages import Message
from caxton.server import ServerInfo, serve

GOAL_P99_MS = 2.0
GOAL_PER_SECOND = 1000.0
ENVELOPE = '{"capability":"echo","content":"ping"}'
RELAY_WAT = f"""
(module
  (import "caxton" "send_message" (func $send (param i32 i32) (result i32)))
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) {json.dumps(ENVELOPE)})
  (data (i32.const 100) "sent")
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param $p i32) (param $n i32) (result i32)
    (drop (call $send (i32.const 0) (i32.const {len(ENVELOPE)})))
    (call $reply (i32.const 100) (i32.const 4))
    (i32.const 0)))
"""
RELAY_TOML = (
    'name = "relay"\nversion = "1.0.0"\ncapabilities = ["relay"]\n[wasm]\nmodule = "relay.wat"\n'
)
HOPS = 8


async def in_process(duration_s: float, chains: int) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="caxton-bench-routing-"))
    try:
        agents = workdir / "agents"
        agents.mkdir()
        shutil.copy(EXAMPLE_AGENTS / "echo.toml", agents)
        shutil.copy(EXAMPLE_AGENTS / "echo.wat", agents)
        (agents / "relay.wat").write_text(RELAY_WAT)
        (agents / "relay.toml").write_text(RELAY_TOML)
        values = {
            ("server", "host"): "127.0.0.1",
            ("server", "port"): 0,
            ("server", "data_dir"): str(workdir / "data"),
            ("server", "agents_dir"): str(agents),
            ("observability", "metrics_enabled"): False,
            ("logging", "level"): "error",
        }
        loaded = load_config(
            None, environ={}, overrides=[Override(k, v, "bench") for k, v in values.items()]
        )
        async with trio.open_nursery() as nursery:
            info: ServerInfo = await nursery.start(
                functools.partial(serve, loaded, handle_signals=False)
            )
            router = info.services.router
            assert router is not None
            # relay sends as fast as the router answers: lift the per-agent send rate (1,000/s
            # by default, a guard against runaway guests) so that the routing cost is measured
            router.sends.limits = attrs.evolve(
                router.sends.limits, per_agent_per_second=1e9, per_agent_burst=1_000_000_000
            )
            single = await _chains(info, duration_s, 1)
            loaded_run = await _chains(info, duration_s, chains)
            info.stop()
        return {"single": single, "loaded": loaded_run}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


async def _chains(info: ServerInfo, duration_s: float, chains: int) -> dict[str, Any]:
    """Run ``chains`` relay chains at once for ``duration_s``; each waits for its 8 hops."""
    router = info.services.router
    assert router is not None
    conversations = info.services.conversations
    latencies: list[float] = []
    hops: dict[str, int] = {}
    finished: dict[str, trio.Event] = {}
    last_event = 0.0

    async def one_chain() -> None:
        message = Message(sender="bench", receiver="relay", content="go")
        finished[message.conversation_id] = done = trio.Event()
        (await router.deliver(message, conversation="new")).raise_error()
        with trio.fail_after(10):
            await done.wait()

    async with info.services.events.subscribe() as events, trio.open_nursery() as nursery:

        async def collect() -> None:
            nonlocal last_event
            async for event in events:
                if event.type == "message_routed" and event.data.get("sender") == "relay":
                    latencies.append(float(event.data["duration_ms"]))
                    last_event = time.perf_counter()
                    cid = event.data["conversation_id"]
                    hops[cid] = hops.get(cid, 0) + 1
                    if hops[cid] == HOPS:
                        finished[cid].set()

        nursery.start_soon(collect)
        await one_chain()  # warm-up; its figures are dropped
        latencies.clear()
        await conversations.flush()
        before = conversations.statistics()
        begin = time.perf_counter()
        deadline = begin + duration_s
        completed = 0

        async def worker() -> None:
            nonlocal completed
            while time.perf_counter() < deadline:
                await one_chain()
                completed += 1

        async with trio.open_nursery() as workers:
            for _ in range(chains):
                workers.start_soon(worker)
        nursery.cancel_scope.cancel()
    await conversations.flush()
    after = conversations.statistics()
    written = {k: after[k] - before[k] for k in ("batches", "written", "write_cpu_us")}
    elapsed = max(last_event - begin, 1e-9)
    return {
        "messages": len(latencies),
        "expected": completed * HOPS,
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies, default=float("nan")),
        "batches": written["batches"],
        "batch_rows": written["written"] / max(written["batches"], 1),
        "batch_cpu_ms": written["write_cpu_us"] / max(written["batches"], 1) / 1000,
        "record_cpu_us": written["write_cpu_us"] / max(len(latencies), 1),
    }


async def over_http(url: str, duration_s: float, connections: int) -> dict[str, Any]:
    body = {"capability": "echo", "content": "hello from the benchmark"}
    latencies: list[float] = []
    failures = 0
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for _ in range(20):  # warm-up
            await client.post("/api/v1/messages", json=body)
        begin = time.perf_counter()
        deadline = begin + duration_s

        async def worker() -> None:
            nonlocal failures
            while time.perf_counter() < deadline:
                sent = time.perf_counter()
                response = await client.post("/api/v1/messages", json=body)
                latencies.append((time.perf_counter() - sent) * 1000)
                if response.status_code != 200 or response.json()["performative"] != "inform":
                    failures += 1

        async with trio.open_nursery() as nursery:
            for _ in range(connections):
                nursery.start_soon(worker)
        elapsed = time.perf_counter() - begin
    return {
        "requests": len(latencies),
        "failures": failures,
        "seconds": elapsed,
        "per_second": len(latencies) / elapsed,
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per part")
    parser.add_argument("--chains", type=int, default=4, help="relay chains at once (part 1)")
    parser.add_argument("--connections", type=int, default=8, help="HTTP clients (part 2)")
    args = parser.parse_args()
    logging.getLogger("caxton").setLevel(logging.CRITICAL)
    header(
        "message routing",
        "WASM -> WASM through the router in process; POST /api/v1/messages over loopback",
    )
    runs = trio.run(in_process, args.duration, args.chains)
    for label, chains in (("single", 1), ("loaded", args.chains)):
        wasm = runs[label]
        print(
            f"wasm -> wasm in process, {chains} chain{'s' if chains > 1 else ''} at once: "
            f"{wasm['messages']} messages in {wasm['seconds']:.2f}s = "
            f"{wasm['per_second']:.0f} msg/s; routing p50 {wasm['p50_ms']:.3f} ms, "
            f"p99 {wasm['p99_ms']:.3f} ms, max {wasm['max_ms']:.3f} ms"
        )
        print(
            f"  conversation record: {wasm['batches']} batches of {wasm['batch_rows']:.0f} "
            f"messages, {wasm['batch_cpu_ms']:.1f} ms of the store writer's CPU each = "
            f"{wasm['record_cpu_us']:.0f} us per routed message"
        )
    single = runs["single"]
    rate_met = single["per_second"] >= GOAL_PER_SECOND
    p99_met = single["p99_ms"] <= GOAL_P99_MS
    print(
        f"one chain: {single['per_second']:.0f} msg/s (goal >= {GOAL_PER_SECOND:,.0f}: "
        f"{'met' if rate_met else 'NOT met'}), p99 {single['p99_ms']:.2f} ms "
        f"(goal <= {GOAL_P99_MS:g} ms: {'met' if p99_met else 'NOT met'})"
    )
    server = BenchServer(("echo",), log_level="warning")
    ok = True
    try:
        server.start()
        http = trio.run(over_http, server.url, args.duration, args.connections)
        print(
            f"POST /api/v1/messages (capability echo, {args.connections} connections): "
            f"{http['requests']} requests, {http['failures']} failed, "
            f"{http['per_second']:.0f} req/s; client p50 {http['p50_ms']:.2f} ms, "
            f"p99 {http['p99_ms']:.2f} ms"
        )
    finally:
        ok = report_exit(server)
    complete = all(r["messages"] == r["expected"] for r in runs.values())
    return 0 if ok and http["failures"] == 0 and complete else 1


if __name__ == "__main__":
    sys.exit(main())
