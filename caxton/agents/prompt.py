"""Prompt assembly for config agents: pure functions over values, no I/O.

A request becomes an LLM call in three steps, each here:

1. :func:`request_text` turns the message content into the ``{{request}}`` text.
2. :func:`memory_context` and :func:`conversation_text` format what the runtime fetched.
3. :func:`build_prompt` renders ``user_prompt_template`` and decides where the context
   goes: a variable the template uses is filled in place; memory context the template does
   not ask for is appended to the system prompt, and earlier turns it does not ask for are
   sent as earlier chat messages, so enabling memory or a conversation never needs a
   template edit.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Final

import attrs

from caxton.agents.validate import template_variables
from caxton.llm.types import Message as ChatMessage

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from caxton.memory.types import SearchHit
    from caxton.messages import Message

#: Longest observation text quoted in the memory context, in characters.
OBSERVATION_CHARS: Final = 500


@attrs.frozen(kw_only=True)
class Turn:
    """One earlier exchange step of the conversation: who spoke, and what."""

    role: str  # "user" or "assistant"
    text: str


@attrs.frozen(kw_only=True)
class Prompt:
    """What the first LLM call of a request sends."""

    system: str
    messages: tuple[ChatMessage, ...]


def request_text(content: str | dict[str, Any]) -> str:
    """The ``{{request}}`` text: a string as it is; an object's ``text``/``content``/``query``
    string when it has one, else the object as JSON."""
    if isinstance(content, str):
        return content
    for key in ("text", "content", "query", "request"):
        value = content.get(key)
        if isinstance(value, str):
            return value
    return json.dumps(content, ensure_ascii=False, sort_keys=True)


def memory_context(hits: Sequence[SearchHit]) -> str:
    """Search hits as prompt text, one entity per line, best first."""
    lines = []
    for hit in hits:
        entity = hit.entity
        observations = "; ".join(
            text if len(text) <= OBSERVATION_CHARS else text[:OBSERVATION_CHARS] + "…"
            for text in entity.observations
        )
        lines.append(f"- {entity.name} ({entity.entity_type}): {observations}".rstrip(": "))
    return "\n".join(lines)


def turns_of(messages: Sequence[Message], agent: str) -> list[Turn]:
    """A conversation's messages as turns seen from ``agent`` (its own replies are the
    assistant's), skipping failures."""
    turns = []
    for message in messages:
        if message.performative in ("failure", "not_understood"):
            continue
        role = "assistant" if message.sender == agent else "user"
        turns.append(Turn(role=role, text=request_text(message.content)))
    return turns


def conversation_text(turns: Sequence[Turn]) -> str:
    """Turns as a transcript for ``{{conversation}}``."""
    return "\n".join(f"{turn.role}: {turn.text}" for turn in turns)


def uses(template: str, variable: str) -> bool:
    """Whether ``template`` mentions ``{{variable}}``."""
    found, _ = template_variables(template)
    return any(raw.strip() == variable for raw in found)


def render(
    template: str,
    *,
    request: str,
    memory: str,
    conversation: str,
    parameters: Mapping[str, Any],
) -> str:
    """Fill every ``{{variable}}`` of ``template`` (validation already rejected unknown ones;
    one that is still unknown renders empty)."""

    def fill(raw: str) -> str:
        variable = raw.strip()
        if variable == "request":
            return request
        if variable == "memory_context":
            return memory
        if variable == "conversation":
            return conversation
        if variable.startswith("parameters."):
            return _parameter(parameters, variable.removeprefix("parameters."))
        return ""

    # one linear pass (issue #13): text up to each {{, the filled variable, then on after }}
    parts: list[str] = []
    position = 0
    while (start := template.find("{{", position)) >= 0:
        end = template.find("}}", start + 2)
        if end < 0:
            break
        parts += (template[position:start], fill(template[start + 2 : end]))
        position = end + 2
    parts.append(template[position:])
    return "".join(parts).strip()


def build_prompt(
    *,
    system_prompt: str,
    template: str,
    request: str,
    memory: str,
    turns: Sequence[Turn],
    parameters: Mapping[str, Any],
) -> Prompt:
    """The system prompt and chat messages for the first call; see the module docstring."""
    transcript = conversation_text(turns)
    user = render(
        template,
        request=request,
        memory=memory,
        conversation=transcript,
        parameters=parameters,
    )
    system = system_prompt.strip()
    if memory and not uses(template, "memory_context"):
        system = f"{system}\n\nRelevant memory:\n{memory}".strip()
    earlier = [] if uses(template, "conversation") else [turn for turn in turns if turn.text]
    return Prompt(system=system, messages=_alternating([*earlier, Turn(role="user", text=user)]))


def _alternating(turns: Sequence[Turn]) -> tuple[ChatMessage, ...]:
    """Chat messages that start with the user and alternate (Anthropic requires both):
    consecutive turns of one role are joined, a leading assistant turn is dropped."""
    merged: list[Turn] = []
    for turn in turns:
        role = "assistant" if turn.role == "assistant" else "user"
        if not merged and role == "assistant":
            continue
        if merged and merged[-1].role == role:
            merged[-1] = Turn(role=role, text=f"{merged[-1].text}\n\n{turn.text}")
        else:
            merged.append(Turn(role=role, text=turn.text))
    return tuple(
        ChatMessage(role="assistant" if turn.role == "assistant" else "user", content=turn.text)
        for turn in merged
    )


def _parameter(parameters: Mapping[str, Any], path: str) -> str:
    value: Any = parameters
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return ""
        value = value[part]
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)
