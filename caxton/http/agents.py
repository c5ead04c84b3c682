"""Agents routes: deploy, inspect, version and talk to agents (DESIGN §7)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import trio
from quart import Response, g, request, websocket

from caxton.agents.logs import LEVELS, level_at_least
from caxton.errors import BadRequest, CaxtonError, PayloadTooLarge, ValidationFailed
from caxton.http.guard import charge_frame, check_claimed_sender, client_sender
from caxton.http.params import int_arg, json_object, optional_json_object, parse_json
from caxton.http.routes import QueryParam, RouteTable
from caxton.http.state import current_services
from caxton.http.streaming import background_body, forward_chunks, sse_frame
from caxton.messaging.envelope import parse_envelope
from caxton.security.roles import Role
from caxton.tracing import context_from, span, tracer
from caxton.usage import metering

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from caxton.agents.registry import Registry
    from caxton.agents.table import AgentTable
    from caxton.messages import Message
    from caxton.messaging import Router
    from caxton.messaging.router import ConversationRule, Delivery

#: The span of each WebSocket message (the route template, as HTTP spans are named).
WS_SPAN = "WS /ws/agents/<name>"

routes = RouteTable("agents")

EXAMPLE_BODY = '{"content": "name = \\"my-agent\\"\\n..."}'
DEPLOY_BODY = '{"content": "<toml>"} or {"manifest": "<toml>", "wasm_module": "<base64>"}'


def _file_fields(body: dict[str, Any]) -> tuple[str, str | None]:
    content = body.get("content", body.get("manifest"))
    if not isinstance(content, str):
        raise BadRequest(
            'give the agent file as a string in "content" (or a WASM manifest in "manifest")',
            details={"keys": sorted(body)},
        )
    module = body.get("wasm_module")
    if module is not None and not isinstance(module, str):
        raise BadRequest('"wasm_module" must be the module bytes encoded as a base64 string')
    return content, module


def _registry() -> Registry:
    return current_services().registry


def _table() -> AgentTable:
    return current_services().table


@routes.route(
    "/api/v1/agents",
    role=Role.READONLY,
    summary="List agents, with their active version, canary, status and last reload.",
    query=(
        QueryParam(name="type", description="config or wasm"),
        QueryParam(name="capability", description="only agents with this capability"),
        QueryParam(name="status", description="loading, running, draining, stopped, failed"),
        QueryParam(name="limit", description="page size (default 100)", type="integer"),
        QueryParam(name="offset", description="page start", type="integer"),
    ),
)
async def list_agents() -> dict[str, Any]:
    views = _registry().list_view()
    kind, capability, status = (request.args.get(k) for k in ("type", "capability", "status"))
    if kind:
        views = [v for v in views if v["type"] == kind]
    if capability:
        views = [v for v in views if capability in v["capabilities"]]
    if status:
        views = [v for v in views if v["status"] == status]
    limit = int_arg("limit", 100, low=1, high=1000)
    offset = int_arg("offset", 0, low=0, high=1_000_000)
    return {"agents": views[offset : offset + limit], "total": len(views)}


@routes.route(
    "/api/v1/agents/performance",
    role=Role.READONLY,
    summary="Per agent: messages, errors, response p50/p99 (caxton agents performance-report).",
)
async def agents_performance() -> dict[str, Any]:
    return {"agents": _table().performance_view()}


@routes.route(
    "/api/v1/agents",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="Deploy a new agent; it is stored under data_dir and survives restarts.",
    request_body=DEPLOY_BODY,
    responses=(201, 400, 409, 422),
)
async def deploy_agent() -> tuple[dict[str, Any], int]:
    content, module = _file_fields(await json_object(EXAMPLE_BODY))
    view = await current_services().agents.deploy(content, module)
    return view, 201


@routes.route(
    "/api/v1/agents/validate",
    methods=("POST",),
    role=Role.USER,
    mutating=False,
    summary="Validate an agent file without deploying it: {valid, errors, warnings}.",
    request_body=DEPLOY_BODY,
    responses=(200, 400),
)
async def validate_agent() -> dict[str, Any]:
    body = await json_object(EXAMPLE_BODY)
    content, _ = _file_fields(body)
    with_module = "manifest" in body and "wasm_module" in body
    # checked in a worker thread: a large file must not hold the event loop (issue #13)
    report = await current_services().agents.check(content, require_module=not with_module)
    return report.as_dict()


@routes.route(
    "/api/v1/agents/<name>",
    role=Role.READONLY,
    summary="One agent: type, version, canary, status, capabilities, abi, last_reload.",
    responses=(200, 404),
)
async def get_agent(name: str) -> dict[str, Any]:
    return _registry().agent_view(name)


@routes.route(
    "/api/v1/agents/<name>",
    methods=("PUT",),
    role=Role.OPERATOR,
    summary="Deploy a new version of an agent (blue-green: the old one serves until it loads).",
    request_body=DEPLOY_BODY,
    responses=(200, 400, 404, 422),
)
async def update_agent(name: str) -> dict[str, Any]:
    content, module = _file_fields(await json_object(EXAMPLE_BODY))
    return await current_services().agents.deploy(content, module, replace=name)


@routes.route(
    "/api/v1/agents/<name>",
    methods=("DELETE",),
    role=Role.OPERATOR,
    summary="Remove an API-deployed agent (agents from files: delete the file).",
    responses=(200, 404, 409),
)
async def delete_agent(name: str) -> dict[str, Any]:
    await current_services().agents.remove(name)
    return {"deleted": name}


@routes.route(
    "/api/v1/agents/<name>/restart",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="Restart an agent blue-green: a fresh instance takes over once it has loaded.",
    responses=(200, 404),
)
async def restart_agent(name: str) -> dict[str, Any]:
    return await current_services().agents.restart(name)


@routes.route(
    "/api/v1/agents/<name>/versions",
    role=Role.READONLY,
    summary="Kept versions: {version, revision, status, active, traffic_percentage}.",
    responses=(200, 404),
)
async def agent_versions(name: str) -> dict[str, Any]:
    return {"name": name, "versions": _table().versions_view(name)}


@routes.route(
    "/api/v1/agents/<name>/canary",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="Send traffic_percentage of new conversations to a kept version.",
    request_body='{"version": "1.1.0", "traffic_percentage": 20}',
    responses=(200, 404, 409, 422),
)
async def set_canary(name: str) -> dict[str, Any]:
    body = await json_object('{"version": "1.1.0", "traffic_percentage": 20}')
    version, share = body.get("version"), body.get("traffic_percentage")
    if not isinstance(version, str) or not isinstance(share, int | float):
        raise ValidationFailed(
            'give {"version": "<kept version>", "traffic_percentage": <1-100>}',
            details={"keys": sorted(body)},
        )
    return await current_services().agents.set_canary(
        name, version=version, traffic_percentage=float(share)
    )


@routes.route(
    "/api/v1/agents/<name>/promote",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="Make the canary the stable version; the old stable version drains.",
    responses=(200, 404, 409),
)
async def promote_agent(name: str) -> dict[str, Any]:
    return await current_services().agents.promote(name)


@routes.route(
    "/api/v1/agents/<name>/rollback",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="End the canary, or go back to the previous (or a named) version.",
    request_body='{"version": "1.0.0"} (optional)',
    responses=(200, 404, 409),
)
async def rollback_agent(name: str) -> dict[str, Any]:
    body = await optional_json_object('{"version": "1.0.0"}')  # malformed JSON is a 400
    version = body.get("version")
    if version is not None and not isinstance(version, str):
        raise ValidationFailed('"version" must be a string such as "1.0.0"')
    return await current_services().agents.rollback(name, to_version=version)


@routes.route(
    "/api/v1/agents/<name>/logs",
    role=Role.READONLY,
    summary="The agent's last log lines; follow=true streams new ones (NDJSON).",
    query=(
        QueryParam(name="tail", description="how many lines (default 100)", type="integer"),
        QueryParam(name="level", description="debug, info, warn or error"),
        QueryParam(name="follow", description="true to keep streaming", type="boolean"),
    ),
    responses=(200, 404),
)
async def agent_logs(name: str) -> Response | dict[str, Any]:
    state = current_services()
    registry = _registry()
    registry.agent_view(name)  # 404 for unknown agents
    level = request.args.get("level")
    if level is not None and level not in LEVELS:
        raise BadRequest(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    lines = state.agent_logs.tail(name, int_arg("tail", 100, low=0, high=1000), level)
    if request.args.get("follow", "false").lower() not in ("1", "true", "yes"):
        return {"agent": name, "lines": [line.as_json() for line in lines]}

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        for line in lines:
            await send.send(json.dumps(line.as_json()).encode() + b"\n")
        async with trio.open_nursery() as nursery:

            async def stop_on_shutdown() -> None:
                await state.lifecycle.stopping.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(stop_on_shutdown)
            async with state.agent_logs.follow(name) as follow:
                async for line in follow:
                    if level_at_least(line, level):
                        await send.send(json.dumps(line.as_json()).encode() + b"\n")
            nursery.cancel_scope.cancel()

    response = Response(background_body(produce), mimetype="application/x-ndjson")
    response.timeout = None
    return response


def _message_from(body: dict[str, Any], name: str) -> tuple[Message, ConversationRule]:
    """The message a caller's ``body`` sends to ``name`` (its sender is the caller), and the
    conversations it may join (a new one unless the body names one)."""
    state = current_services()
    is_agent = state.table.has_agent
    sender = client_sender(is_agent)
    check_claimed_sender(body.get("sender"), sender, is_agent)
    message = parse_envelope(
        body,
        sender=sender,
        receiver=name,
        max_message_size=state.config.messaging.max_message_size,
    )
    return message, "open" if "conversation_id" in body else "new"


@routes.route(
    "/api/v1/agents/<name>/messages",
    methods=("POST",),
    role=Role.USER,
    mutating=False,
    summary="Send a message to an agent; the reply, or an SSE stream of chunks "
    "(Accept: text/event-stream).",
    request_body='{"content": "...", "conversation_id": "optional"}',
    responses=(200, 404, 422, 503),
)
async def message_agent(name: str) -> Response | dict[str, Any]:
    router = current_services().router
    body = await json_object('{"content": "hello"}')
    message, rule = _message_from(body, name)
    # the request hook read the headers in one pass; werkzeug's lookup of an absent header
    # (most clients send no Accept) raises and catches internally
    if "text/event-stream" not in g.edge_headers.get("accept", ""):
        delivery = await router.deliver(message, conversation=rule)
        return delivery.raise_error().as_json()
    refusal = await router.admit(message, conversation=rule)
    if refusal is not None:  # unknown agents get 404 before any stream starts
        raise refusal

    request_id = getattr(g, "request_id", None)  # the request context ends before the stream

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        async def chunk_frame(text: str) -> None:
            await send.send(sse_frame("chunk", {"type": "chunk", "text": text}))

        try:
            with metering() as meter:
                answer = await forward_chunks(
                    lambda chunks: _reply(router.deliver_admitted(message, stream=chunks)),
                    chunk_frame,
                )
        except CaxtonError as error:
            frame = {"type": "error", **error.as_json(request_id=request_id)}
            await send.send(sse_frame("error", frame))
            return
        done = {"type": "done", "message": answer.as_json(), "usage": meter.as_json()}
        await send.send(sse_frame("done", done))

    response = Response(background_body(produce), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None
    return response


@routes.websocket(
    "/ws/agents/<name>",
    role=Role.USER,
    summary="Talk to an agent: send {content, conversation_id?}; receive chunk frames, then "
    "done or error.",
)
async def agent_socket(name: str) -> None:
    state = current_services()
    router = state.router
    # each message's span continues the trace the handshake named (issue #18)
    parent = context_from(websocket.headers.get("traceparent")) if tracer() else None
    await websocket.accept()
    busy = False
    done_answering = trio.Event()
    async with trio.open_nursery() as nursery:

        async def close_on_stop() -> None:
            await state.lifecycle.stopping.wait()
            while busy:  # let the answer in flight finish first
                await done_answering.wait()
            await websocket.close(1001, "server shutting down")
            nursery.cancel_scope.cancel()

        nursery.start_soon(close_on_stop)
        while True:
            raw = await websocket.receive()
            busy = True
            try:
                with span(WS_SPAN, {"caxton.agent.name": name}, kind="server", parent=parent):
                    await _answer_frame(router, name, raw)
            finally:
                busy = False
                done_answering.set()
                done_answering = trio.Event()


async def _reply(delivering: Awaitable[Delivery]) -> Message:
    """The reply a delivery came to, or its error raised (the HTTP routes report errors as
    errors, with their status)."""
    return (await delivering).raise_error()


async def _answer_frame(router: Router, name: str, raw: str | bytes) -> None:
    """Answer one client frame: it costs a rate-limit token and is parsed within the JSON
    bounds of :mod:`caxton.http.params`; a refusal is an error frame, never forwarded."""
    try:
        charge_frame()
        limit = current_services().config.server.max_request_size
        if len(raw) > limit:  # hypercorn closes with 1009 first; this is the second guard
            raise PayloadTooLarge(
                f"the frame ({len(raw)} bytes) is larger than server.max_request_size "
                f"({limit} bytes)",
                details={"max_request_size": limit},
            )
        body = parse_json(raw, 'each frame is a JSON object such as {"content": "hello"}')
        if not isinstance(body, dict):
            raise BadRequest('each frame must be a JSON object such as {"content": "hello"}')
        message, rule = _message_from(body, name)

        async def chunk_frame(text: str) -> None:
            await websocket.send_json({"type": "chunk", "text": text})

        with metering() as meter:
            answer = await forward_chunks(
                lambda chunks: _reply(router.deliver(message, stream=chunks, conversation=rule)),
                chunk_frame,
            )
    except CaxtonError as exc:
        request_id = getattr(g, "request_id", None)
        await websocket.send_json({"type": "error", **exc.as_json(request_id=request_id)})
        return
    done = {"type": "done", "message": answer.as_json(), "usage": meter.as_json()}
    await websocket.send_json(done)
