"""An MCP server written with the ``mcp`` SDK (FastMCP): a DEVELOPMENT AND TEST TOOL, used by the
tests and the README demo of MCP tools for config agents (issue #19).

Run ``python mcp_demo_server.py stdio`` (JSON-RPC over stdin/stdout) or ``python
mcp_demo_server.py http`` (streamable HTTP on a free loopback port, printed as ``PORT <n>``;
``http-json`` answers each call with one JSON body instead of an SSE stream).
Some tools misbehave on purpose: ``crash`` exits the process, ``garbage`` writes a line that is
not JSON-RPC and never answers, ``sleep`` hangs (after touching its marker file), ``fail``
raises, ``huge`` answers as many MiB as asked.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

from mcp.server.fastmcp import FastMCP

server = FastMCP("demo")


@server.tool()
def add(a: int, b: int) -> str:
    """Add two integers."""
    return f"sum={a + b}"


@server.tool()
def pid() -> str:
    """The process id of this server."""
    return f"pid={os.getpid()}"


@server.tool()
def sleep(seconds: float, marker: str = "") -> str:
    """Sleep (blocking the server), touching ``marker`` first."""
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)
    return "slept"


@server.tool()
def crash() -> str:
    """Exit the process at once."""
    os._exit(3)


@server.tool()
def garbage() -> str:
    """Write a line that is not JSON-RPC to stdout, then hang."""
    os.write(1, b"this is not json-rpc\n")
    time.sleep(60)
    return "unreachable"


@server.tool()
def fail(reason: str) -> str:
    """Raise an error with ``reason``."""
    raise ValueError(reason)


@server.tool()
def huge(mib: int) -> str:
    """A reply of ``mib`` MiB (a server that answers more than a client should hold)."""
    return "x" * (mib * 1024 * 1024)


@server.tool(name="read.file")
def read_file(path: str) -> str:
    """A tool whose name no LLM provider accepts as it is (a dot)."""
    return f"read {path}"


def main() -> None:
    mode = sys.argv[1] if len(sys.argv) > 1 else "stdio"
    if mode == "stdio":
        server.run("stdio")
        return
    import anyio
    import uvicorn

    if mode == "http-json":  # stateless, each reply one JSON body (no SSE)
        server.settings.json_response = True
        server.settings.stateless_http = True

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    config = uvicorn.Config(server.streamable_http_app(), log_level="warning")
    anyio.run(uvicorn.Server(config).serve, [sock])


if __name__ == "__main__":
    main()
