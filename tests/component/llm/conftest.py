"""Fixtures for the LLM clients: the scripted server of ``tools/llm_server.py`` on loopback.

The server is the seam the outside world owns (a provider's endpoint); everything on our side
(httpx, SSE parsing, retries, breaker) runs for real against it.
"""

from __future__ import annotations

import socket

import httpx
import pytest
from servers import load_llm_server

llm_server_tool = load_llm_server()


@pytest.fixture
def start_llm(nursery):
    """``await start_llm(script)`` starts a scripted server in the test's nursery."""

    async def start(script=None):
        return await nursery.start(llm_server_tool.serve_llm, script)

    return start


@pytest.fixture
async def http():
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def refused_url():
    """A loopback URL where nothing listens (the port was just released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"
