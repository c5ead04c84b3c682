"""``POST /mcp`` with the ``mcp`` SDK's own client session, behind API keys (issue #19 item 2).

One secured server for the module's checks: the SDK client lists and calls the tools (an agent
through the router, memory store and search), roles limit what each key may call, and bad
JSON-RPC, unknown methods and tools, a wrong protocol version and oversized bodies get clear
errors while the endpoint keeps answering.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import httpx
import pytest
import trio
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from servers import REPO

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from security_servers import Secured

ECHO_MANIFEST = (REPO / "agents" / "echo.toml").read_text().replace('module = "echo.wat"\n', "")
ECHO_MODULE = base64.b64encode((REPO / "agents" / "echo.wat").read_bytes()).decode()


def mcp_session(secured: Secured, role: str) -> AbstractAsyncContextManager[ClientSession]:
    import contextlib

    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[ClientSession]:
        async with (
            httpx.AsyncClient(headers=secured.headers(role), timeout=30) as http,
            streamable_http_client(f"{secured.url}/mcp", http_client=http) as (read, write, _),
            ClientSession(read, write) as client,
        ):
            await client.initialize()
            yield client

    return session()


@pytest.fixture
async def with_echo(start_secured) -> Secured:
    secured: Secured = await start_secured(server__max_request_size="64KB")
    async with httpx.AsyncClient(base_url=secured.url, headers=secured.headers("admin")) as c:
        deployed = await c.post(
            "/api/v1/agents", json={"manifest": ECHO_MANIFEST, "wasm_module": ECHO_MODULE}
        )
        assert deployed.status_code == 201, deployed.text
        while (await c.get("/api/v1/agents/echo")).json()["status"] != "running":
            await trio.sleep(0.02)
    return secured


async def test_sdk_client_asks_agents_and_uses_memory_within_its_role(with_echo: Secured) -> None:
    secured = with_echo
    with trio.fail_after(60):
        async with mcp_session(secured, "user") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert names == ["ask_echo", "memory_search", "memory_store"]
            first = await client.call_tool("ask_echo", {"question": "hello over MCP"})
            assert not first.isError
            assert "hello over MCP" in first.content[0].text  # type: ignore[union-attr]
            assert first.structuredContent is not None
            conversation = first.structuredContent["conversation_id"]
            again = await client.call_tool(
                "ask_echo", {"question": "and again", "conversation_id": conversation}
            )
            assert again.structuredContent is not None
            assert again.structuredContent["conversation_id"] == conversation

            stored = await client.call_tool(
                "memory_store",
                {
                    "name": "Ada Lovelace",
                    "entity_type": "person",
                    "observations": ["wrote the first published program"],
                },
            )
            assert not stored.isError, stored.content
            found = await client.call_tool("memory_search", {"query": "first program"})
            assert found.structuredContent is not None
            assert found.structuredContent["results"][0]["name"] == "Ada Lovelace"
            bad = await client.call_tool("ask_echo", {"question": ""})
            assert bad.isError
            assert "question" in bad.content[0].text  # type: ignore[union-attr]

        async with mcp_session(secured, "readonly") as client:
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert names == ["memory_search"]
            found = await client.call_tool("memory_search", {"query": "Ada"})
            assert not found.isError
            with pytest.raises(McpError, match="needs the user role"):
                await client.call_tool(
                    "memory_store", {"name": "x", "entity_type": "y", "observations": []}
                )
            with pytest.raises(McpError, match="needs the user role"):
                await client.call_tool("ask_echo", {"question": "hi"})

        async with httpx.AsyncClient(base_url=secured.url, headers=secured.headers("admin")) as c:
            messages = (await c.get(f"/api/v1/conversations/{conversation}")).json()["messages"]
            assert [m["sender"] for m in messages] == ["client:user-key", "echo"] * 2
            metrics = (await c.get(secured.info.metrics_url or "")).text
    assert 'caxton_mcp_server_requests_total{method="tools/call",outcome="ok",protocol="mcp"}' in (
        metrics
    )
    audit = [
        json.loads(line)
        for line in (secured.data_dir / "audit.log").read_text().splitlines()
        if '"protocol":"mcp"' in line
    ]
    assert {(a["target"], a["identity"], a["status"]) for a in audit} >= {
        ("tools/call ask_echo", "user-key", 200),
        ("tools/call memory_store", "user-key", 200),
        ("tools/call memory_store", "readonly-key", 403),
    }


async def test_bad_input_gets_clear_errors(with_echo: Secured) -> None:
    secured = with_echo
    headers = {**secured.headers("user"), "Accept": "application/json, text/event-stream"}
    with trio.fail_after(30):
        async with httpx.AsyncClient(base_url=secured.url, headers=headers) as c:

            async def post(body: bytes | str, **extra: str) -> httpx.Response:
                data = body.encode() if isinstance(body, str) else body
                content_type = {"Content-Type": "application/json"}
                return await c.post("/mcp", content=data, headers={**content_type, **extra})

            nobody = await c.post("/mcp", json={}, headers={"X-API-Key": ""})
            assert nobody.status_code == 401
            assert nobody.json()["error"]["code"]

            cases = {
                "{not json": (400, -32700),
                "[]": (400, -32600),
                '{"jsonrpc": "1.0", "id": 1, "method": "ping"}': (400, -32600),
                '{"jsonrpc": "2.0", "id": true, "method": "ping"}': (400, -32600),
                '{"jsonrpc": "2.0", "id": 3, "method": "resources/list"}': (200, -32601),
                '{"jsonrpc": "2.0", "id": 4, "method": "tools/call", "params": {}}': (200, -32602),
                '{"jsonrpc": "2.0", "id": 5, "method": "tools/call", "params": [1]}': (200, -32602),
                '{"jsonrpc": "2.0", "id": 6, "method": "tools/call",'
                ' "params": {"name": "ask_nobody"}}': (200, -32602),
            }
            for body, (status, code) in cases.items():
                answer = await post(body)
                assert answer.status_code == status, body
                error = answer.json()["error"]
                assert error["code"] == code, body
                assert error["message"]
                assert error["data"]["request_id"] == answer.headers["X-Request-ID"]

            unknown_tool = await post(
                '{"jsonrpc": "2.0", "id": 6, "method": "tools/call",'
                ' "params": {"name": "ask_nobody"}}'
            )
            assert "ask_echo" in unknown_tool.json()["error"]["message"]  # names the real ones
            old = await post(
                '{"jsonrpc": "2.0", "id": 7, "method": "ping"}', **{"MCP-Protocol-Version": "1999"}
            )
            assert old.status_code == 400
            assert "2025-06-18" in old.json()["error"]["message"]
            note = await post('{"jsonrpc": "2.0", "method": "notifications/initialized"}')
            assert note.status_code == 202
            huge = '{"jsonrpc": "2.0", "id": 8, "method": "ping", "pad": "' + "x" * 70_000 + '"}'
            too_big = await post(huge)
            assert too_big.status_code == 413
            assert too_big.json()["error"]["code"]
            assert (await c.get("/mcp")).status_code == 405
            # and the endpoint still answers
            ping = await post('{"jsonrpc": "2.0", "id": 9, "method": "ping"}')
            assert ping.json() == {"jsonrpc": "2.0", "id": 9, "result": {}}


CAXTON = str(Path(sys.executable).parent / "caxton")


async def test_caxton_mcp_proxies_stdio_clients_to_the_server(with_echo: Secured) -> None:
    """The SDK's stdio client runs ``caxton mcp`` as desktop and IDE clients do."""
    secured = with_echo
    env = {"CAXTON_URL": secured.url, "CAXTON_API_KEY": secured.keys["user"]}
    params = StdioServerParameters(command=CAXTON, args=["mcp"], env=env)
    with trio.fail_after(60):
        async with stdio_client(params) as (read, write), ClientSession(read, write) as client:
            info = await client.initialize()
            assert info.serverInfo.name == "caxton"
            names = [tool.name for tool in (await client.list_tools()).tools]
            assert names == ["ask_echo", "memory_search", "memory_store"]
            async with trio.open_nursery() as nursery:  # concurrent calls through one proxy
                replies: list[str] = []

                async def ask(text: str) -> None:
                    answer = await client.call_tool("ask_echo", {"question": text})
                    replies.append(answer.content[0].text)  # type: ignore[union-attr]

                for text in ("one", "two", "three"):
                    nursery.start_soon(ask, text)
            # the echo agent answers with the message it got
            assert sorted(json.loads(reply)["content"] for reply in replies) == [
                "one",
                "three",
                "two",
            ]

        # a refused key and a server that is not there are errors that say what to fix
        refused = StdioServerParameters(
            command=CAXTON, args=["mcp"], env={**env, "CAXTON_API_KEY": "cx_wrong"}
        )
        async with stdio_client(refused) as (read, write), ClientSession(read, write) as client:
            with pytest.raises(McpError, match="CAXTON_API_KEY"):
                await client.initialize()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            gone = f"http://127.0.0.1:{sock.getsockname()[1]}"
        nowhere = StdioServerParameters(
            command=CAXTON, args=["mcp"], env={**env, "CAXTON_URL": gone}
        )
        async with stdio_client(nowhere) as (read, write), ClientSession(read, write) as client:
            with pytest.raises(McpError, match="cannot connect to the Caxton server"):
                await client.initialize()

        # garbage on stdin is reported on stderr; stdout stays JSON-RPC
        lines = b'not json\n{"jsonrpc": "2.0", "id": 1, "method": "ping"}\n'
        done = await trio.run_process(
            [CAXTON, "mcp"],
            stdin=lines,
            capture_stdout=True,
            capture_stderr=True,
            env={**os.environ, **env},
        )
        assert done.returncode == 0
        assert json.loads(done.stdout) == {"jsonrpc": "2.0", "id": 1, "result": {}}
        assert b"not a JSON-RPC message" in done.stderr
