"""Messaging routes: FIPA envelopes, conversations and capabilities (DESIGN §5, §7)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import request

from caxton.errors import BadRequest, ServiceUnavailable, ValidationFailed
from caxton.http.guard import check_claimed_sender, client_sender
from caxton.http.params import float_arg, int_arg, json_object
from caxton.http.routes import QueryParam, RouteTable
from caxton.http.state import current_services
from caxton.messaging import STATUSES
from caxton.messaging.envelope import EXAMPLE, parse_envelope
from caxton.security.errors import Forbidden
from caxton.security.roles import Role

if TYPE_CHECKING:
    from caxton.messages import Message
    from caxton.messaging.router import ConversationRule

routes = RouteTable("messaging")

_TRUE = ("1", "true", "yes")
_FALSE = ("0", "false", "no")


def _wait_arg() -> bool:
    raw = request.args.get("wait", "true").lower()
    if raw not in _TRUE + _FALSE:
        raise BadRequest(f"query parameter wait must be true or false, got {raw!r}")
    return raw in _TRUE


@routes.route(
    "/api/v1/messages",
    methods=("POST",),
    role=Role.USER,
    mutating=False,
    summary="Route a FIPA envelope by receiver or capability; the reply envelope, or 202 "
    "with the conversation id when wait=false.",
    query=(
        QueryParam(name="wait", description="false: return 202 at once", type="boolean"),
        QueryParam(name="timeout", description="seconds to wait for the reply", type="number"),
    ),
    request_body=EXAMPLE,
    responses=(200, 202, 400, 404, 409, 413, 422, 503),
)
async def post_message() -> tuple[dict[str, Any], int]:
    state = current_services()
    router = state.router
    wait = _wait_arg()
    timeout_s = float_arg("timeout", state.config.messaging.delivery_timeout)
    if not 0 < timeout_s <= 3600:
        raise ValidationFailed(f"query parameter timeout must be from 0 to 3600 s, got {timeout_s}")
    body = await json_object(EXAMPLE)
    is_agent = state.table.has_agent
    sender = client_sender(is_agent)
    check_claimed_sender(body.get("sender"), sender, is_agent)
    message = parse_envelope(
        body, sender=sender, max_message_size=state.config.messaging.max_message_size
    )
    rule: ConversationRule = "existing" if "conversation_id" in body else "new"
    if message.in_reply_to is not None:
        await _check_reply(message)
    if not wait:
        refusal = await router.submit(message, conversation=rule)
        if refusal is not None:
            raise refusal
        accepted = {
            "accepted": True,
            "conversation_id": message.conversation_id,
            "message_id": message.message_id,
        }
        return accepted, 202
    delivery = await router.deliver(message, timeout_s=timeout_s, conversation=rule)
    if delivery.refused:
        raise delivery.error or ServiceUnavailable("the message was not delivered")
    return delivery.reply.as_json(), 200


async def _check_reply(message: Message) -> None:
    """A client's ``in_reply_to`` must name a message of this conversation sent to it."""
    conversation = await current_services().conversations.get(message.conversation_id)
    for earlier in conversation.messages:
        if message.in_reply_to in (earlier.message_id, earlier.reply_with):
            if earlier.receiver == message.sender:
                return
            break
    raise Forbidden(
        f"in_reply_to {message.in_reply_to!r} does not name a message of conversation "
        f"{message.conversation_id} that was sent to you ({message.sender!r}); a client "
        "replies only to messages addressed to it",
        details={"in_reply_to": message.in_reply_to, "sender": message.sender},
    )


@routes.route(
    "/api/v1/conversations",
    role=Role.READONLY,
    summary="Conversations, most recently active first: participants, status, last activity.",
    query=(
        QueryParam(name="status", description="active or closed"),
        QueryParam(name="agent", description="only conversations this agent took part in"),
        QueryParam(name="limit", description="page size (default 100)", type="integer"),
        QueryParam(name="offset", description="page start", type="integer"),
    ),
)
async def list_conversations() -> dict[str, Any]:
    status = request.args.get("status") or None
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")
    rows, total = await current_services().conversations.list(
        status=status,
        participant=request.args.get("agent") or None,
        limit=int_arg("limit", 100, low=1, high=1000),
        offset=int_arg("offset", 0, low=0, high=1_000_000),
    )
    return {"conversations": [r.as_json() for r in rows], "total": total}


@routes.route(
    "/api/v1/conversations/<conversation_id>",
    role=Role.READONLY,
    summary="One conversation with its messages in order.",
    query=(QueryParam(name="limit", description="messages (default 1000)", type="integer"),),
    responses=(200, 404),
)
async def get_conversation(conversation_id: str) -> dict[str, Any]:
    conversations = current_services().conversations
    limit = int_arg("limit", 1000, low=1, high=100_000)
    return (await conversations.get(conversation_id, limit=limit)).as_json()


@routes.route(
    "/api/v1/conversations/<conversation_id>/close",
    methods=("POST",),
    role=Role.USER,
    summary="Close a conversation: further messages in it are refused (409).",
    responses=(200, 404),
)
async def close_conversation(conversation_id: str) -> dict[str, Any]:
    summary = await current_services().conversations.close(conversation_id)
    return summary.as_json()


@routes.route(
    "/api/v1/capabilities",
    role=Role.READONLY,
    summary="Capabilities, each with its providers (state, version, in-flight requests).",
)
async def list_capabilities() -> dict[str, Any]:
    router = current_services().router
    return {"strategy": router.strategy, "capabilities": router.capabilities_view()}


@routes.route(
    "/api/v1/capabilities/<capability>",
    role=Role.READONLY,
    summary="One capability: its providers with state and in-flight load.",
    responses=(200, 404),
)
async def get_capability(capability: str) -> dict[str, Any]:
    return current_services().router.capability_view(capability)
