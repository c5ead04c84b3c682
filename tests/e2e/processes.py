"""Real ``caxton`` processes for end-to-end tests: start, wait, run CLI commands."""

from __future__ import annotations

import base64
import functools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import attrs
import trio

REPO = Path(__file__).parents[2]
#: Where Debian puts the operations tools the tests run (nginx, prometheus, logrotate, ...).
SYSTEM_PATH = "/usr/bin:/usr/sbin:/bin:/sbin:/usr/local/bin"
CAXTON = shutil.which("caxton", path=str(Path(sys.executable).parent))
CAXTON_CMD = [CAXTON] if CAXTON else [sys.executable, "-m", "caxton"]


def caxton_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAXTON_", "RUST_LOG"))}
    env.update(extra)
    return env


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 60, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run one CLI command to completion (blocking: call from sync tests)."""
    return subprocess.run(
        [*CAXTON_CMD, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env or caxton_env(),
        stdin=subprocess.DEVNULL,
        cwd=cwd,
        check=False,
    )


async def run_cli_async(
    *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*CAXTON_CMD, *args],
        capture_stdout=True,
        capture_stderr=True,
        env=env or caxton_env(),
        stdin=b"",
        check=False,
    )


@attrs.define
class ServerProcess:
    process: trio.Process
    records: list[dict[str, Any]] = attrs.field(factory=list)
    raw: list[str] = attrs.field(factory=list)
    ready: trio.Event = attrs.field(factory=trio.Event)
    api_url: str = ""
    metrics_url: str | None = None

    def messages(self) -> list[str]:
        return [str(r.get("message")) for r in self.records]

    async def wait_for_message(self, fragment: str, timeout: float = 10) -> dict[str, Any]:
        with trio.fail_after(timeout):
            while True:
                for record in self.records:
                    if fragment in str(record.get("message")):
                        return record
                await trio.sleep(0.02)


async def _pump(server: ServerProcess) -> None:
    assert server.process.stderr is not None
    buffer = b""
    while chunk := await server.process.stderr.receive_some(65536):
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            server.raw.append(text)
            try:
                record = json.loads(text)
            except ValueError:
                continue
            server.records.append(record)
            if "ready on" in str(record.get("message")):
                server.api_url = record["api"][0]
                server.metrics_url = record.get("metrics")
                server.ready.set()


async def start_server(
    nursery: trio.Nursery,
    *args: str,
    env: dict[str, str] | None = None,
    wait_ready: bool = True,
    timeout: float = 30,
) -> ServerProcess:
    """Start ``caxton start ARGS`` and (by default) wait for its ready line."""
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            [*CAXTON_CMD, "start", *args],
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            env={"CAXTON_LOG_FORMAT": "json", **(env or caxton_env())},
            check=False,
        )
    )
    server = ServerProcess(process=process)
    nursery.start_soon(_pump, server)
    if wait_ready:
        with trio.fail_after(timeout):
            while not server.ready.is_set():
                if server.process.returncode is not None:
                    raise AssertionError("server exited early:\n" + "\n".join(server.raw))
                await trio.sleep(0.02)
    return server


def write_config(path: Path, data_dir: Path, extra: str = "") -> Path:
    path.write_text(
        "server:\n"
        "  host: 127.0.0.1\n"
        "  port: 0\n"
        f"  data_dir: {data_dir}\n"
        "  shutdown_timeout: 10s\n"
        "observability:\n"
        "  metrics_port: 0\n" + extra
    )
    return path


async def wait_exit(process: trio.Process, timeout: float = 15) -> int:
    with trio.fail_after(timeout):
        return await process.wait()


async def start_llm_server(nursery: trio.Nursery, script: Path) -> tuple[trio.Process, str]:
    """``python tools/llm_server.py SCRIPT`` (the scripted LLM server, as the README starts
    it); the process and the base URL it prints."""
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            [sys.executable, str(REPO / "tools" / "llm_server.py"), str(script)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    )
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(20):
        while b"\n" not in buffer:
            buffer += await process.stdout.receive_some(4096)
    return process, buffer.decode().splitlines()[0].rsplit(" at ", 1)[1].strip()


def ops_tool(name: str) -> str:
    """The path of an operations tool, installed with tools/install-ops-tools.sh when missing
    (as `make test` does)."""
    found = shutil.which(name, path=SYSTEM_PATH)
    if found is None:
        subprocess.run(
            [str(REPO / "tools" / "install-ops-tools.sh")],
            check=True,
            stdin=subprocess.DEVNULL,
            timeout=600,
        )
        found = shutil.which(name, path=SYSTEM_PATH)
    assert found is not None, f"{name} is still missing after tools/install-ops-tools.sh"
    return found


PROBE_WAT = """
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (memory (export "memory") 1)
  (data (i32.const 0) "{text}")
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param i32 i32) (result i32)
    (call $reply (i32.const 0) (i32.const {size}))
    (i32.const 0)))
"""


def probe(version: str) -> dict[str, str]:
    """A WASM agent whose reply names its version."""
    text = f"probe {version}"
    wat = PROBE_WAT.format(text=text, size=len(text))
    manifest = f'name = "probe"\nversion = "{version}"\ncapabilities = ["probing"]\n[wasm]\n'
    return {"manifest": manifest, "wasm_module": base64.b64encode(wat.encode()).decode()}
