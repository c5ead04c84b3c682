"""Reading a FIPA envelope: the one parser for every way a message comes in.

HTTP (``POST /api/v1/messages``, ``POST /api/v1/agents/{name}/messages``), WebSocket frames,
WASM guests (``caxton.send_message``) and config agents' tools all build their messages here,
so every envelope is held to the same rules (known keys, one destination, a known
performative, content within ``messaging.max_message_size``) before anything is routed or
recorded. The server sets ``message_id``, ``created_at``, the hop count and the sender (the
caller, already authenticated); values an envelope carries for them are not taken.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from caxton.errors import ValidationFailed
from caxton.messages import PERFORMATIVES, Message
from caxton.messaging.errors import MessageTooLarge

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Keys a client may send.
ENVELOPE_KEYS = frozenset(
    {
        "performative",
        "sender",
        "receiver",
        "capability",
        "content",
        "conversation_id",
        "reply_with",
        "in_reply_to",
    }
)
#: Keys the server sets (ignored when a client sends them).
SERVER_KEYS = frozenset({"message_id", "created_at", "hop"})

EXAMPLE = '{"capability": "text-statistics", "performative": "request", "content": "hello"}'


def content_size(content: str | dict[str, Any]) -> int:
    """Size of the content in bytes (UTF-8 text, or its JSON text for an object)."""
    text = content if isinstance(content, str) else json.dumps(content, separators=(",", ":"))
    return len(text.encode("utf-8", errors="replace"))


def _optional_text(body: Mapping[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValidationFailed(
            f'"{key}" must be a non-empty string, got {value!r}', details={"field": key}
        )
    return value


def parse_envelope(
    body: Mapping[str, Any],
    *,
    sender: str,
    max_message_size: int,
    receiver: str | None = None,
    handling: Message | None = None,
) -> Message:
    """The message ``body`` describes, with server-set ids.

    Args:
        sender: who sends it (the authenticated client, or the agent); a ``sender`` in the
            body is not taken (the HTTP layer checks what a client claims first).
        max_message_size: the largest content, in bytes.
        receiver: the agent the route already names (``/agents/{name}/messages``): the body
            may repeat it but may not name another receiver or a capability.
        handling: the message the sending agent is answering: the new one goes one hop
            further, in its conversation unless the body names another.

    Raises:
        ValidationFailed: an unknown key or performative, both receiver and capability (or
            neither), content that is not a string or a JSON object.
        MessageTooLarge: content over ``max_message_size`` bytes.
    """
    unknown = sorted(set(body) - ENVELOPE_KEYS - SERVER_KEYS)
    if unknown:
        raise ValidationFailed(
            f"unknown envelope key{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"the keys are {', '.join(sorted(ENVELOPE_KEYS))}",
            details={"unknown": unknown},
        )
    performative = body.get("performative", "request")
    if performative not in PERFORMATIVES:
        raise ValidationFailed(
            f"unknown performative {performative!r}; use one of {', '.join(PERFORMATIVES)}",
            details={"field": "performative", "allowed": list(PERFORMATIVES)},
        )
    named = _optional_text(body, "receiver")
    capability = _optional_text(body, "capability")
    if receiver is not None:
        if capability is not None or named not in (None, receiver):
            raise ValidationFailed(
                f"this route sends to agent {receiver!r}: leave out "
                f'"{"capability" if capability is not None else "receiver"}" (or use '
                "POST /api/v1/messages to route by capability)",
                details={"receiver": named, "capability": capability},
            )
        named = receiver
    elif (named is None) == (capability is None):
        which = "both" if named is not None else "neither"
        raise ValidationFailed(
            f'give either "receiver" (an agent name) or "capability", not {which}; for '
            f"example {EXAMPLE}",
            details={"receiver": named, "capability": capability},
        )
    if "content" not in body:
        raise ValidationFailed(f'"content" is missing; for example {EXAMPLE}')
    content = body["content"]
    if not isinstance(content, str | dict):
        raise ValidationFailed(
            f'"content" must be a string or a JSON object, got {type(content).__name__}',
            details={"field": "content"},
        )
    size = content_size(content)
    if size > max_message_size:
        raise MessageTooLarge(size, max_message_size)
    values: dict[str, Any] = {
        "performative": performative,
        "sender": sender,
        "receiver": named,
        "capability": capability,
        "content": content,
        "reply_with": _optional_text(body, "reply_with"),
        "in_reply_to": _optional_text(body, "in_reply_to"),
    }
    conversation_id = _optional_text(body, "conversation_id")
    if conversation_id is None and handling is not None:
        conversation_id = handling.conversation_id
    if conversation_id is not None:
        values["conversation_id"] = conversation_id
    if handling is not None:
        values["hop"] = handling.hop + 1
    return Message(**values)
