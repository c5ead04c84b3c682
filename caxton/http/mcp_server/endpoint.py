"""``POST /mcp``: Caxton as an MCP server over the streamable HTTP transport (issue #19 item 2).

The transport is implemented on Quart (:mod:`caxton.http.mcp_server.jsonrpc`), so ``/mcp``
sits behind the same guard as every route: API keys or tokens, the rate limit, CORS and Host
checks, and ``server.max_request_size``. The route admits every role; each ``tools/call`` is
then checked against the tool's own least role (:mod:`caxton.http.mcp_server.tools`), refused
in safe mode when it would store, counted in ``caxton_mcp_server_requests_total`` and
``caxton_mcp_server_tool_call_duration_seconds`` (label ``protocol="mcp"``) and, when it
changes state, written to the audit log with ``protocol: "mcp"``.

A caller's ``_meta`` may carry ``caxtonHop`` (a Caxton agent calling through MCP: the message
it sends goes that many hops, so the router's loop guard holds) and ``traceparent`` /
``tracestate`` (the ``tools/call`` span continues that trace instead of the HTTP request's).
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any, Final

import attrs
import pydantic
from mcp import types
from prometheus_client import Counter, Histogram
from quart import Response, current_app, g, request

from caxton import __version__
from caxton.agents.mcp_tools.meta import read_meta
from caxton.errors import CaxtonError
from caxton.http.guard import client_sender
from caxton.http.mcp_server.jsonrpc import (
    Incoming,
    RpcError,
    check_version_header,
    invalid_params,
    method_not_found,
    negotiate_version,
    parse_message,
    result,
)
from caxton.http.mcp_server.tools import (
    CallerView,
    ServedTool,
    ToolError,
    served_tools,
    text_result,
)
from caxton.http.params import raw_body
from caxton.http.routes import RouteTable
from caxton.http.state import current_services
from caxton.security.audit import AuditRecord
from caxton.security.roles import Role, role_name
from caxton.tracing import context_from, set_attributes, span

if TYPE_CHECKING:
    from caxton.security.gate import Identity
    from caxton.services import Services

routes = RouteTable("mcp")

_METRICS_KEY: Final = "caxton.http.mcp_server.metrics"
#: JSON-RPC server error codes (-32000 to -32099) for refusals.
FORBIDDEN: Final = -32003
SAFE_MODE: Final = -32004
INSTRUCTIONS: Final = (
    "Caxton agents as tools: ask_<agent> sends a question to that agent and returns its reply "
    "(pass conversation_id from a reply to continue the conversation); memory_search and "
    "memory_store use Caxton's long-term memory."
)


@attrs.frozen(kw_only=True)
class _Metrics:
    requests: Counter
    tool_seconds: Histogram


def _metrics(state: Services) -> _Metrics:
    found: _Metrics | None = current_app.config.get(_METRICS_KEY)
    if found is None:
        found = _Metrics(
            requests=state.metrics.counter(
                "caxton_mcp_server_requests",
                "JSON-RPC messages received on /mcp, by protocol, method and outcome.",
                ["protocol", "method", "outcome"],
            ),
            tool_seconds=state.metrics.histogram(
                "caxton_mcp_server_tool_call_duration_seconds",
                "Time of tools/call on /mcp, by protocol, tool kind and outcome.",
                ["protocol", "kind", "outcome"],
            ),
        )
        current_app.config[_METRICS_KEY] = found
    return found


def _json(document: dict[str, Any], status: int) -> Response:
    return Response(json.dumps(document), status=status, mimetype="application/json")


@routes.route(
    "/mcp",
    methods=("POST",),
    role=Role.READONLY,
    mutating=False,
    roles_per_call=True,
    summary="MCP streamable HTTP endpoint (stateless, JSON responses): initialize, ping, "
    "tools/list, tools/call; every running agent is a tool ask_<agent>, plus memory_search "
    "and memory_store. Each tool call needs the role of the REST route it mirrors.",
    request_body='{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}',
    responses=(200, 400, 401, 403, 413, 429),
)
async def mcp_endpoint() -> Response:
    state = current_services()
    metrics = _metrics(state)
    request_id: str | None = getattr(g, "request_id", None)
    body = await raw_body()
    method = "<invalid>"
    message_id: str | int | None = None
    try:
        check_version_header(request.headers.get("MCP-Protocol-Version"))
        incoming = parse_message(body)
        method = incoming.method or "<response>"
        message_id = incoming.id
        if not incoming.is_request:
            metrics.requests.labels(protocol="mcp", method=_label(method), outcome="ok").inc()
            return Response("", status=202)
        answer = result(incoming.id, await _dispatch(state, incoming, metrics))
        status = 200
        outcome = "ok"
    except RpcError as exc:
        answer = exc.response(message_id, request_id)
        status = exc.http_status
        outcome = exc.caxton_code
    metrics.requests.labels(protocol="mcp", method=_label(method), outcome=outcome).inc()
    return _json(answer, status)


def _label(method: str) -> str:
    """Methods as metric labels: the known ones, else ``other`` (no label per caller typo)."""
    known = ("initialize", "ping", "tools/list", "tools/call", "<response>", "<invalid>")
    if method in known or method.startswith("notifications/"):
        return method if not method.startswith("notifications/") else "notification"
    return "other"


async def _dispatch(state: Services, incoming: Incoming, metrics: _Metrics) -> dict[str, Any]:
    method, params = incoming.method, incoming.params
    if method == "initialize":
        return {
            "protocolVersion": negotiate_version(params.get("protocolVersion")),
            "capabilities": {"tools": {"listChanged": False}},
            "serverInfo": {"name": "caxton", "title": "Caxton", "version": __version__},
            "instructions": INSTRUCTIONS,
        }
    if method == "ping":
        return {}
    caller = _caller(state)
    if method == "tools/list":
        tools = [
            tool.definition.model_dump(by_alias=True, exclude_none=True, mode="json")
            for tool in served_tools(state).values()
            if caller.role >= tool.role
        ]
        return {"tools": tools}
    if method == "tools/call":
        return await _call(state, caller, params, metrics)
    raise method_not_found(str(method))


def _caller(state: Services) -> CallerView:
    identity: Identity | None = g.get("security_identity")
    return CallerView(
        sender=client_sender(state.table.has_agent),
        role=identity.role if identity is not None else Role.PUBLIC,
        safe_mode=state.safe_mode.enabled,
    )


async def _call(
    state: Services, caller: CallerView, params: dict[str, Any], metrics: _Metrics
) -> dict[str, Any]:
    try:
        call = types.CallToolRequestParams.model_validate(params)
    except pydantic.ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'params'}: {e['msg']}" for e in exc.errors()
        )
        raise invalid_params(f"invalid tools/call params: {problems}") from None
    tools = served_tools(state)
    tool = tools.get(call.name)
    if tool is None:
        raise invalid_params(
            f"unknown tool {call.name[:80]!r}; the tools are: " + ", ".join(sorted(tools)),
            tool=call.name[:80],
        )
    if caller.role < tool.role:
        await _audit(state, tool, 403)
        raise RpcError(
            code=FORBIDDEN,
            message=f"tool {tool.definition.name!r} needs the {role_name(tool.role)} role (or "
            f"higher); this credential has {role_name(caller.role)}",
            caxton_code="FORBIDDEN",
            details={"tool": tool.definition.name, "role": role_name(caller.role)},
        )
    if tool.mutating and caller.safe_mode and tool.kind == "memory_store":
        raise RpcError(
            code=SAFE_MODE,
            message="the server is in safe mode: memory_store would change its state and is "
            "refused; `caxton safe-mode --disable` lifts it",
            caxton_code="SAFE_MODE",
        )
    # a Caxton agent calling through MCP says in _meta how many hops its message has gone
    # and which span called (issue #19); without it the request's own trace goes on
    meta = read_meta(params.get("_meta"), ceiling=state.router.max_hops + 1)
    caller = attrs.evolve(caller, hop=meta.hop)
    started = time.perf_counter()
    status = 200
    with span(
        f"tools/call {tool.definition.name}",
        lambda: {
            "mcp.method.name": "tools/call",
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool.definition.name,
        },
        kind="server",
        parent=context_from(meta.traceparent, meta.tracestate),
    ) as current:
        try:
            outcome = await tool.run(state, caller, call.arguments or {})
        except ToolError as exc:
            status = 422
            outcome = text_result(exc.message, error=True)
        except CaxtonError as exc:
            status = exc.http_status if exc.http_status >= 400 else 500
            outcome = text_result(f"{exc.code}: {exc.message}", error=True)
            set_attributes(current, {"error.type": exc.code})
    if outcome.isError and status == 200:
        status = 502  # the agent answered a failure
    label = "ok" if status == 200 else "error"
    metrics.tool_seconds.labels(protocol="mcp", kind=tool.kind, outcome=label).observe(
        time.perf_counter() - started
    )
    if tool.mutating:
        await _audit(state, tool, status)
    return outcome.model_dump(by_alias=True, exclude_none=True, mode="json")


async def _audit(state: Services, tool: ServedTool, status: int) -> None:
    audit = state.security.audit
    if audit is None:
        return
    identity: Identity | None = g.get("security_identity")
    await audit.record(
        AuditRecord.now(
            identity=identity.name if identity else "unauthenticated",
            role=identity.role_name if identity else None,
            auth=identity.auth if identity else "none",
            method="POST",
            route="/mcp",
            target=f"tools/call {tool.definition.name}",
            status=status,
            request_id=getattr(g, "request_id", None),
            client=request.remote_addr,
            protocol="mcp",
        )
    )
