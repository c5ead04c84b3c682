"""Agent files for the config-agent tests (a module of its own: ``conftest`` names clash)."""

from __future__ import annotations

from typing import Any


def agent_toml(
    name: str,
    base_url: str,
    *,
    provider: str = "openai",
    system: str = "You are terse.",
    template: str = "{{request}}",
    tools: tuple[str, ...] = (),
    extra: str = "",
) -> str:
    """A config agent pointed at ``base_url``; ``extra`` is appended (more tables)."""
    tool_list = ", ".join(f'"{tool}"' for tool in tools)
    return (
        f'name = "{name}"\nversion = "1.0.0"\ncapabilities = ["chat"]\n'
        f"tools = [{tool_list}]\n"
        f"system_prompt = '''{system}'''\nuser_prompt_template = '''{template}'''\n"
        f'[llm]\nprovider = "{provider}"\nmodel = "scripted-1"\nbase_url = "{base_url}"\n'
        f'max_retries = 0\ntimeout = "10s"\n{extra}'
    )


def openai_url(server: Any) -> str:
    return f"{server.url}/v1"
