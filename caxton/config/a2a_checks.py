"""Checks of the ``a2a`` section that span keys (names, URLs, timeouts), for the config loader."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from caxton.config.model import A2AConfig

#: Agent names (DESIGN §4); a remote agent is named like a local one.
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")
#: Most remote agents one server declares.
MAX_REMOTE_AGENTS = 256


def a2a_problems(a2a: A2AConfig) -> list[str]:
    """What is wrong with ``a2a`` (one line per finding, with the key path and the fix)."""
    problems: list[str] = []
    if a2a.max_tasks < 1:
        problems.append("a2a.max_tasks: must be at least 1")
    for key, seconds in (("a2a.task_ttl", a2a.task_ttl), ("a2a.card_refresh", a2a.card_refresh)):
        if seconds <= 0:
            problems.append(f"{key}: must be more than 0s")
    if a2a.max_response_size < 1024:
        problems.append("a2a.max_response_size: must be at least 1KB")
    if len(a2a.remote_agents) > MAX_REMOTE_AGENTS:
        problems.append(f"a2a.remote_agents: at most {MAX_REMOTE_AGENTS} remote agents")
    seen: set[str] = set()
    for index, remote in enumerate(a2a.remote_agents):
        where = f"a2a.remote_agents[{index}]"
        if not NAME_PATTERN.match(remote.name):
            problems.append(
                f"{where}.name: {remote.name!r} is not an agent name (1-64 characters, a "
                "letter first, then letters, digits, - or _)"
            )
        elif remote.name in seen:
            problems.append(f"{where}.name: {remote.name!r} is declared twice")
        seen.add(remote.name)
        parts = urlsplit(remote.card_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            problems.append(
                f"{where}.card_url: {remote.card_url!r} is not an http(s) URL; give the "
                "card's URL, such as https://host/a2a/echo/.well-known/agent-card.json"
            )
        elif parts.username or parts.password:
            problems.append(
                f"{where}.card_url: put credentials in api_key or bearer_token, not in the URL"
            )
        for key, value in (("api_key", remote.api_key), ("bearer_token", remote.bearer_token)):
            if value is not None and not value.strip():
                problems.append(
                    f"{where}.{key}: is empty (is the variable it names set?); remove the key "
                    "to send no credential"
                )
        if remote.api_key is not None and remote.bearer_token is not None:
            problems.append(f"{where}: give api_key or bearer_token, not both")
        if not 0 < remote.timeout <= 3600:
            problems.append(f"{where}.timeout: must be more than 0s and at most 1h")
        for capability in remote.capabilities:
            if not capability or len(capability) > 128:
                problems.append(f"{where}.capabilities: {capability!r} is not a capability name")
    return problems
