"""What a WASM guest passes to caxton.send_message becomes a message one hop further."""

from __future__ import annotations

from caxton.agents.runtime import message_from_guest
from caxton.messages import Message

HANDLING = Message(sender="client", receiver="asker", content="x", hop=2)
LIMIT = 100


def test_a_capability_message_one_hop_further_in_the_same_conversation() -> None:
    sent = message_from_guest(
        {"capability": "text-statistics", "content": "a b", "reply_with": "r1"},
        sender="asker",
        handling=HANDLING,
        max_message_size=LIMIT,
    )
    assert sent is not None
    assert (sent.sender, sent.capability, sent.receiver) == ("asker", "text-statistics", None)
    assert (sent.hop, sent.conversation_id) == (3, HANDLING.conversation_id)
    assert (sent.performative, sent.reply_with) == ("request", "r1")
    assert sent.message_id != HANDLING.message_id


def test_an_explicit_conversation_is_kept() -> None:
    sent = message_from_guest(
        {"receiver": "echo", "content": {"k": 1}, "conversation_id": "c9", "performative": "query"},
        sender="asker",
        handling=HANDLING,
        max_message_size=LIMIT,
    )
    assert sent is not None
    assert (sent.receiver, sent.conversation_id, sent.performative) == ("echo", "c9", "query")


def test_envelopes_that_are_refused() -> None:
    for envelope in (
        {"receiver": "echo", "capability": "echo", "content": "x"},
        {"content": "x"},
        {"receiver": "echo", "content": 3},
        {"receiver": "echo", "content": "x", "performative": "shout"},
        {"receiver": 5, "content": "x"},
        {"receiver": "echo", "content": "x", "extra": 1},
        {"receiver": "echo", "content": "x" * (LIMIT + 1)},
        ["not", "an", "object"],
    ):
        sent = message_from_guest(
            envelope, sender="asker", handling=HANDLING, max_message_size=LIMIT
        )
        assert sent is None, envelope


def test_content_may_be_left_out() -> None:
    sent = message_from_guest(
        {"receiver": "echo"}, sender="asker", handling=HANDLING, max_message_size=LIMIT
    )
    assert sent is not None
    assert sent.content == ""
