"""``[[mcp_servers]]`` of a config agent file: its checks and the typed value (the keys are
documented with every other agent key, in :data:`caxton.agents.schema.MCP_SERVER_KEYS`).

Pure: no process is started and no URL is contacted here; :mod:`caxton.agents.mcp_tools.connections`
does that when the agent version loads.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Final

import attrs

if TYPE_CHECKING:
    from caxton.agents.validate import SpecChecker

#: Most MCP servers one agent may use.
MAX_MCP_SERVERS: Final = 16
#: A server's name goes into tool names (``mcp_<server>_<tool>``): short and plain.
SERVER_NAME: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$")
DEFAULT_CALL_TIMEOUT_S: Final = 30.0
#: ``max_response_size`` and ``max_restarts`` when the table leaves them out.
DEFAULT_MAX_RESPONSE_BYTES: Final = 4 * 1024 * 1024
DEFAULT_MAX_RESTARTS: Final = 5
DEFAULT_START_TIMEOUT_S: Final = 20.0
#: Longest ``timeout`` and ``startup_timeout`` accepted: an agent file must not be able to
#: hold a version's load (or a call) for hours.
MAX_CALL_TIMEOUT_S: Final = 3600.0
MAX_START_TIMEOUT_S: Final = 300.0


@attrs.frozen(kw_only=True)
class McpServerSpec:
    """One ``[[mcp_servers]]`` table.

    Attributes:
        command: the stdio program, or ``None`` for a streamable HTTP server (``url``).
        env: for stdio, variables given to the process (``${VAR}`` not yet expanded).
        headers: for HTTP, request headers (``${VAR}`` not yet expanded).
        allowed_tools: the allow-list, or ``None`` for every tool the server lists.
    """

    name: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = attrs.field(factory=dict)
    url: str | None = None
    headers: Mapping[str, str] = attrs.field(factory=dict)
    allowed_tools: tuple[str, ...] | None = None
    timeout_s: float = DEFAULT_CALL_TIMEOUT_S
    startup_timeout_s: float = DEFAULT_START_TIMEOUT_S
    #: HTTP: the largest JSON reply or SSE event read (a call's whole stream: 4 times this)
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES
    #: stdio: restarts within the restart window before the server stays failed
    max_restarts: int = DEFAULT_MAX_RESTARTS

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "streamable-http"


def check_mcp_servers(checker: SpecChecker, servers: Sequence[Mapping[str, Any]]) -> None:
    """Errors of ``[[mcp_servers]]`` beyond key types: names, transport, string tables."""
    if len(servers) > MAX_MCP_SERVERS:
        checker.error(
            ("mcp_servers",),
            f"{len(servers)} MCP servers listed; at most {MAX_MCP_SERVERS} are allowed",
            "split the tools over several agents",
        )
    seen: set[str] = set()
    for index, server in enumerate(servers):
        path = ("mcp_servers", index)
        name = server.get("name")
        if isinstance(name, str):
            if SERVER_NAME.match(name) is None:
                checker.error(
                    (*path, "name"),
                    f"mcp_servers[{index}].name {name!r} is not a valid server name",
                    "use 1-32 letters, digits, '-' or '_', e.g. name = \"files\"",
                )
            elif name.lower() in seen:
                checker.error(
                    (*path, "name"),
                    f"two MCP servers are named {name!r}",
                    "give each [[mcp_servers]] table its own name",
                )
            seen.add(name.lower())
        has_command, has_url = "command" in server, "url" in server
        if has_command == has_url:
            checker.error(
                path,
                f"mcp_servers[{index}] must set exactly one of command (a stdio server) or "
                "url (a streamable HTTP server)",
                'e.g. command = "python3" with args = ["server.py"], or url = '
                '"http://127.0.0.1:8000/mcp"',
            )
        url = server.get("url")
        if isinstance(url, str) and not url.startswith(("http://", "https://")):
            checker.error(
                (*path, "url"),
                f"mcp_servers[{index}].url must be an http or https URL, got {url[:80]!r}",
                'e.g. url = "http://127.0.0.1:8000/mcp"',
            )
        if isinstance(server.get("command"), str) and not server["command"].strip():
            checker.error((*path, "command"), f"mcp_servers[{index}].command is empty")
        for table, wrong in (("env", has_url), ("headers", has_command)):
            values = server.get(table)
            if values is None:
                continue
            if wrong:
                other = "url" if table == "env" else "command"
                checker.error(
                    (*path, table),
                    f"mcp_servers[{index}].{table} does not apply to a server with {other}",
                    f"remove {table}, or use {'command' if table == 'env' else 'url'}",
                )
            for key, value in values.items():
                if not isinstance(value, str):
                    checker.error(
                        (*path, table, key),
                        f"mcp_servers[{index}].{table}.{key} must be a string",
                        f'put the value in quotes: {key} = "{value}"',
                    )
        for key, applies, other in (
            ("max_response_size", has_url, "command"),
            ("max_restarts", has_command, "url"),
        ):
            if key in server and not applies:
                checker.error(
                    (*path, key),
                    f"mcp_servers[{index}].{key} does not apply to a server with {other}",
                    f"remove {key}",
                )
        bounds = (
            ("timeout", DEFAULT_CALL_TIMEOUT_S, MAX_CALL_TIMEOUT_S),
            ("startup_timeout", DEFAULT_START_TIMEOUT_S, MAX_START_TIMEOUT_S),
        )
        for key, default, most in bounds:
            value = server.get(key)
            if isinstance(value, int | float) and not 0 < value <= most:
                checker.error(
                    (*path, key),
                    f"mcp_servers[{index}].{key} must be more than 0s and at most {most:g}s, "
                    f"got {value:g}s",
                    f'e.g. {key} = "{default:g}s"',
                )


def build_mcp_servers(servers: Sequence[Mapping[str, Any]]) -> tuple[McpServerSpec, ...]:
    """The checked tables as values (defaults filled in)."""
    built = []
    for server in servers:
        allowed = server.get("tools")
        built.append(
            McpServerSpec(
                name=server["name"],
                command=server.get("command"),
                args=tuple(server.get("args", ())),
                env=dict(server.get("env", {})),
                url=server.get("url"),
                headers=dict(server.get("headers", {})),
                allowed_tools=tuple(allowed) if allowed is not None else None,
                timeout_s=float(server.get("timeout", DEFAULT_CALL_TIMEOUT_S)),
                startup_timeout_s=float(server.get("startup_timeout", DEFAULT_START_TIMEOUT_S)),
                max_response_bytes=int(server.get("max_response_size", DEFAULT_MAX_RESPONSE_BYTES)),
                max_restarts=int(server.get("max_restarts", DEFAULT_MAX_RESTARTS)),
            )
        )
    return tuple(built)
