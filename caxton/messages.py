"""The FIPA-style message envelope (DESIGN §5) as a frozen value."""

from __future__ import annotations

import os
import time
from typing import Any, Literal

import attrs

Performative = Literal[
    "request",
    "inform",
    "query",
    "propose",
    "accept_proposal",
    "reject_proposal",
    "failure",
    "not_understood",
]
PERFORMATIVES: tuple[str, ...] = (
    "request",
    "inform",
    "query",
    "propose",
    "accept_proposal",
    "reject_proposal",
    "failure",
    "not_understood",
)


def new_id() -> str:
    """32 random lowercase hex characters, as ``uuid4().hex`` gives, at a third of its cost."""
    return os.urandom(16).hex()


@attrs.frozen(kw_only=True)
class Message:
    """One message between a client or an agent and an agent.

    ``hop`` counts agent-to-agent sends (0 for a message from outside), for the loop guard.
    A message goes to a ``receiver`` (an agent name) or to a ``capability``, never both;
    replies name their receiver (the original sender, which may be absent for a client).
    """

    performative: Performative = attrs.field(
        default="request", validator=attrs.validators.in_(PERFORMATIVES)
    )
    sender: str | None = None
    receiver: str | None = None
    capability: str | None = attrs.field(default=None)
    content: str | dict[str, Any] = ""
    conversation_id: str = attrs.field(factory=new_id)
    reply_with: str | None = None
    in_reply_to: str | None = None
    message_id: str = attrs.field(factory=new_id)
    created_at: float = attrs.field(factory=time.time)
    hop: int = attrs.field(default=0, validator=attrs.validators.ge(0))

    @capability.validator
    def _one_destination(self, _: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None and self.receiver is not None:
            raise ValueError(
                f"a message goes to a receiver or to a capability, not both "
                f"(receiver {self.receiver!r}, capability {value!r})"
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "performative": self.performative,
            "sender": self.sender,
            "receiver": self.receiver,
            "capability": self.capability,
            "content": self.content,
            "conversation_id": self.conversation_id,
            "reply_with": self.reply_with,
            "in_reply_to": self.in_reply_to,
            "message_id": self.message_id,
            "created_at": self.created_at,
        }

    def reply(
        self, content: str | dict[str, Any], *, sender: str, performative: Performative = "inform"
    ) -> Message:
        """The answer to this message, in the same conversation."""
        return Message(
            performative=performative,
            sender=sender,
            receiver=self.sender,
            content=content,
            conversation_id=self.conversation_id,
            in_reply_to=self.reply_with or self.message_id,
            hop=self.hop,
        )
