"""Agents as files: specs parsed from TOML, and the pure core of the version registry."""

from __future__ import annotations

from caxton.agents.problems import AgentSpecError, SpecProblem
from caxton.agents.schema import BUILTIN_TOOLS, documented_key_paths
from caxton.agents.spec import (
    AgentSpec,
    AnyAgentSpec,
    SpecReport,
    WasmAgentSpec,
    check_agent_file,
    check_spec_size,
    parse_agent_spec,
    spec_as_dict,
)
from caxton.agents.validate import MAX_SPEC_BYTES
from caxton.agents.versions import (
    AgentState,
    AgentVersions,
    Decision,
    DuplicateAgentName,
    Step,
    VersionRegistry,
    canary_bucket,
)

__all__ = [
    "BUILTIN_TOOLS",
    "MAX_SPEC_BYTES",
    "AgentSpec",
    "AgentSpecError",
    "AgentState",
    "AgentVersions",
    "AnyAgentSpec",
    "Decision",
    "DuplicateAgentName",
    "SpecProblem",
    "SpecReport",
    "Step",
    "VersionRegistry",
    "WasmAgentSpec",
    "canary_bucket",
    "check_agent_file",
    "check_spec_size",
    "documented_key_paths",
    "parse_agent_spec",
    "spec_as_dict",
]
