"""The A2A routes: agent cards, the server's card, and each agent's JSON-RPC endpoint.

Authentication, the rate limit, the Host/Origin checks and the body-size limit are the API's
own (:mod:`caxton.http.guard`, ``server.max_request_size``): a refusal there is the API's
HTTP error envelope. Past them every answer of ``POST /a2a/{name}`` is JSON-RPC: HTTP 200 with
a ``result``, or an ``error`` whose code the ``a2a-sdk`` maps to its exceptions. Each call is
counted in ``caxton_a2a_requests_total{method,outcome}``; the calls that make an agent work
(SendMessage, SendStreamingMessage, CancelTask) are written to the audit log with
``protocol: a2a``.
"""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from quart import Response, g, request

from caxton import __version__
from caxton.a2a.cards import CardFacts, agent_card, server_card
from caxton.a2a.wire import (
    PUSH_METHODS,
    VERSION_HEADER,
    RpcError,
    check_version,
    extended_card_not_configured,
    internal_error,
    invalid_request,
    parse_call,
    parse_error,
    push_not_supported,
    read_id,
    result_response,
)
from caxton.errors import CaxtonError, NotFound
from caxton.http.guard import client_sender
from caxton.http.params import (
    JsonTooComplex,
    UnsupportedMediaType,
    is_json_media_type,
    parse_json,
)
from caxton.http.routes import RouteTable
from caxton.http.state import current_services
from caxton.http.streaming import background_body
from caxton.messaging.errors import UnknownAgent
from caxton.security.audit import AuditRecord
from caxton.security.roles import Role

if TYPE_CHECKING:
    import trio

    from caxton.a2a.service import A2AService
    from caxton.services import Services

routes = RouteTable("a2a")

#: Methods whose calls are audited (they make an agent work, or stop it).
AUDITED = frozenset({"SendMessage", "SendStreamingMessage", "CancelTask"})


def _service() -> A2AService:
    state = current_services()
    if not state.config.a2a.enabled or state.a2a is None:
        raise NotFound(
            "A2A is switched off on this server (a2a.enabled: false in caxton.yaml)",
            details={"setting": "a2a.enabled"},
        )
    return state.a2a


def _base_url() -> str:
    return f"{request.scheme}://{request.host}"


def _facts(state: Services, name: str) -> CardFacts:
    agent = state.table.agent(name)
    entry = agent.active_entry or (agent.entries[-1] if agent.entries else None)
    if entry is None:
        raise UnknownAgent(name, state.table.agent_names())
    spec = entry.spec
    return CardFacts(
        name=name,
        description=spec.description,
        version=spec.version,
        capabilities=tuple(spec.capabilities),
        kind=agent.type,
    )


@routes.route(
    "/.well-known/agent-card.json",
    role=Role.PUBLIC,
    summary="The server's A2A card: its agents as skills, and each agent's own card.",
)
async def server_agent_card() -> dict[str, Any]:
    _service()
    state = current_services()
    facts = [_facts(state, name) for name in state.table.agent_names()]
    return server_card(
        facts,
        base_url=_base_url(),
        version=__version__,
        auth_required=state.security.required,
    )


@routes.route(
    "/a2a/<name>/.well-known/agent-card.json",
    role=Role.PUBLIC,
    summary="An agent's A2A card: skills from its capabilities, security schemes, and its "
    "JSON-RPC interface /a2a/{name} (A2A 1.0).",
    responses=(200, 404),
)
async def agent_agent_card(name: str) -> dict[str, Any]:
    _service()
    state = current_services()
    if not state.table.has_agent(name):
        raise UnknownAgent(name, state.table.agent_names())
    return agent_card(
        _facts(state, name), base_url=_base_url(), auth_required=state.security.required
    )


@routes.route(
    "/api/v1/a2a/remote-agents",
    role=Role.READONLY,
    summary="Remote A2A agents from a2a.remote_agents: card, state, capabilities, last error.",
)
async def remote_agents() -> dict[str, Any]:
    remotes = current_services().remote_agents
    return {"remote_agents": remotes.view() if remotes is not None else []}


@routes.route(
    "/a2a/<name>",
    methods=("POST",),
    role=Role.USER,
    mutating=False,
    summary="A2A 1.0 JSON-RPC: SendMessage, SendStreamingMessage (SSE), GetTask, ListTasks, "
    "CancelTask, SubscribeToTask; header A2A-Version: 1.0.",
    request_body='{"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": '
    '{"message": {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hello"}]}}}',
    responses=(200, 404, 413, 415),
)
async def a2a_call(name: str) -> Response | dict[str, Any]:
    service = _service()
    state = current_services()
    if not state.table.has_agent(name):
        raise UnknownAgent(name, state.table.agent_names())
    if not is_json_media_type(request.headers.get("Content-Type")):
        raise UnsupportedMediaType(
            "send the JSON-RPC request as Content-Type: application/json",
            details={"content_type": request.headers.get("Content-Type")},
        )
    raw = await request.get_data(as_text=False)
    started = time.perf_counter()
    request_id: str | int | None = None
    method = "invalid"
    try:
        try:
            body = parse_json(raw, "send one JSON-RPC 2.0 request object")
        except JsonTooComplex as exc:
            raise invalid_request(exc.message) from None
        except CaxtonError as exc:
            raise parse_error(exc.message) from None
        request_id = read_id(body)
        call = parse_call(body)
        request_id, method = call.id, call.method
        check_version(request.headers.get(VERSION_HEADER))
        owner = client_sender(state.table.has_agent)
        params: Any = call.params
        if method in ("SendStreamingMessage", "SubscribeToTask"):
            if method == "SendStreamingMessage":
                started_task = await service.start(name, params, owner=owner, stream=True)
            else:
                started_task = await service.subscribe(name, params, owner=owner)
            assert started_task.events is not None
            await _finish(service, method, "ok", started, 200)
            return _stream(request_id, started_task.snapshot, started_task.events)
        result = await _answer(service, name, method, params, owner)
    except RpcError as error:
        await _finish(service, method, error.reason, started, error.status)
        return error.response(request_id)
    except CaxtonError as error:  # the service is stopping, or the like
        rpc = internal_error(error.message)
        await _finish(service, method, rpc.reason, started, error.http_status)
        return rpc.response(request_id)
    await _finish(service, method, "ok", started, 200)
    return result_response(request_id, result)


async def _answer(
    service: A2AService, name: str, method: str, params: Any, owner: str
) -> dict[str, Any]:
    """The result of a non-streaming method."""
    if method == "SendMessage":
        started = await service.start(name, params, owner=owner, stream=False)
        task = started.task
        if not params.configuration.return_immediately:
            await task.done.wait()
        return {"task": task.as_json(history_length=_history_length(params))}
    if method == "GetTask":
        return await service.get(name, params, owner=owner)
    if method == "ListTasks":
        return await service.list(name, params, owner=owner)
    if method == "CancelTask":
        return await service.cancel(name, params, owner=owner)
    if method in PUSH_METHODS:
        raise push_not_supported()
    if method == "GetExtendedAgentCard":
        raise extended_card_not_configured()
    raise internal_error(f"method {method} is known but not served")  # pragma: no cover


def _history_length(params: Any) -> int | None:
    configuration = params.configuration
    if configuration.HasField("history_length"):
        return max(0, int(configuration.history_length))
    return None


def _stream(
    request_id: str | int | None,
    snapshot: dict[str, Any],
    events: trio.MemoryReceiveChannel[dict[str, Any]],
) -> Response:
    """The task's events as SSE: the task as it was when the stream opened, then its updates
    until it ends."""

    def frame(result: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(result_response(request_id, result))}\n\n".encode()

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        async with events:
            await send.send(frame({"task": snapshot}))
            async for event in events:
                await send.send(frame(event))

    response = Response(background_body(produce), mimetype="text/event-stream")
    response.headers["Cache-Control"] = "no-cache"
    response.timeout = None
    return response


async def _finish(
    service: A2AService, method: str, outcome: str, started: float, status: int
) -> None:
    """Count the call, and audit it when it makes an agent work."""
    service.count(method, outcome, time.perf_counter() - started)
    gate = current_services().security
    if gate.audit is None or method not in AUDITED:
        return
    identity = g.get("security_identity")
    await gate.audit.record(
        AuditRecord.now(
            identity=identity.name if identity else "unauthenticated",
            role=identity.role_name if identity else None,
            auth=identity.auth if identity else "none",
            method=method,
            route="/a2a/<name>",
            target=request.path,
            status=status,
            request_id=g.get("request_id"),
            client=request.remote_addr,
            protocol="a2a",
        )
    )
