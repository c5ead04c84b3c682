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
