"""The built-in tools of config agents and the WASM-agent-as-a-tool adapter.

``memory_search`` and ``memory_store`` use the agent's ``[memory]`` scope: with ``scope =
"agent"`` the agent sees and writes only its own entities; with ``workspace`` or ``global`` it
sees everything visible to it and writes with that scope. ``send_message`` asks another agent
(by name) or a capability and returns its reply. ``http_client`` fetches URLs on the hosts in
``[tool_config.http_client] allowed_hosts`` only (host and port, at a checked address, without
the headers a model may not set; :mod:`caxton.agents.tools.http_rules`). ``wasm:<name>``
sends the model's input to that WASM agent and returns its reply.
"""

from __future__ import annotations

import json
from typing import Any, Final, Protocol

import attrs
import httpx
import trio

from caxton.agents.tools.base import Param, Tool, ToolCallContext, ToolFailed
from caxton.agents.tools.http_rules import (
    IPAddress,
    Target,
    UrlRefused,
    check_url,
    ip_literal,
    refused_address,
    request_headers,
)
from caxton.errors import CaxtonError
from caxton.memory import MemoryService
from caxton.memory.types import NewEntity, Scope
from caxton.messages import PERFORMATIVES, Message
from caxton.messaging.envelope import parse_envelope

#: Defaults of ``[tool_config.http_client]``.
HTTP_TIMEOUT_S: Final = 10.0
HTTP_MAX_CONNECTIONS: Final = 4
#: Bytes of a fetched body handed to the model; the rest is cut, and the result says so.
HTTP_MAX_RESPONSE_BYTES: Final = 256 * 1024
#: How long ``send_message`` and ``wasm:`` tools wait for the other agent.
ASK_TIMEOUT_S: Final = 30.0


class MessageAsker(Protocol):
    """Delivers a message an agent sends (by receiver or capability) and waits for the reply."""

    async def ask_for_agent(self, message: Message, *, timeout_s: float) -> Message:
        """The reply envelope; a ``failure`` performative says why it could not be answered
        (including a send refused by the router's per-agent and per-conversation bounds)."""
        ...


class AgentKinds(Protocol):
    """Which kind of agent a name is (``wasm`` / ``config``), or ``None`` when unknown."""

    def kind_of(self, name: str) -> str | None: ...


@attrs.frozen(kw_only=True)
class ToolDeps:
    """What the built-in tools use, handed in when the server builds the config runtime (a
    service left out, as in tests of the tool schemas, makes its tools fail when called)."""

    max_message_size: int = 1_048_576
    memory: MemoryService | None = None
    asker: MessageAsker | None = None
    agents: AgentKinds | None = None
    http: httpx.AsyncClient | None = None
    http_limiters: dict[str, trio.CapacityLimiter] = attrs.Factory(dict)


def builtin_tools(deps: ToolDeps) -> dict[str, Tool]:
    """The built-in tools by name."""
    tools = [
        Tool(
            name="memory_search",
            description="Search long-term memory for entities related to a query; returns "
            "the best matches with their observations and similarity.",
            params=(
                Param(name="query", type="string", description="What to look for.", required=True),
                Param(name="limit", type="integer", description="At most this many (1-50)."),
            ),
            run=lambda args, ctx: _memory_search(deps, args, ctx),
        ),
        Tool(
            name="memory_store",
            description="Remember facts: store observations about a named entity (merged "
            "into the entity when it exists).",
            params=(
                Param(name="name", type="string", description="Entity name.", required=True),
                Param(
                    name="entity_type",
                    type="string",
                    description="Kind of entity, e.g. person, project, fact.",
                    required=True,
                ),
                Param(
                    name="observations",
                    type="string_list",
                    description="Facts about the entity, one per item.",
                    required=True,
                ),
            ),
            run=lambda args, ctx: _memory_store(deps, args, ctx),
        ),
        Tool(
            name="send_message",
            description="Ask another agent, by name (to) or by capability, and get its reply.",
            params=(
                Param(name="content", type="string", description="The message.", required=True),
                Param(name="to", type="string", description="Agent name."),
                Param(name="capability", type="string", description="A capability to ask."),
                Param(
                    name="performative",
                    type="string",
                    description="FIPA performative (default request).",
                    choices=PERFORMATIVES,
                ),
            ),
            run=lambda args, ctx: _send_message(deps, args, ctx),
        ),
        Tool(
            name="http_client",
            description="Fetch a URL over HTTP(S) (only hosts this agent is allowed to reach); "
            "returns the status and the body text.",
            params=(
                Param(name="url", type="string", description="http(s) URL.", required=True),
                Param(
                    name="method",
                    type="string",
                    description="HTTP method (default GET).",
                    choices=("GET", "POST", "PUT", "DELETE", "HEAD"),
                ),
                Param(name="body", type="string", description="Request body, for POST/PUT."),
                Param(name="headers", type="object", description="Extra request headers."),
            ),
            run=lambda args, ctx: _http_client(deps, args, ctx),
        ),
    ]
    return {tool.name: tool for tool in tools}


def wasm_tool(deps: ToolDeps, agent: str) -> Tool:
    """``wasm:<agent>``: send the input to that WASM agent, return its reply."""
    return Tool(
        name=f"wasm:{agent}",
        description=f"Run the WASM agent {agent!r} on an input and return its reply.",
        params=(
            Param(
                name="input", type="string", description="Text sent to the agent.", required=True
            ),
        ),
        run=lambda args, ctx: _wasm(deps, agent, args, ctx),
    )


def tools_for(spec_tools: tuple[str, ...], deps: ToolDeps) -> dict[str, Tool]:
    """The tools an agent file lists, by the name the model calls them (function name)."""
    builtins = builtin_tools(deps)
    chosen: dict[str, Tool] = {}
    for name in spec_tools:
        tool = wasm_tool(deps, name.removeprefix("wasm:")) if name.startswith("wasm:") else None
        tool = tool or builtins.get(name)
        if tool is not None:
            chosen[tool.function_name] = tool
    return chosen


# -- memory --------------------------------------------------------------------------------


def _memory(deps: ToolDeps) -> MemoryService:
    if deps.memory is None:
        raise ToolFailed("memory is not available on this server")
    return deps.memory


async def _memory_search(deps: ToolDeps, args: dict[str, Any], ctx: ToolCallContext) -> str:
    memory = _memory(deps)
    search = ctx.spec.memory.search
    limit = max(1, min(50, int(args.get("limit") or search.max_results)))
    own_only = ctx.spec.memory.scope == Scope.AGENT.value
    hits = await memory.search(
        args["query"],
        limit=limit,
        min_similarity=search.similarity_threshold,
        scope=Scope.AGENT if own_only else None,
        agent=ctx.agent,
    )
    found = [hit.brief() for hit in hits]
    return json.dumps({"results": found}, ensure_ascii=False)


async def _memory_store(deps: ToolDeps, args: dict[str, Any], ctx: ToolCallContext) -> str:
    memory = _memory(deps)
    scope = Scope(ctx.spec.memory.scope)
    entity = await memory.create_entity(
        NewEntity(
            name=args["name"],
            entity_type=args["entity_type"],
            observations=tuple(args["observations"]),
            scope=scope,
            agent=ctx.agent if scope is Scope.AGENT else None,
        )
    )
    return json.dumps(
        {"stored": entity.name, "observations": len(entity.observations)}, ensure_ascii=False
    )


# -- messaging -----------------------------------------------------------------------------


async def _ask(deps: ToolDeps, message: Message) -> str:
    if deps.asker is None:
        raise ToolFailed("messaging is not available on this server")
    reply = await deps.asker.ask_for_agent(message, timeout_s=ASK_TIMEOUT_S)
    content = reply.content
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if reply.performative in ("failure", "not_understood"):
        raise ToolFailed(f"{reply.sender or 'the router'} answered {reply.performative}: {text}")
    return text


async def _send_message(deps: ToolDeps, args: dict[str, Any], ctx: ToolCallContext) -> str:
    to, capability = args.get("to"), args.get("capability")
    if (to is None) == (capability is None):
        raise ToolFailed("send_message: give exactly one of 'to' (an agent) or 'capability'")
    if to == ctx.agent:
        raise ToolFailed("send_message: an agent cannot ask itself")
    envelope = {
        "receiver": to,
        "capability": capability,
        "content": args["content"],
        "performative": args.get("performative", "request"),
    }
    return await _ask(deps, _outgoing(deps, ctx, envelope))


async def _wasm(deps: ToolDeps, agent: str, args: dict[str, Any], ctx: ToolCallContext) -> str:
    kind = deps.agents.kind_of(agent) if deps.agents is not None else None
    if kind is None:
        raise ToolFailed(f"wasm:{agent}: no agent named {agent!r} is deployed")
    if kind != "wasm":
        raise ToolFailed(f"wasm:{agent}: {agent!r} is a {kind} agent, not a WASM agent")
    return await _ask(deps, _outgoing(deps, ctx, {"receiver": agent, "content": args["input"]}))


def _outgoing(deps: ToolDeps, ctx: ToolCallContext, envelope: dict[str, Any]) -> Message:
    """The message a tool call sends: one hop further than the one the agent answers."""
    try:
        return parse_envelope(
            {k: v for k, v in envelope.items() if v is not None},
            sender=ctx.agent,
            max_message_size=deps.max_message_size,
            handling=ctx.message,
        )
    except CaxtonError as exc:
        raise ToolFailed(f"send_message: {exc.message}") from None


# -- http ----------------------------------------------------------------------------------


async def _http_client(deps: ToolDeps, args: dict[str, Any], ctx: ToolCallContext) -> str:
    """Fetch a URL on an allowed host and port, at an address that was checked (see
    :mod:`caxton.agents.tools.http_rules`); no cookie is kept between calls."""
    if deps.http is None:
        raise ToolFailed("http_client is not available on this server")
    settings = ctx.settings("http_client")
    allowed = tuple(settings.allowed_hosts or ()) if settings is not None else ()
    url = args["url"]
    try:
        target = check_url(url, allowed)
    except UrlRefused as exc:
        raise ToolFailed(f"http_client (agent {ctx.agent!r}): {exc}") from None
    timeout_s = (settings.timeout_s if settings is not None else None) or HTTP_TIMEOUT_S
    limiter = _limiter(deps, ctx.agent, settings.max_connections if settings else None)
    method = args.get("method", "GET")
    async with limiter:
        try:
            with trio.fail_after(timeout_s):
                address = await _resolve_checked(target)
                extensions = {} if ip_literal(target.host) else {"sni_hostname": target.host}
                request = deps.http.build_request(
                    method,
                    target.url_for(address),
                    content=args.get("body"),
                    headers=request_headers(args.get("headers"), target),
                    timeout=timeout_s,
                    extensions=extensions,
                )
                response = await deps.http.send(request, stream=True, follow_redirects=False)
                try:
                    body = await _read_capped(response, HTTP_MAX_RESPONSE_BYTES)
                finally:
                    await response.aclose()
        except trio.TooSlowError:
            raise ToolFailed(f"http_client: {url} did not answer within {timeout_s:g}s") from None
        except httpx.HTTPError as exc:
            raise ToolFailed(f"http_client: {method} {url} failed: {exc}") from None
    text, cut = body
    result: dict[str, Any] = {"status": response.status_code, "body": text}
    if "location" in response.headers:
        result["location"] = response.headers["location"]
    if cut:
        result["truncated"] = f"body cut at {HTTP_MAX_RESPONSE_BYTES} bytes"
    return json.dumps(result, ensure_ascii=False)


async def _resolve_checked(target: Target) -> IPAddress:
    """Resolve ``target`` once; every address must pass :func:`refused_address`."""
    literal = ip_literal(target.host)
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await trio.socket.getaddrinfo(
                target.host, target.port, type=trio.socket.SOCK_STREAM
            )
        except OSError as exc:
            raise ToolFailed(f"http_client: cannot resolve {target.host}: {exc}") from None
        found = (ip_literal(str(info[4][0]).split("%", 1)[0]) for info in infos)
        addresses = list(dict.fromkeys(a for a in found if a is not None))
    problem = refused_address(target, addresses)
    if problem is not None:
        raise ToolFailed(f"http_client: {problem}")
    return addresses[0]


def _limiter(deps: ToolDeps, agent: str, max_connections: int | None) -> trio.CapacityLimiter:
    limit = max_connections or HTTP_MAX_CONNECTIONS
    limiter = deps.http_limiters.get(agent)
    if limiter is None or limiter.total_tokens != limit:
        limiter = deps.http_limiters[agent] = trio.CapacityLimiter(limit)
    return limiter


async def _read_capped(response: httpx.Response, cap: int) -> tuple[str, bool]:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        chunks.append(chunk)
        size += len(chunk)
        if size > cap:
            break
    data = b"".join(chunks)
    return data[:cap].decode("utf-8", errors="replace"), size > cap


def error_result(exc: CaxtonError) -> str:
    """A tool error as the tool result the model reads."""
    return json.dumps({"error": {"code": exc.code, "message": exc.message}}, ensure_ascii=False)


__all__ = [
    "AgentKinds",
    "MessageAsker",
    "ToolDeps",
    "builtin_tools",
    "error_result",
    "tools_for",
    "wasm_tool",
]
