"""Tools config agents may call: the built-ins and WASM agents as tools."""

from caxton.agents.tools.base import Param, Tool, ToolCallContext, ToolFailed, function_name
from caxton.agents.tools.builtin import (
    AgentKinds,
    MessageAsker,
    ToolDeps,
    builtin_tools,
    error_result,
    tools_for,
    wasm_tool,
)

__all__ = [
    "AgentKinds",
    "MessageAsker",
    "Param",
    "Tool",
    "ToolCallContext",
    "ToolDeps",
    "ToolFailed",
    "builtin_tools",
    "error_result",
    "function_name",
    "tools_for",
    "wasm_tool",
]
