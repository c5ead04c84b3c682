"""caxton.agents.prompt: template rendering and where context goes (pure)."""

from __future__ import annotations

import datetime as dt

from caxton.agents.prompt import (
    Turn,
    build_prompt,
    memory_context,
    render,
    request_text,
    turns_of,
)
from caxton.memory.types import Entity, Scope, SearchHit
from caxton.messages import Message

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def hit(name: str, *observations: str) -> SearchHit:
    entity = Entity(
        name=name,
        entity_type="fact",
        observations=observations,
        scope=Scope.GLOBAL,
        agent=None,
        metadata={},
        created_at=NOW,
        updated_at=NOW,
    )
    return SearchHit(entity=entity, similarity=0.9)


def test_render_fills_every_variable() -> None:
    text = render(
        "{{ request }} | {{memory_context}} | {{conversation}} | {{parameters.tone}} | "
        "{{parameters.limits.words}}",
        request="hi",
        memory="m",
        conversation="c",
        parameters={"tone": "dry", "limits": {"words": 20}},
    )
    assert text == "hi | m | c | dry | 20"


def test_request_text_of_objects() -> None:
    assert request_text("plain") == "plain"
    assert request_text({"text": "from text"}) == "from text"
    assert request_text({"n": 1}) == '{"n": 1}'


def test_memory_context_lists_hits_best_first() -> None:
    text = memory_context([hit("Falcon", "code word PELICAN", "launch in May"), hit("Owl")])
    assert text == "- Falcon (fact): code word PELICAN; launch in May\n- Owl (fact)"


def test_memory_goes_to_the_system_prompt_when_the_template_does_not_ask() -> None:
    prompt = build_prompt(
        system_prompt="Be brief.",
        template="{{request}}",
        request="q",
        memory="- a (fact): b",
        turns=[],
        parameters={},
    )
    assert prompt.system == "Be brief.\n\nRelevant memory:\n- a (fact): b"
    assert [m.content for m in prompt.messages] == ["q"]


def test_earlier_turns_become_alternating_messages_unless_templated() -> None:
    turns = [
        Turn(role="assistant", text="dropped: a conversation starts with the user"),
        Turn(role="user", text="one"),
        Turn(role="user", text="two"),
        Turn(role="assistant", text="answer"),
    ]
    prompt = build_prompt(
        system_prompt="",
        template="{{request}}",
        request="now",
        memory="",
        turns=turns,
        parameters={},
    )
    assert [(m.role, m.content) for m in prompt.messages] == [
        ("user", "one\n\ntwo"),
        ("assistant", "answer"),
        ("user", "now"),
    ]
    templated = build_prompt(
        system_prompt="",
        template="{{conversation}}\n{{request}}",
        request="now",
        memory="",
        turns=turns[1:],
        parameters={},
    )
    assert [m.content for m in templated.messages] == [
        "user: one\nuser: two\nassistant: answer\nnow"
    ]


def test_turns_of_a_conversation_seen_from_the_agent() -> None:
    asked = Message(sender=None, receiver="bot", content="hello")
    answered = asked.reply("hi there", sender="bot")
    failed = asked.reply("oops", sender="bot", performative="failure")
    assert turns_of([asked, answered, failed], "bot") == [
        Turn(role="user", text="hello"),
        Turn(role="assistant", text="hi there"),
    ]
