"""MCP servers that misbehave in ways that cost Caxton: replies too large to hold, and stdio
servers that crash (issue #19). The servers are ``tools/mcp_demo_server.py`` (FastMCP)."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import pytest
import trio
from config_agent_servers import agent_toml, openai_url
from test_mcp_tools import DEMO, ask, start_http_demo, stdio_server, tool_rule

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from pathlib import Path

MIB = 1024 * 1024


@attrs.define
class CountingProxy:
    """A TCP proxy that counts the bytes it passes from the server to the client, and those of
    each connection the client hung up on while the server was still writing."""

    port: int = 0
    to_client: int = 0
    cut_after: list[int] = attrs.field(factory=list)

    async def serve(self, target: int, *, task_status: trio.TaskStatus[None]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started()
        await trio.serve_listeners(functools.partial(self._relay, target), listeners)

    async def _relay(self, target: int, client: trio.SocketStream) -> None:
        server = await trio.open_tcp_stream("127.0.0.1", target)
        server_done = False
        passed = 0
        async with client, server, trio.open_nursery() as nursery:

            async def upstream() -> None:
                with contextlib.suppress(trio.BrokenResourceError):
                    async for data in client:
                        await server.send_all(data)
                if not server_done:  # the client hung up first
                    self.cut_after.append(passed)
                nursery.cancel_scope.cancel()

            async def downstream() -> None:
                nonlocal server_done, passed
                try:
                    async for data in server:
                        self.to_client += len(data)
                        passed += len(data)
                        await client.send_all(data)
                    server_done = True
                except trio.BrokenResourceError:
                    self.cut_after.append(passed)
                nursery.cancel_scope.cancel()

            nursery.start_soon(upstream)
            nursery.start_soon(downstream)


# The SDK's streamable HTTP client stops reading a POST's SSE response once the reply came and
# leaves its httpx generators to the garbage collector, where trio reports them.
@pytest.mark.filterwarnings(
    "ignore:Exception ignored in. <async_generator object:pytest.PytestUnraisableExceptionWarning"
)
async def test_a_reply_past_max_response_size_is_cut_off_and_becomes_a_tool_error(
    nursery: trio.Nursery,
    start_llm: Callable[..., Awaitable[object]],
    start_caxton: Callable[..., Awaitable[object]],
) -> None:
    # the demo server twice: replies as SSE streams ("sse"), and as one JSON body ("json")
    proxies: dict[str, CountingProxy] = {}
    for name, mode in (("sse", "http"), ("json", "http-json")):
        url = await start_http_demo(nursery, mode)
        proxies[name] = CountingProxy()
        await nursery.start(proxies[name].serve, int(url.rsplit(":", 1)[1].split("/")[0]))
    sizes = {"sse": 50, "json": 20}  # MiB
    rules = [tool_rule(f"T-HUGE-{n}", f"mcp_{n}_huge", {"mib": sizes[n]}) for n in proxies]
    rules += [tool_rule(f"T-ADD-{n}", f"mcp_{n}_add", {"a": 2, "b": 3}) for n in proxies]
    rules.append(tool_rule("T-MID", "mcp_json_huge", {"mib": 2}))
    llm = await start_llm({"rules": rules})
    servers = "".join(
        f'\n[[mcp_servers]]\nname = "{name}"\nurl = "http://127.0.0.1:{proxy.port}/mcp"\n'
        'tools = ["huge", "add"]\nmax_response_size = "1MiB"\n'
        for name, proxy in proxies.items()
    )
    other = agent_toml("other", openai_url(llm), extra=servers.replace("1MiB", "8MiB"))
    big = agent_toml("big", openai_url(llm), extra=servers)
    server: Any = await start_caxton({"big.toml": big, "other.toml": other})
    with trio.fail_after(60):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
            for name, proxy in proxies.items():
                cuts = len(proxy.cut_after)
                failed = json.loads(await ask(client, "big", f"T-HUGE-{name}"))
                assert failed["error"]["code"] == "TOOL_FAILED"
                message = failed["error"]["message"]
                assert "larger than max_response_size (1MiB)" in message, message
                assert "raise max_response_size" in message
                # Caxton hung up on the server, which had twice the size to write (the text
                # and the structured result): what passed is the bound and socket buffers
                while len(proxy.cut_after) == cuts:
                    await trio.sleep(0.05)
                assert proxy.to_client < 20 * MIB, proxy.cut_after
                # the session goes on: the next call is answered
                assert await ask(client, "big", f"T-ADD-{name}") == "sum=5"
            view = (await client.get("/api/v1/agents/big")).json()
            for state in view["mcp_servers"]:
                assert state["state"] == "ready"
                assert "max_response_size" in state["error"]
            # a 2 MiB reply: past this agent's bound, within the other agent's
            assert "max_response_size" in await ask(client, "big", "T-MID")
            assert (await ask(client, "other", "T-MID")).startswith("xxxxxxxx")
            metrics = (await client.get(server.metrics_url)).text
            too_large = 'caxton_mcp_client_tool_calls_total{agent="big",outcome="too_large"'
            assert f'{too_large},server="sse"}} 1.0' in metrics


async def test_a_crashed_stdio_server_is_restarted_and_one_that_always_crashes_is_not_looped(
    start_llm: Callable[..., Awaitable[object]],
    start_caxton: Callable[..., Awaitable[object]],
    tmp_path: Path,
) -> None:
    llm = await start_llm({"rules": [tool_rule("T-PID", "mcp_demo_pid", {})]})
    starts, started_once = tmp_path / "starts", tmp_path / "started-once"
    # the demo server the first time, then a command that exits at every start
    script = (
        f"echo started >> {starts}; if [ -e {started_once} ]; then echo no-db >&2; exit 7; fi; "
        f"touch {started_once}; exec {sys.executable} {DEMO} stdio"
    )
    crashing = (
        f'\n[[mcp_servers]]\nname = "doomed"\ncommand = "sh"\nargs = ["-c", "{script}"]\n'
        'tools = ["pid"]\nmax_restarts = 2\n'
    )
    failing = '\n[[mcp_servers]]\nname = "never"\ncommand = "false"\n'
    toml = agent_toml("phoenix", openai_url(llm), extra=stdio_server("demo") + crashing + failing)
    server: Any = await start_caxton({"phoenix.toml": toml})
    with trio.fail_after(40):
        async with httpx.AsyncClient(base_url=server.api_urls[0], timeout=30) as client:
            first = int((await ask(client, "phoenix", "T-PID")).removeprefix("pid="))
            os.kill(first, signal.SIGKILL)
            while (demo := await server_state(client, "demo"))["restarts"] != 1 or demo[
                "state"
            ] != "ready":
                assert demo["state"] in ("ready", "failed", "restarting"), demo
                await trio.sleep(0.05)
            second = int((await ask(client, "phoenix", "T-PID")).removeprefix("pid="))
            assert second != first
            assert demo["pid"] == second
            logs = (await client.get("/api/v1/agents/phoenix/logs", params={"tail": 50})).text
            assert "restarting in 0.5s (restart 1 of 5 within 10 minutes)" in logs

            # once it exits, it exits at every start: restarted twice with backoff (0.5s,
            # then 1s), then left failed until the agent reloads
            os.kill((await server_state(client, "doomed"))["pid"], signal.SIGKILL)
            # the last start's failure is reported first ("failed", its exit), then the
            # supervisor's verdict on the spent budget: wait for the verdict (fail_after bounds
            # the wait if it never comes)
            while (doomed := await server_state(client, "doomed"))["state"] != "failed" or (
                "stays failed until the agent reloads" not in (doomed["error"] or "")
            ):
                await trio.sleep(0.05)
            assert doomed["restarts"] == 2
            assert "exited with code 7; stderr: no-db" in doomed["error"]
            assert doomed["pid"] is None
            await trio.sleep(1.0)  # no further start comes
            assert starts.read_text().count("started") == 3
            assert (await server_state(client, "doomed"))["restarts"] == 2
            metrics = (await client.get(server.metrics_url)).text
            restarts = 'caxton_mcp_client_server_restarts_total{agent="phoenix",server="doomed"}'
            assert f"{restarts} 2.0" in metrics
            # one that failed its first start offers no tools: not restarted at all
            never = await server_state(client, "never")
            assert (never["state"], never["restarts"]) == ("failed", 0)


async def server_state(client: httpx.AsyncClient, name: str) -> dict[str, Any]:
    view = (await client.get("/api/v1/agents/phoenix")).json()
    found: dict[str, Any] = next(s for s in view["mcp_servers"] if s["name"] == name)
    return found
