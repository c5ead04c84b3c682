"""``http_client`` over real loopback sockets: allowed ports only, checked addresses, no forged
``Host`` or credentials from the model, no cookie carried between calls (issue #13)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
import trio

from caxton.agents.spec import AgentSpec, parse_agent_spec
from caxton.agents.tools import ToolDeps, ToolFailed, builtin_tools
from caxton.agents.tools.base import ToolCallContext
from caxton.llm.service import LLMService
from caxton.messages import Message
from caxton.metrics import Metrics


class SiteServer:
    """A loopback HTTP/1.1 server that records each request head and sets a cookie."""

    def __init__(self) -> None:
        self.heads: list[dict[str, str]] = []
        self.port = 0

    async def run(self, *, task_status: trio.TaskStatus[SiteServer]) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        task_status.started(self)
        await trio.serve_listeners(self.handle, listeners)

    async def handle(self, stream: trio.SocketStream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return
            data += chunk
        lines = data.split(b"\r\n\r\n", 1)[0].decode().split("\r\n")
        head = {"request-line": lines[0]}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            head[name.strip().lower()] = value.strip()
        self.heads.append(head)
        body = b"hello"
        await stream.send_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
            b"Set-Cookie: session=agent-secret; Path=/\r\n"
            b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(body), body)
        )
        await stream.aclose()


class FakeResolver(trio.abc.HostnameResolver):
    """The system resolver, plus one name that resolves to loopback as a LAN name might."""

    async def getaddrinfo(
        self, host: Any, port: Any, family: Any = 0, type: Any = 0, proto: Any = 0, flags: Any = 0
    ) -> Any:
        name = host.decode() if isinstance(host, bytes) else host
        if name == "intranet.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", int(port)))]
        return await trio.to_thread.run_sync(
            socket.getaddrinfo, host, port, family, type, proto, flags
        )

    async def getnameinfo(self, sockaddr: Any, flags: Any) -> Any:
        raise NotImplementedError


def agent(name: str, allowed: list[str]) -> AgentSpec:
    hosts = ", ".join(f'"{h}"' for h in allowed)
    spec = parse_agent_spec(
        f'name = "{name}"\nsystem_prompt = "x"\ntools = ["http_client"]\n'
        f'[tool_config.http_client]\nallowed_hosts = [{hosts}]\ntimeout = "5s"\n',
        source="<test>",
    )
    assert isinstance(spec, AgentSpec)
    return spec


@pytest.fixture
async def site(nursery: trio.Nursery) -> SiteServer:
    server: SiteServer = await nursery.start(SiteServer().run)
    return server


@pytest.fixture
async def fetch(nursery: trio.Nursery) -> Any:
    trio.socket.set_custom_hostname_resolver(FakeResolver())
    llm: LLMService = await nursery.start(LLMService(Metrics()).run)
    tool = builtin_tools(ToolDeps(http=llm.tools_http))["http_client"]

    async def call(spec: AgentSpec, url: str, **extra: Any) -> dict[str, Any]:
        message = Message(performative="request", sender="user", receiver=spec.name, content="x")
        context = ToolCallContext(spec=spec, message=message)
        with trio.fail_after(10):
            result: dict[str, Any] = json.loads(await tool.run({"url": url, **extra}, context))
        return result

    return call


async def test_only_the_port_an_entry_names_is_reachable(site: SiteServer, fetch: Any) -> None:
    url = f"http://127.0.0.1:{site.port}/x"
    assert (await fetch(agent("a", [f"127.0.0.1:{site.port}"]), url))["status"] == 200
    assert (await fetch(agent("a", [f"localhost:{site.port}"]), f"http://localhost:{site.port}/"))[
        "status"
    ] == 200
    for allowed in (["127.0.0.1"], [f"127.0.0.1:{site.port + 1}"], ["*.0.0.1"]):
        with pytest.raises(ToolFailed, match=r"is not an allowed host and port"):
            await fetch(agent("a", allowed), url)
    assert len(site.heads) == 2


async def test_a_name_resolving_to_a_private_address_needs_an_entry_that_allows_it(
    site: SiteServer, fetch: Any
) -> None:
    url = f"http://intranet.test:{site.port}/inside"
    with pytest.raises(ToolFailed, match=r"resolves to 127\.0\.0\.1, a loopback, private"):
        await fetch(agent("a", [f"intranet.test:{site.port}"]), url)
    assert site.heads == []
    result = await fetch(agent("a", [f"private:intranet.test:{site.port}"]), url)
    assert result["status"] == 200
    # sent to the address that was checked, with the name the URL gave
    assert site.heads[0]["host"] == f"intranet.test:{site.port}"
    assert site.heads[0]["request-line"] == "GET /inside HTTP/1.1"


async def test_the_model_cannot_set_host_credentials_or_hop_headers(
    site: SiteServer, fetch: Any
) -> None:
    forged = {
        "Host": "admin.internal",
        "Authorization": "Bearer stolen",
        "Cookie": "session=other-agent",
        "Proxy-Authorization": "Basic eA==",
        "Transfer-Encoding": "chunked",
        "X-Request-Note": "kept",
    }
    spec = agent("a", [f"127.0.0.1:{site.port}"])
    result = await fetch(spec, f"http://127.0.0.1:{site.port}/", headers=forged)
    assert result["status"] == 200
    (head,) = site.heads
    assert head["host"] == f"127.0.0.1:{site.port}"
    assert head["x-request-note"] == "kept"
    for dropped in ("authorization", "cookie", "proxy-authorization", "transfer-encoding"):
        assert dropped not in head
    with pytest.raises(ToolFailed, match="credentials stay out of URLs"):
        await fetch(spec, f"http://user:pw@127.0.0.1:{site.port}/")


async def test_no_cookie_is_carried_to_the_next_call(site: SiteServer, fetch: Any) -> None:
    allowed = [f"127.0.0.1:{site.port}"]
    for name in ("first", "second", "first"):
        await fetch(agent(name, allowed), f"http://127.0.0.1:{site.port}/")
    assert len(site.heads) == 3
    assert not any("cookie" in head for head in site.heads)
