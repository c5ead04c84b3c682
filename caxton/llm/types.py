"""Provider-neutral chat requests and the events a streamed reply is made of.

These are plain frozen values: the OpenAI and Anthropic modules translate them to and from
their wire formats, so an agent never sees which provider answered.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import attrs

Role = Literal["user", "assistant", "tool"]


def _json_object_text(instance: object, attribute: attrs.Attribute[str], value: str) -> None:
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise ValueError(f"{attribute.name} must be JSON text, got {value!r}: {exc}") from None
    if not isinstance(parsed, dict):
        raise ValueError(f"{attribute.name} must be a JSON object, got {value!r}")


@attrs.frozen(kw_only=True)
class ToolCall:
    """The model asks for a tool: ``arguments`` is the JSON object text, assembled in full."""

    id: str
    name: str
    arguments: str = attrs.field(default="{}", validator=_json_object_text)

    def parsed_arguments(self) -> dict[str, Any]:
        """The arguments as a dict (always an object; checked at construction)."""
        value: dict[str, Any] = json.loads(self.arguments)
        return value


@attrs.frozen(kw_only=True)
class Message:
    """One turn of the conversation.

    ``assistant`` turns may carry the ``tool_calls`` the model made; a ``tool`` turn is the
    result of one call and names it in ``tool_call_id``.
    """

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")


@attrs.frozen(kw_only=True)
class ToolSpec:
    """A tool offered to the model; ``parameters`` is the JSON Schema of its arguments."""

    name: str
    description: str = ""
    parameters_json: str = attrs.field(
        default='{"type": "object", "properties": {}}', validator=_json_object_text
    )

    def parameters(self) -> dict[str, Any]:
        value: dict[str, Any] = json.loads(self.parameters_json)
        return value


@attrs.frozen(kw_only=True)
class ChatRequest:
    """Everything one call needs; unset sampling values take the provider settings' defaults."""

    messages: tuple[Message, ...]
    system: str = ""
    tools: tuple[ToolSpec, ...] = ()
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None


@attrs.frozen
class TextDelta:
    """A piece of the reply text, in order."""

    text: str


@attrs.frozen(kw_only=True)
class Usage:
    """Tokens one call used, as the provider reported them.

    ``input_tokens`` are the prompt tokens read at the full price: the cached ones are apart,
    in ``cache_read_tokens`` (read from the provider's prompt cache) and
    ``cache_write_tokens`` (written to it), so the four figures add up to what was billed
    (OpenAI's ``prompt_tokens`` include its ``cached_tokens``; they are taken out here).
    """

    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_tokens: int = 0
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return (
            self.input_tokens
            + self.output_tokens
            + self.cache_read_tokens
            + self.cache_write_tokens
        )

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            input_tokens=self.input_tokens + other.input_tokens,
            output_tokens=self.output_tokens + other.output_tokens,
            cache_read_tokens=self.cache_read_tokens + other.cache_read_tokens,
            cache_write_tokens=self.cache_write_tokens + other.cache_write_tokens,
        )


@attrs.frozen(kw_only=True)
class Finish:
    """The last event of every successful stream.

    ``reason`` is normalised: ``stop``, ``length``, ``tool_calls`` or the provider's own word.
    """

    reason: str
    usage: Usage = Usage()
    #: The model that answered, as the provider named it (``None`` when it did not say).
    model: str | None = None


LLMEvent = TextDelta | ToolCall | Finish
