"""Blue-green reloads under load: requests must not fail while the echo agent is replaced.

One `caxton start` on loopback with a copy of the example echo agent. A load generator in a
separate process keeps 16 keep-alive connections busy with ``POST
/api/v1/agents/echo/messages`` while this process rewrites the agent 50 times, alternating:

* odd reloads rewrite ``echo.toml`` in place with a new ``version = "1.0.N"``;
* even reloads rewrite ``echo.wat`` with a different comment line (same code, new bytes,
  so a new revision of the same version).

Each reload is timed from the write's close() to the ``agent_updated`` event on
``WS /ws/events`` naming a newer revision. Goals: 0 failed requests; reload p99 <= 250 ms.
Baseline in the same run: the same load for the same time with no reloads.

    .venv/bin/python tools/bench/reload_under_load.py [--reloads 50] [--connections 16]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import (
    BenchServer,
    finish_load,
    header,
    percentile,
    report_exit,
    start_load,
)

GOAL_RELOAD_P99_MS = 250.0
EVENT_TIMEOUT_S = 10.0
ECHO_BODY = json.dumps({"content": "hello from the reload benchmark"})
VERSION_LINE = re.compile(r'^version\s*=\s*"[^"]*"', re.MULTILINE)
MAX_LOAD_S = 600.0


def write_file(path: Path, text: str) -> float:
    with path.open("w") as handle:
        handle.write(text)
    return time.perf_counter()


def active_revision(url: str) -> int:
    versions = httpx.get(f"{url}/api/v1/agents/echo/versions").json()["versions"]
    return max(v["revision"] for v in versions if v["active"])


async def reload_many(
    server: BenchServer, count: int, gap: float, revision: int
) -> tuple[list[float], list[str], dict[str, int]]:
    manifest = server.agents_dir / "echo.toml"
    module = server.agents_dir / "echo.wat"
    manifest_text, module_text = manifest.read_text(), module.read_text()
    samples: list[float] = []
    problems: list[str] = []
    transitions: dict[str, int] = {}
    async with open_websocket_url(f"{server.ws_url}/ws/events") as ws:
        send, events = trio.open_memory_channel[tuple[float, dict]](10_000)

        async def listen() -> None:
            try:
                while True:
                    message = await ws.get_message()
                    event = json.loads(message)
                    if event.get("type") == "agent_status_changed":
                        key = f"{event['data'].get('old')} -> {event['data'].get('new')}"
                        transitions[key] = transitions.get(key, 0) + 1
                    await send.send((time.perf_counter(), event))
            except ConnectionClosed:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(listen)
            await trio.sleep(0.2)
            version = "1.0.0"
            for n in range(1, count + 1):
                if n % 2:
                    version = f"1.0.{n}"
                    what = f"echo.toml -> {version}"
                    closed = write_file(
                        manifest, VERSION_LINE.sub(f'version = "{version}"', manifest_text)
                    )
                else:
                    what = f"echo.wat comment {n}"
                    closed = write_file(module, f";; benchmark edit {n}\n{module_text}")
                seen = None
                with trio.move_on_after(EVENT_TIMEOUT_S):
                    while seen is None:
                        at, event = await events.receive()
                        data = event.get("data") or {}
                        if event.get("type") in ("agent_reload_failed", "execution_error"):
                            problems.append(f"reload {n} ({what}): {event['type']} {data}")
                        if (
                            event.get("type") == "agent_updated"
                            and event.get("agent") == "echo"
                            and (data.get("revision") or 0) > revision
                        ):
                            revision = data["revision"]
                            if data.get("version") != version:
                                problems.append(
                                    f"reload {n} ({what}): active version {data.get('version')}"
                                )
                            seen = at
                if seen is None:
                    problems.append(f"reload {n} ({what}): no agent_updated in 10 s")
                    continue
                samples.append(seen - closed)
                await trio.sleep(gap)
            await trio.sleep(0.5)  # the last old version finishes draining
            nursery.cancel_scope.cancel()
    return samples, problems, transitions


def show_load(label: str, r: dict[str, Any]) -> None:
    print(
        f"{label:<22} {r['requests']:>7} requests in {r['seconds']:5.1f} s "
        f"({r['rps']:5.0f} req/s)   failed {r['failed']}   p50 {r['p50_ms']:6.1f} ms   "
        f"p99 {r['p99_ms']:6.1f} ms   max {r['max_ms']:6.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reloads", type=int, default=50, help="number of reloads (50)")
    parser.add_argument("--connections", type=int, default=16, help="concurrent clients (16)")
    parser.add_argument("--gap", type=float, default=0.2, help="seconds between reloads (0.2)")
    parser.add_argument(
        "--no-baseline", action="store_true", help="skip the load-without-reloads run"
    )
    args = parser.parse_args()
    header(
        "blue-green reloads under load",
        f"{args.connections} keep-alive clients on POST /api/v1/agents/echo/messages "
        f"(separate process) while echo is rewritten {args.reloads} times (manifest version / "
        ".wat comment, alternating); baseline: same load, no reloads",
    )
    ok = True
    baseline = None
    with BenchServer(("echo",)) as server:
        revision = active_revision(server.url)
        load = start_load(
            server.url,
            "/api/v1/agents/echo/messages",
            connections=args.connections,
            duration=MAX_LOAD_S,
            warmup=1.0,
            body=ECHO_BODY,
        )
        try:
            time.sleep(1.5)
            started = time.perf_counter()
            samples, problems, transitions = trio.run(
                reload_many, server, args.reloads, args.gap, revision
            )
            reload_window = time.perf_counter() - started
        finally:
            under_reloads = finish_load(load, stop=True)
        if not args.no_baseline:
            baseline = finish_load(
                start_load(
                    server.url,
                    "/api/v1/agents/echo/messages",
                    connections=args.connections,
                    duration=min(reload_window, MAX_LOAD_S),
                    warmup=1.0,
                    body=ECHO_BODY,
                )
            )
        versions = httpx.get(f"{server.url}/api/v1/agents/echo/versions").json()["versions"]
        errors_logged = [
            r.get("message", "")
            for r in server.log_records()
            if r.get("level") in ("error", "critical")
        ]
        ok = report_exit(server)
    show_load("with reloads", under_reloads)
    if baseline is not None:
        show_load("baseline (no reloads)", baseline)
    print(
        f"failed requests with reloads: {under_reloads['failed']} (goal 0: "
        f"{'met' if under_reloads['failed'] == 0 else 'NOT met'})"
    )
    for error, n in under_reloads["errors"].items():
        print(f"  {n:>6} x {error}")
    if samples:
        p99 = percentile(samples, 99) * 1e3
        print(
            f"reload write -> agent_updated: p50 {percentile(samples, 50) * 1e3:.1f} ms   "
            f"p99 {p99:.1f} ms   max {max(samples) * 1e3:.1f} ms   (n={len(samples)}; "
            f"goal p99 <= {GOAL_RELOAD_P99_MS:.0f} ms: "
            f"{'met' if p99 <= GOAL_RELOAD_P99_MS else 'NOT met'})"
        )
    print(f"version transitions seen on /ws/events: {dict(sorted(transitions.items()))}")
    kept = ", ".join(f"{v['version']}#{v['revision']}" for v in versions)
    print(f"versions kept: {kept}; error log lines: {len(errors_logged)}")
    for message in sorted(set(errors_logged))[:10]:
        print(f"  log: {message[:160]}")
    for problem in problems:
        print(f"problem: {problem}")
    if problems or not ok or under_reloads["failed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
