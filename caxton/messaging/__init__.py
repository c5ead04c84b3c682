"""Messages between agents: routing by receiver or capability, and conversations (DESIGN §5).

The lower layers are pure (:mod:`caxton.messaging.routing`, :mod:`caxton.messaging.envelope`);
:class:`Router` and :class:`Conversations` are components started by the server.
"""

from caxton.messaging.conversations import (
    ACTIVE,
    CLOSED,
    STATUSES,
    Conversation,
    Conversations,
    ConversationSummary,
)
from caxton.messaging.errors import ConversationClosed, ConversationNotFound, MessageTooLarge
from caxton.messaging.router import CapabilityNotFound, Router
from caxton.messaging.routing import STRATEGIES, Choice, Provider, Strategy, choose
from caxton.messaging.schema import CONVERSATION_MIGRATIONS

__all__ = [
    "ACTIVE",
    "CLOSED",
    "CONVERSATION_MIGRATIONS",
    "STATUSES",
    "STRATEGIES",
    "CapabilityNotFound",
    "Choice",
    "Conversation",
    "ConversationClosed",
    "ConversationNotFound",
    "ConversationSummary",
    "Conversations",
    "MessageTooLarge",
    "Provider",
    "Router",
    "Strategy",
    "choose",
]
