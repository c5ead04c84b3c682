"""Config agents calling tools of MCP servers written with the ``mcp`` SDK (issue #19 item 1).

The servers are ``tools/mcp_demo_server.py`` (FastMCP), over stdio (a child process each agent
version owns) and over streamable HTTP (a separate process); the model is the scripted LLM
server, which answers a tool result by echoing it, so a reply shows what the tool returned.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from config_agent_servers import agent_toml, openai_url
from servers import REPO

if TYPE_CHECKING:
    from pathlib import Path

DEMO = str(REPO / "tools" / "mcp_demo_server.py")


def tool_rule(match: str, name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {"match": match, "tool_call": {"name": name, "arguments": arguments, "id": "c1"}}


def stdio_server(name: str, *, extra: str = "") -> str:
    return (
        f'\n[[mcp_servers]]\nname = "{name}"\ncommand = "{sys.executable}"\n'
        f'args = ["{DEMO}", "stdio"]\n{extra}'
    )


async def start_http_demo(nursery: trio.Nursery, mode: str = "http") -> str:
    """The demo server over streamable HTTP in a process of its own; its endpoint URL."""
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process, [sys.executable, DEMO, mode], stdout=subprocess.PIPE, check=False
        )
    )
    assert process.stdout is not None
    line = b""
    while not line.endswith(b"\n"):
        line += await process.stdout.receive_some(64)
    port = int(line.split()[1])
    return f"http://127.0.0.1:{port}/mcp"


async def ask(client: httpx.AsyncClient, agent: str, content: str) -> str:
    response = await client.post(f"/api/v1/agents/{agent}/messages", json={"content": content})
    assert response.status_code == 200, response.text
    reply: str = response.json()["content"]
    return reply


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


# The SDK's streamable HTTP client stops reading a POST's SSE response once the reply came and
# leaves its httpx generators to the garbage collector, where trio reports them.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object:pytest.PytestUnraisableExceptionWarning"
)
async def test_stdio_and_http_mcp_tools_and_misbehaving_servers(
    nursery: trio.Nursery, start_llm, start_caxton
) -> None:
    url = await start_http_demo(nursery)
    llm = await start_llm(
        {
            "rules": [
                tool_rule("T-LOCAL", "mcp_demo_add", {"a": 2, "b": 3}),
                tool_rule("T-REMOTE", "mcp_web_add", {"a": 20, "b": 22}),
                tool_rule("T-DOTTED", "mcp_demo_read_file", {"path": "notes.txt"}),
                tool_rule("T-HANG", "mcp_junk_sleep", {"seconds": 30}),
                tool_rule("T-FAIL", "mcp_demo_fail", {"reason": "no such record"}),
                tool_rule("T-GARBAGE", "mcp_junk_garbage", {}),
                tool_rule("T-CRASH", "mcp_demo_crash", {}),
            ]
        }
    )
    servers = (
        stdio_server(
            "demo",
            extra='timeout = "1s"\ntools = ["add", "read.file", "fail", "crash"]\nmax_restarts = 0',
        )
        + stdio_server("junk", extra='timeout = "1s"\ntools = ["garbage", "sleep"]\n')
        + f'\n[[mcp_servers]]\nname = "web"\nurl = "{url}"\ntools = ["add"]\n'
        + '\n[[mcp_servers]]\nname = "missing"\ncommand = "/nonexistent/mcp-server"\n'
        + '\n[[mcp_servers]]\nname = "mute"\ncommand = "sleep"\nargs = ["60"]\n'
        + 'startup_timeout = "1s"\n'
        + '\n[[mcp_servers]]\nname = "keyed"\ncommand = "true"\n'
        + 'env = { TOKEN = "${CAXTON_TEST_UNSET_MCP_TOKEN}" }\n'
    )
    toml = agent_toml("calc", openai_url(llm), tools=("memory_search",), extra=servers)
    server = await start_caxton({"calc.toml": toml})
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
            view = (await client.get("/api/v1/agents/calc")).json()
            states = {s["name"]: s for s in view["mcp_servers"]}
            assert states["demo"]["state"] == "ready"
            assert states["demo"]["transport"] == "stdio"
            assert states["demo"]["tools"] == [  # the allow-list; '.' is not a valid name
                "mcp_demo_add",
                "mcp_demo_crash",
                "mcp_demo_fail",
                "mcp_demo_read_file",
            ]
            assert states["web"]["state"] == "ready"
            assert states["web"]["tools"] == ["mcp_web_add"]
            assert states["missing"]["state"] == "failed"
            assert "cannot start the command" in states["missing"]["error"]
            assert states["mute"]["state"] == "failed"
            assert "within 1s" in states["mute"]["error"]
            assert states["keyed"]["state"] == "failed"  # nothing started without its secret
            assert "env.TOKEN" in states["keyed"]["error"]
            assert "CAXTON_TEST_UNSET_MCP_TOKEN" in states["keyed"]["error"]
            assert states["keyed"]["pid"] is None
            assert "memory_search" in view["tools"]
            assert "mcp_demo_add" in view["tools"]

            # the tools offered to the model carry the servers' own schemas
            assert await ask(client, "calc", "T-LOCAL") == "sum=5"
            offered = {t["function"]["name"]: t for t in llm.requests[-2].body["tools"]}
            assert set(offered["mcp_demo_add"]["function"]["parameters"]["required"]) == {"a", "b"}
            assert all(len(name) <= 64 for name in offered)
            assert await ask(client, "calc", "T-REMOTE") == "sum=42"
            assert await ask(client, "calc", "T-DOTTED") == "read notes.txt"

            # a server error, a hang and garbage are tool errors the model reads
            failed = json.loads(await ask(client, "calc", "T-FAIL"))
            assert failed["error"]["code"] == "TOOL_FAILED"
            assert "no such record" in failed["error"]["message"]
            junk = json.loads(await ask(client, "calc", "T-GARBAGE"))
            assert "did not answer within 1s" in junk["error"]["message"]
            hung = json.loads(await ask(client, "calc", "T-HANG"))
            assert "did not answer within 1s" in hung["error"]["message"]
            logs = (await client.get("/api/v1/agents/calc/logs", params={"tail": 200})).text
            assert "not JSON-RPC" in logs

            # a server that crashes: its state says so, the other servers keep working
            pid = states["demo"]["pid"]
            crashed = json.loads(await ask(client, "calc", "T-CRASH"))
            assert crashed["error"]["code"] == "TOOL_FAILED"
            while alive(pid):
                await trio.sleep(0.05)
            while True:
                view = (await client.get("/api/v1/agents/calc")).json()
                demo = next(s for s in view["mcp_servers"] if s["name"] == "demo")
                assert demo["state"] == "failed"
                if "exited with code 3" in demo["error"]:
                    break
                await trio.sleep(0.05)
            again = json.loads(await ask(client, "calc", "T-LOCAL"))
            assert "MCP server 'demo' is failed" in again["error"]["message"]
            assert await ask(client, "calc", "T-REMOTE") == "sum=42"

            metrics = (await client.get(server.metrics_url or "")).text
            assert 'caxton_mcp_client_tool_calls_total{agent="calc",outcome="ok",server="web"}' in (
                metrics
            )


@pytest.mark.parametrize("how", ["reload", "delete"])
async def test_stdio_servers_belong_to_their_agent_version(
    start_llm, start_caxton, agents_dir: Path, tmp_path: Path, how: str
) -> None:
    marker = tmp_path / "sleeping"
    llm = await start_llm(
        {
            "rules": [
                tool_rule("T-PID", "mcp_demo_pid", {}),
                tool_rule("T-HANG", "mcp_demo_sleep", {"seconds": 60, "marker": str(marker)}),
            ]
        }
    )
    toml = agent_toml("owner", openai_url(llm), extra=stdio_server("demo"))
    server = await start_caxton({"owner.toml": toml}, agents__drain_timeout="1s")
    with trio.fail_after(40):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
            first = int((await ask(client, "owner", "T-PID")).removeprefix("pid="))
            assert alive(first)
            if how == "reload":
                # blue-green: the new version starts its own server before the old one stops
                (agents_dir / "owner.toml").write_text(toml.replace('"1.0.0"', '"1.1.0"'))
                while (await client.get("/api/v1/agents/owner")).json()["version"] != "1.1.0":
                    await trio.sleep(0.05)
                second = int((await ask(client, "owner", "T-PID")).removeprefix("pid="))
                assert second != first
                while alive(first):
                    await trio.sleep(0.05)
                assert alive(second)
                return
            # remove the agent while its MCP server is in the middle of a call
            replies: list[httpx.Response] = []

            async def call() -> None:
                replies.append(
                    await client.post("/api/v1/agents/owner/messages", json={"content": "T-HANG"})
                )

            async with trio.open_nursery() as calls:
                calls.start_soon(call)
                while not marker.exists():
                    await trio.sleep(0.02)
                assert int(marker.read_text()) == first
                (agents_dir / "owner.toml").unlink()  # the watcher stops the version
            while alive(first):
                await trio.sleep(0.05)
            assert replies[0].status_code != 200 or "error" in replies[0].text
