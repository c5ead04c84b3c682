"""What a tool is: one definition gives the model its schema and the runtime its checks.

A :class:`Tool` declares its parameters once (:class:`Param`); :meth:`Tool.spec` turns them
into the JSON Schema offered to the model and :meth:`Tool.check` validates the arguments the
model sends against the same declaration before the tool runs. A tool reports trouble by
raising :class:`ToolFailed` (or any :class:`~caxton.errors.CaxtonError`); the runtime hands
that back to the model as the tool's result, so the model can correct itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final, Literal

import attrs

from caxton.agents.spec import AgentSpec
from caxton.errors import CaxtonError
from caxton.llm.types import ToolSpec
from caxton.messages import Message

if TYPE_CHECKING:
    from caxton.agents.spec import ToolSettings

ParamType = Literal["string", "integer", "number", "boolean", "string_list", "object"]
_JSON_TYPES: Final[dict[str, dict[str, Any]]] = {
    "string": {"type": "string"},
    "integer": {"type": "integer"},
    "number": {"type": "number"},
    "boolean": {"type": "boolean"},
    "string_list": {"type": "array", "items": {"type": "string"}},
    "object": {"type": "object"},
}
#: Longest function name both OpenAI and Anthropic accept.
FUNCTION_NAME_MAX: Final = 64
_FUNCTION_NAME: Final = re.compile(r"[^A-Za-z0-9_-]")


class ToolFailed(CaxtonError):
    """A tool could not do what the model asked; the message goes back to the model."""

    code = "TOOL_FAILED"
    http_status = 502


@attrs.frozen(kw_only=True)
class Param:
    """One argument of a tool."""

    name: str
    type: ParamType
    description: str
    required: bool = False
    choices: tuple[str, ...] = ()

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {**_JSON_TYPES[self.type], "description": self.description}
        if self.choices:
            schema["enum"] = list(self.choices)
        return schema

    def accepts(self, value: object) -> bool:
        if self.type == "string":
            return isinstance(value, str) and (not self.choices or value in self.choices)
        if self.type == "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        if self.type == "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        if self.type == "boolean":
            return isinstance(value, bool)
        if self.type == "string_list":
            return isinstance(value, list) and all(isinstance(item, str) for item in value)
        return isinstance(value, dict)


@attrs.frozen(kw_only=True)
class ToolCallContext:
    """What a running tool knows about the request it serves."""

    spec: AgentSpec
    message: Message  # the message the agent is answering (hop, conversation)

    @property
    def agent(self) -> str:
        return self.spec.name

    def settings(self, tool: str) -> ToolSettings | None:
        """``[tool_config.<tool>]`` of the agent, if it has one."""
        return self.spec.tool_config.get(tool)


@attrs.frozen(kw_only=True)
class Tool:
    """A tool as the agent file names it (``memory_search``, ``wasm:echo``).

    ``function_name`` is what the model sees; providers accept only ``[A-Za-z0-9_-]{1,64}``,
    so ``wasm:echo`` is offered as ``wasm_echo``.
    """

    name: str
    description: str
    params: tuple[Param, ...]
    run: Callable[[dict[str, Any], ToolCallContext], Awaitable[str]]

    @property
    def function_name(self) -> str:
        return function_name(self.name)

    def spec(self) -> ToolSpec:
        """The tool as offered to the model."""
        schema = {
            "type": "object",
            "properties": {param.name: param.schema() for param in self.params},
            "required": [param.name for param in self.params if param.required],
        }
        return ToolSpec(
            name=self.function_name,
            description=self.description,
            parameters_json=json.dumps(schema),
        )

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """``arguments`` checked against the declaration; unknown keys are dropped.

        Raises:
            ToolFailed: a required argument is missing or one has the wrong type.
        """
        checked: dict[str, Any] = {}
        for param in self.params:
            if param.name not in arguments or arguments[param.name] is None:
                if param.required:
                    raise ToolFailed(
                        f"{self.name}: the argument {param.name!r} is required "
                        f"({param.description})"
                    )
                continue
            value = arguments[param.name]
            if not param.accepts(value):
                expected: str = "list of strings" if param.type == "string_list" else param.type
                if param.choices:
                    expected += " (one of " + ", ".join(param.choices) + ")"
                raise ToolFailed(
                    f"{self.name}: the argument {param.name!r} must be a {expected}, "
                    f"got {json.dumps(value)[:80]}"
                )
            checked[param.name] = value
        return checked


def function_name(tool: str) -> str:
    """The name a tool is offered under (see :class:`Tool`)."""
    name = _FUNCTION_NAME.sub("_", tool)
    return name[:FUNCTION_NAME_MAX]
