"""Helpers to run servers in tests (imported by the conftest files and tests)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from caxton.config import LoadedConfig, Override, load_config

if TYPE_CHECKING:
    from types import ModuleType

    import trio

REPO = Path(__file__).resolve().parents[1]

#: A scripted model that asks ``text-statistics`` to count four words with ``send_message``,
#: then answers with the figures that come back (config agents calling agents by capability).
COUNT_BY_CAPABILITY: dict[str, object] = {
    "rules": [
        {"match": "total_words", "reply": "Four words."},
        {
            "match": "count these",
            "tool_call": {
                "name": "send_message",
                "arguments": {"capability": "text-statistics", "content": "one two three four"},
            },
        },
    ]
}


#: A config agent whose model (the scripted LLM server at ``URL``, with
#: :data:`COUNT_BY_CAPABILITY`) asks other agents through ``send_message``.
PLANNER_TOML = """
name = "planner"
version = "1.0.0"
capabilities = ["planning"]
tools = ["send_message"]
system_prompt = "You are terse."
user_prompt_template = "{{request}}"
[llm]
provider = "openai"
model = "scripted-1"
base_url = "URL/v1"
max_retries = 0
timeout = "10s"
"""


def planner_toml(llm_url: str) -> str:
    """:data:`PLANNER_TOML` talking to the scripted LLM server at ``llm_url``."""
    return PLANNER_TOML.replace("URL", llm_url)


#: Busy on the wall clock for 20 s, then replies "done" (stopped early only by a cancel).
SLOW_WAT = """
(module
  (import "caxton" "reply" (func $reply (param i32 i32)))
  (import "caxton" "now_ms" (func $now (result i64)))
  (memory (export "memory") 1)
  (data (i32.const 0) "done")
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 1024))
  (func (export "handle_message") (param $p i32) (param $n i32) (result i32)
    (local $until i64)
    (local.set $until (i64.add (call $now) (i64.const 20000)))
    (block $out (loop $wait
      (br_if $out (i64.ge_s (call $now) (local.get $until)))
      (br $wait)))
    (call $reply (i32.const 0) (i32.const 4))
    (i32.const 0)))
"""
SLOW_TOML = """name = "slow"
version = "1.0.0"
description = "Works for 20 seconds, then answers done"
capabilities = ["slow-work"]

[wasm]
module = "slow.wat"

[limits]
max_fuel = 1_000_000_000_000
max_execution_time = "30s"
"""


def write_slow_agent(agents_dir: Path) -> None:
    """The ``slow`` WASM agent (:data:`SLOW_WAT`) into ``agents_dir``."""
    agents_dir.mkdir(parents=True, exist_ok=True)
    (agents_dir / "slow.toml").write_text(SLOW_TOML)
    (agents_dir / "slow.wat").write_text(SLOW_WAT)


def loopback_config(data_dir: Path, **extra: object) -> LoadedConfig:
    """Defaults on 127.0.0.1 with port 0 for the API and metrics, data under ``data_dir``."""
    values: dict[tuple[str, ...], object] = {
        ("server", "host"): "127.0.0.1",
        ("server", "port"): 0,
        ("server", "data_dir"): str(data_dir),
        ("server", "shutdown_timeout"): "5s",
        ("observability", "metrics_port"): 0,
    }
    for dotted, value in extra.items():
        values[tuple(dotted.split("__"))] = value
    overrides = [Override(path, value, "test") for path, value in values.items()]
    return load_config(None, environ={}, overrides=overrides)


def load_llm_server() -> ModuleType:
    """``tools/llm_server.py`` (the scripted LLM server) as a module; ``tools/`` is no package."""
    if "llm_server" not in sys.modules:
        path = REPO / "tools" / "llm_server.py"
        spec = importlib.util.spec_from_file_location("llm_server", path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["llm_server"] = module
        spec.loader.exec_module(module)
    return sys.modules["llm_server"]


async def read_response_head(stream: trio.SocketStream) -> bytes:
    """Read one HTTP/1.1 response from a raw socket; return its head (the body is consumed
    by Content-Length, so the next response on the connection can be read after it)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = await stream.receive_some(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        body += await stream.receive_some(65536)
    return head
