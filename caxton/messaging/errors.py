"""Errors of message routing and conversations (DESIGN §5, §7)."""

from __future__ import annotations

from caxton.errors import CaxtonError, Conflict, NotFound, ServiceUnavailable

#: ``error.code`` values carried by ``failure`` replies the router writes itself.
NO_PROVIDER = "NO_PROVIDER"
TIMEOUT = "TIMEOUT"
HOP_LIMIT_EXCEEDED = "HOP_LIMIT_EXCEEDED"
AGENT_NOT_FOUND = "AGENT_NOT_FOUND"


class ConversationNotFound(NotFound):
    """No conversation has this id (never started, or expired after messaging.conversation_ttl)."""

    code = "CONVERSATION_NOT_FOUND"

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"no conversation {conversation_id!r}: it never existed or it expired "
            "(messaging.conversation_ttl). Omit conversation_id to start a new one; "
            "`caxton conversations list` shows the known ones.",
            details={"conversation_id": conversation_id},
        )


class ConversationClosed(Conflict):
    """The conversation was closed; nothing more can be said in it."""

    code = "CONVERSATION_CLOSED"

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(
            f"conversation {conversation_id!r} is closed; start a new one by omitting "
            "conversation_id",
            details={"conversation_id": conversation_id},
        )


class MessageTooLarge(CaxtonError):
    """The content is larger than messaging.max_message_size."""

    code = "MESSAGE_TOO_LARGE"
    http_status = 413

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(
            f"the message content is {size} bytes, over messaging.max_message_size ({limit} "
            "bytes); send less, or raise the limit in caxton.yaml",
            details={"size": size, "limit": limit},
        )


class UnknownAgent(NotFound):
    """A message names a receiver no agent answers to."""

    code = AGENT_NOT_FOUND

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(
            f"no agent named {name!r}; agents: {', '.join(known) or 'none'}",
            details={"agent": name, "agents": known},
        )


class HopLimitExceeded(Conflict):
    """A message went through more agent-to-agent hops than messaging.max_hops allows."""

    code = HOP_LIMIT_EXCEEDED

    def __init__(self, hop: int, limit: int) -> None:
        super().__init__(
            f"message refused after {hop} agent-to-agent hops (the limit is {limit}, "
            "messaging.max_hops): agents are probably calling each other in a loop",
            details={"hop": hop},
        )


class NoProvider(ServiceUnavailable):
    """No running agent provides the capability a message asks for."""

    code = NO_PROVIDER


class DeliveryTimeout(CaxtonError):
    """The agent did not answer within the time the sender waits."""

    code = TIMEOUT
    http_status = 504

    def __init__(self, agent: str, timeout_s: float) -> None:
        super().__init__(
            f"agent {agent!r} did not answer within {timeout_s:g}s",
            details={"agent": agent, "timeout_s": timeout_s},
        )
