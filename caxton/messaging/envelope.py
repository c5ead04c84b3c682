"""Reading a FIPA envelope sent from outside (``POST /api/v1/messages``): pure validation.

The server sets ``message_id``, ``created_at`` and the hop count (0 for a message from
outside); values a client sends for them are ignored. Everything else is checked here, so a
bad envelope is refused before anything is routed or recorded.
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
    body: Mapping[str, Any], *, max_message_size: int, default_sender: str = "client"
) -> Message:
    """The message ``body`` describes, with server-set ids.

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
    receiver = _optional_text(body, "receiver")
    capability = _optional_text(body, "capability")
    if (receiver is None) == (capability is None):
        which = "both" if receiver is not None else "neither"
        raise ValidationFailed(
            f'give either "receiver" (an agent name) or "capability", not {which}; for '
            f"example {EXAMPLE}",
            details={"receiver": receiver, "capability": capability},
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
        "sender": _optional_text(body, "sender") or default_sender,
        "receiver": receiver,
        "capability": capability,
        "content": content,
        "reply_with": _optional_text(body, "reply_with"),
        "in_reply_to": _optional_text(body, "in_reply_to"),
    }
    conversation_id = _optional_text(body, "conversation_id")
    if conversation_id is not None:
        values["conversation_id"] = conversation_id
    return Message(**values)
