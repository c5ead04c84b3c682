"""Tool definitions: one declaration gives the schema and the argument checks (pure)."""

from __future__ import annotations

import json

import pytest

from caxton.agents.tools import ToolDeps, ToolFailed, builtin_tools, function_name, tools_for


def test_schemas_come_from_the_declarations() -> None:
    tools = builtin_tools(ToolDeps())
    assert sorted(tools) == ["http_client", "memory_search", "memory_store", "send_message"]
    schema = tools["memory_store"].spec().parameters()
    assert schema["required"] == ["name", "entity_type", "observations"]
    assert schema["properties"]["observations"]["type"] == "array"
    performative = tools["send_message"].spec().parameters()["properties"]["performative"]
    assert "accept_proposal" in performative["enum"]


def test_arguments_are_checked_before_a_tool_runs() -> None:
    tool = builtin_tools(ToolDeps())["memory_store"]
    with pytest.raises(ToolFailed, match="'observations' is required"):
        tool.check({"name": "a", "entity_type": "b"})
    with pytest.raises(ToolFailed, match="must be a list of strings"):
        tool.check({"name": "a", "entity_type": "b", "observations": "one"})
    assert tool.check({"name": "a", "entity_type": "b", "observations": ["x"], "junk": 1}) == {
        "name": "a",
        "entity_type": "b",
        "observations": ["x"],
    }


def test_wasm_agents_are_offered_under_provider_safe_names() -> None:
    tools = tools_for(("wasm:word-count", "memory_search"), ToolDeps())
    assert sorted(tools) == ["memory_search", "wasm_word-count"]
    spec = tools["wasm_word-count"].spec()
    assert json.loads(spec.parameters_json)["required"] == ["input"]
    assert function_name("wasm:" + "x" * 80) == "wasm_" + "x" * 59
