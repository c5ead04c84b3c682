"""Envelopes from outside: validated before anything is routed; the server sets the ids."""

from __future__ import annotations

from typing import Any

import pytest

from caxton.errors import ValidationFailed
from caxton.messages import PERFORMATIVES, Message
from caxton.messaging.envelope import content_size, parse_envelope
from caxton.messaging.errors import MessageTooLarge


def parse(body: dict[str, Any], limit: int = 1000, **kwargs: Any) -> Message:
    return parse_envelope(
        body, sender=kwargs.pop("sender", "client"), max_message_size=limit, **kwargs
    )


def test_a_full_envelope() -> None:
    message = parse(
        {
            "performative": "query",
            "sender": "someone else",
            "capability": "stats",
            "content": {"text": "a b"},
            "conversation_id": "c1",
            "reply_with": "r1",
            "in_reply_to": "m0",
            "message_id": "forged",
            "hop": 7,
            "created_at": 1,
        },
        sender="me",
    )
    assert (message.performative, message.sender, message.capability) == ("query", "me", "stats")
    assert message.receiver is None
    assert (message.conversation_id, message.reply_with, message.in_reply_to) == ("c1", "r1", "m0")
    # server-set fields (the sender too: the caller is authenticated) are not taken from it
    assert message.message_id != "forged"
    assert message.hop == 0
    assert message.created_at > 1


def test_defaults() -> None:
    message = parse({"receiver": "echo", "content": "hi"})
    assert (message.performative, message.sender) == ("request", "client")
    assert len(message.conversation_id) == 32


@pytest.mark.parametrize(
    ("body", "says"),
    [
        ({"receiver": "a", "content": "x", "performative": "shout"}, "unknown performative"),
        ({"receiver": "a", "capability": "b", "content": "x"}, "not both"),
        ({"content": "x"}, "not neither"),
        ({"receiver": "", "content": "x"}, "non-empty string"),
        ({"receiver": "a"}, '"content" is missing'),
        ({"receiver": "a", "content": ["x"]}, "string or a JSON object"),
        ({"receiver": "a", "content": "x", "conversation_id": 3}, "conversation_id"),
        ({"receiver": "a", "content": "x", "to": "b"}, "unknown envelope key to"),
    ],
)
def test_bad_envelopes(body: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationFailed) as caught:
        parse(body)
    assert says in caught.value.message


def test_content_over_the_limit() -> None:
    assert content_size("é") == 2
    assert content_size({"a": 1}) == len('{"a":1}')
    parse({"receiver": "a", "content": "x" * 10}, limit=10)
    with pytest.raises(MessageTooLarge) as caught:
        parse({"receiver": "a", "content": "x" * 11}, limit=10)
    assert caught.value.http_status == 413
    assert caught.value.details == {"size": 11, "limit": 10}


def test_every_performative_is_accepted() -> None:
    for performative in PERFORMATIVES:
        assert parse({"receiver": "a", "content": "", "performative": performative}).performative


def test_the_message_value_checks_itself() -> None:
    with pytest.raises(ValueError, match="not both"):
        Message(receiver="a", capability="b")
    with pytest.raises(ValueError, match="performative"):
        Message(performative="shout")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hop"):
        Message(hop=-1)
    request = Message(sender="a", receiver="b", content="q", reply_with="r", hop=3)
    reply = request.reply("answer", sender="b")
    assert (reply.receiver, reply.in_reply_to, reply.hop) == ("a", "r", 3)
    assert reply.conversation_id == request.conversation_id


def test_a_route_that_names_the_receiver() -> None:
    message = parse({"content": "hi"}, receiver="echo")
    assert (message.receiver, message.capability) == ("echo", None)
    assert parse({"receiver": "echo", "content": "hi"}, receiver="echo").receiver == "echo"
    for body in ({"receiver": "other", "content": "x"}, {"capability": "c", "content": "x"}):
        with pytest.raises(ValidationFailed, match="this route sends to agent 'echo'"):
            parse(body, receiver="echo")
    with pytest.raises(ValidationFailed, match="unknown envelope key stream"):
        parse({"content": "x", "stream": True}, receiver="echo")
    with pytest.raises(MessageTooLarge):
        parse({"content": "x" * 11}, limit=10, receiver="echo")


def test_an_agent_message_goes_one_hop_further_in_its_conversation() -> None:
    handling = Message(sender="client", receiver="asker", content="x", hop=2)
    sent = parse({"capability": "stats", "content": "a"}, sender="asker", handling=handling)
    assert (sent.sender, sent.hop, sent.conversation_id) == ("asker", 3, handling.conversation_id)
    other = parse(
        {"receiver": "echo", "content": "a", "conversation_id": "c9"},
        sender="asker",
        handling=handling,
    )
    assert (other.conversation_id, other.hop) == ("c9", 3)
