"""Every key an agent file may hold, as data: type, default, allowed values and help text.

The validator walks a parsed file against these tables, the spec builders read defaults from them,
and the documentation test checks that the README mentions every path returned by
:func:`documented_key_paths`. A key is documented once, here.

Paths are dotted. ``<tool>`` stands for any tool name under ``[tool_config]``; ``llm.fallback`` is
an array of tables whose items take the same keys as ``[llm]`` (except ``fallback``).
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping


class Kind(enum.Enum):
    """The TOML shape a key expects."""

    STRING = "string"
    INTEGER = "integer"
    NUMBER = "number"
    BOOLEAN = "boolean"
    STRING_LIST = "array of strings"
    DURATION = "duration"
    SIZE = "size"
    TABLE = "table"
    FREE_TABLE = "free table"
    TABLE_LIST = "array of tables"


@attrs.frozen(kw_only=True)
class KeyDoc:
    """One documented key.

    Attributes:
        path: dotted path, ``<tool>`` as the wildcard under ``tool_config``.
        kind: the shape of the value.
        help: one sentence for the documentation and for suggestions.
        default: the default as it would be written in the file, or ``None`` when there is none.
        choices: the allowed values of a string key, when the set is closed.
        minimum: the smallest allowed number (inclusive).
        maximum: the largest allowed number (inclusive).
        required: whether the file must set the key.
    """

    path: str
    kind: Kind
    help: str
    default: object = None
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None
    required: bool = False

    @property
    def name(self) -> str:
        """The last part of the path, as written in the file."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def parent(self) -> str:
        """The path of the table that holds the key (empty for top-level keys)."""
        return self.path.rsplit(".", 1)[0] if "." in self.path else ""


TOOL_WILDCARD = "<tool>"

BUILTIN_TOOLS: tuple[str, ...] = ("memory_search", "memory_store", "send_message", "http_client")
"""Tools every config agent may list; ``wasm:<agent-name>`` adds a WASM agent as a tool."""

TEMPLATE_VARIABLES: tuple[str, ...] = ("request", "memory_context", "conversation")
"""Variables of ``user_prompt_template`` besides ``parameters.<key>``."""

LLM_PROVIDERS: tuple[str, ...] = ("openai", "anthropic", "local", "none")
MEMORY_SCOPES: tuple[str, ...] = ("agent", "workspace", "global")
DEPLOYMENT_STRATEGIES: tuple[str, ...] = ("immediate", "blue-green", "canary")

_IDENTITY: tuple[KeyDoc, ...] = (
    KeyDoc(
        path="name",
        kind=Kind.STRING,
        required=True,
        help="Agent name: 1-64 letters, digits, '-' or '_', starting with a letter "
        "(not performance or validate).",
    ),
    KeyDoc(path="version", kind=Kind.STRING, default="0.1.0", help="Semantic version (1.2.3)."),
    KeyDoc(path="description", kind=Kind.STRING, default="", help="One line for listings."),
    KeyDoc(
        path="capabilities",
        kind=Kind.STRING_LIST,
        default=[],
        help="Capabilities messages can be routed to this agent by.",
    ),
    KeyDoc(
        path="documentation", kind=Kind.STRING, default="", help="Longer Markdown documentation."
    ),
)

_DEPLOYMENT: tuple[KeyDoc, ...] = (
    KeyDoc(path="deployment", kind=Kind.TABLE, help="How a new version replaces the running one."),
    KeyDoc(
        path="deployment.strategy",
        kind=Kind.STRING,
        default="blue-green",
        choices=DEPLOYMENT_STRATEGIES,
        help="immediate (stop the old version at once), blue-green (drain it) or canary.",
    ),
    KeyDoc(
        path="deployment.canary_percentage",
        kind=Kind.NUMBER,
        default=10,
        minimum=0,
        maximum=100,
        help="Share of new conversations a canary version takes (strategy = canary).",
    ),
)


def _llm_keys(prefix: str) -> tuple[KeyDoc, ...]:
    return (
        KeyDoc(
            path=f"{prefix}.provider",
            kind=Kind.STRING,
            choices=LLM_PROVIDERS,
            help="openai, anthropic, local (an OpenAI-compatible endpoint) or none.",
        ),
        KeyDoc(path=f"{prefix}.model", kind=Kind.STRING, help="Model name at the provider."),
        KeyDoc(path=f"{prefix}.base_url", kind=Kind.STRING, help="Endpoint URL (http or https)."),
        KeyDoc(
            path=f"{prefix}.api_key",
            kind=Kind.STRING,
            help='API key; write "${OPENAI_API_KEY}" to read it from the environment.',
        ),
        KeyDoc(
            path=f"{prefix}.temperature",
            kind=Kind.NUMBER,
            minimum=0,
            maximum=2,
            help="Sampling temperature, 0 to 2.",
        ),
        KeyDoc(
            path=f"{prefix}.max_tokens",
            kind=Kind.INTEGER,
            minimum=1,
            help="Most tokens in one answer.",
        ),
        KeyDoc(
            path=f"{prefix}.top_p",
            kind=Kind.NUMBER,
            minimum=0,
            maximum=1,
            help="Nucleus sampling, 0 to 1.",
        ),
        KeyDoc(path=f"{prefix}.timeout", kind=Kind.DURATION, help="Timeout of one LLM call."),
        KeyDoc(
            path=f"{prefix}.max_retries",
            kind=Kind.INTEGER,
            minimum=0,
            help="Retries of a failed LLM call.",
        ),
    )


MCP_SERVER_KEYS: tuple[KeyDoc, ...] = (
    KeyDoc(
        path="mcp_servers",
        kind=Kind.TABLE_LIST,
        default=[],
        help="MCP servers whose tools the model may call ([[mcp_servers]], one table each).",
    ),
    KeyDoc(
        path="mcp_servers.name",
        kind=Kind.STRING,
        required=True,
        help="Short name of the server (letters, digits, '-', '_'; up to 32); its tools are "
        "offered as mcp_<name>_<tool>.",
    ),
    KeyDoc(
        path="mcp_servers.command",
        kind=Kind.STRING,
        help="stdio server: the program to start (the agent version owns the process).",
    ),
    KeyDoc(
        path="mcp_servers.args",
        kind=Kind.STRING_LIST,
        default=[],
        help="stdio server: arguments of the command.",
    ),
    KeyDoc(
        path="mcp_servers.env",
        kind=Kind.FREE_TABLE,
        help="stdio server: environment variables (strings; ${VAR} expands); the server's own "
        "environment is not passed on beyond PATH, HOME and the like.",
    ),
    KeyDoc(
        path="mcp_servers.url",
        kind=Kind.STRING,
        help="Streamable HTTP server: the endpoint URL (http or https).",
    ),
    KeyDoc(
        path="mcp_servers.headers",
        kind=Kind.FREE_TABLE,
        help="Streamable HTTP server: request headers (strings; ${VAR} expands), e.g. "
        "Authorization.",
    ),
    KeyDoc(
        path="mcp_servers.tools",
        kind=Kind.STRING_LIST,
        help="Allow-list of the server's tool names; when absent every tool is offered.",
    ),
    KeyDoc(
        path="mcp_servers.timeout",
        kind=Kind.DURATION,
        default="30s",
        help="Longest wait for one tool call, at most 1h (the agent's request_timeout still "
        "applies).",
    ),
    KeyDoc(
        path="mcp_servers.startup_timeout",
        kind=Kind.DURATION,
        default="20s",
        help="Longest wait for the server to start and list its tools when the version loads "
        "(at most 5m; servers start together, within caxton.yaml agents.load_timeout).",
    ),
    KeyDoc(
        path="mcp_servers.max_response_size",
        kind=Kind.SIZE,
        default="4MiB",
        minimum=1024,
        maximum=256 * 1024**2,
        help="Streamable HTTP server: largest JSON reply, and largest SSE event, read from it "
        "(a call's whole SSE stream: 4 times this); a larger reply is cut off and becomes a "
        "tool error.",
    ),
    KeyDoc(
        path="mcp_servers.max_restarts",
        kind=Kind.INTEGER,
        default=5,
        minimum=0,
        maximum=100,
        help="stdio server: restarts after it exits or crashes, with backoff (0.5s doubling up "
        "to 30s), within 10 minutes; past them it stays failed until the agent reloads (0: "
        "never restarted).",
    ),
)
"""Keys of ``[[mcp_servers]]`` (issue #19; checked by :mod:`caxton.agents.mcp_tools.spec`)."""

CONFIG_AGENT_KEYS: tuple[KeyDoc, ...] = (
    *_IDENTITY,
    KeyDoc(
        path="tools",
        kind=Kind.STRING_LIST,
        default=[],
        help="Tools the model may call: " + ", ".join(BUILTIN_TOOLS) + " or wasm:<agent-name>.",
    ),
    KeyDoc(path="system_prompt", kind=Kind.STRING, default="", help="Instructions to the model."),
    KeyDoc(
        path="user_prompt_template",
        kind=Kind.STRING,
        default="{{request}}",
        help="Prompt for each request; variables {{request}}, {{memory_context}}, "
        "{{conversation}} and {{parameters.<key>}}.",
    ),
    KeyDoc(path="llm", kind=Kind.TABLE, help="LLM settings; unset keys use caxton.yaml llm:."),
    *_llm_keys("llm"),
    KeyDoc(
        path="llm.fallback",
        kind=Kind.TABLE_LIST,
        default=[],
        help="Other [llm] tables tried in order when the first is unreachable.",
    ),
    KeyDoc(path="memory", kind=Kind.TABLE, help="Long-term memory of the agent."),
    KeyDoc(
        path="memory.enabled",
        kind=Kind.BOOLEAN,
        default=True,
        help="Add memory context to prompts; true when the [memory] table is present.",
    ),
    KeyDoc(
        path="memory.scope",
        kind=Kind.STRING,
        default="agent",
        choices=MEMORY_SCOPES,
        help="Which memories the agent sees: agent, workspace or global.",
    ),
    KeyDoc(
        path="memory.auto_store",
        kind=Kind.BOOLEAN,
        default=False,
        help="Store every exchange in memory.",
    ),
    KeyDoc(path="memory.search", kind=Kind.TABLE, help="Semantic search for memory context."),
    KeyDoc(
        path="memory.search.similarity_threshold",
        kind=Kind.NUMBER,
        default=0.7,
        minimum=0,
        maximum=1,
        help="Smallest similarity (0 to 1) of a memory added to the prompt.",
    ),
    KeyDoc(
        path="memory.search.max_results",
        kind=Kind.INTEGER,
        default=5,
        minimum=1,
        maximum=1000,
        help="Most memories added to the prompt.",
    ),
    KeyDoc(
        path="memory.search.cache_ttl",
        kind=Kind.DURATION,
        default="0s",
        help="How long search results are cached (0s: no cache).",
    ),
    KeyDoc(path="performance", kind=Kind.TABLE, help="Concurrency and timeouts."),
    KeyDoc(
        path="performance.max_concurrent_requests",
        kind=Kind.INTEGER,
        default=10,
        minimum=1,
        help="Requests the agent serves at once; more wait.",
    ),
    KeyDoc(
        path="performance.request_timeout",
        kind=Kind.DURATION,
        default="60s",
        help="Deadline of one request, tool calls included.",
    ),
    KeyDoc(
        path="performance.max_tokens_per_day",
        kind=Kind.INTEGER,
        minimum=1,
        help="Daily token budget (every kind, cache included; resets at UTC midnight); "
        "over it, requests get 429 BUDGET_EXCEEDED.",
    ),
    KeyDoc(
        path="performance.max_cost_per_day",
        kind=Kind.NUMBER,
        minimum=0,
        help="Daily cost budget, priced by caxton.yaml usage.prices.",
    ),
    KeyDoc(
        path="performance.llm_config",
        kind=Kind.TABLE,
        help="Overrides of [llm] for this agent's requests.",
    ),
    KeyDoc(
        path="performance.llm_config.max_tokens",
        kind=Kind.INTEGER,
        minimum=1,
        help="Overrides llm.max_tokens.",
    ),
    KeyDoc(
        path="performance.llm_config.temperature",
        kind=Kind.NUMBER,
        minimum=0,
        maximum=2,
        help="Overrides llm.temperature.",
    ),
    KeyDoc(path="tool_config", kind=Kind.TABLE, help="Per-tool settings, one table per tool."),
    KeyDoc(
        path=f"tool_config.{TOOL_WILDCARD}",
        kind=Kind.TABLE,
        help="Settings of one tool, e.g. [tool_config.http_client].",
    ),
    KeyDoc(
        path=f"tool_config.{TOOL_WILDCARD}.timeout",
        kind=Kind.DURATION,
        help="Timeout of one call of the tool.",
    ),
    KeyDoc(
        path=f"tool_config.{TOOL_WILDCARD}.max_connections",
        kind=Kind.INTEGER,
        minimum=1,
        help="Connections the tool may open at once.",
    ),
    KeyDoc(
        path=f"tool_config.{TOOL_WILDCARD}.allowed_hosts",
        kind=Kind.STRING_LIST,
        help="Hosts http_client may reach: host (the scheme's default port) or host:port, "
        "*.domain for subdomains; loopback and private addresses only through an entry "
        "naming them (an IP, localhost, or private:<name>).",
    ),
    KeyDoc(path="conversation", kind=Kind.TABLE, help="Multi-turn behaviour."),
    KeyDoc(
        path="conversation.max_turns",
        kind=Kind.INTEGER,
        default=10,
        minimum=1,
        help="Most model turns (tool loops) for one request.",
    ),
    KeyDoc(
        path="conversation.timeout",
        kind=Kind.DURATION,
        default="5m",
        help="Idle time after which the conversation context is dropped.",
    ),
    KeyDoc(
        path="parameters",
        kind=Kind.FREE_TABLE,
        help="Free values the template reads as {{parameters.<key>}}.",
    ),
    *MCP_SERVER_KEYS,
    *_DEPLOYMENT,
)
"""Keys of a config (LLM-driven) agent file."""

WASM_AGENT_KEYS: tuple[KeyDoc, ...] = (
    *_IDENTITY,
    KeyDoc(path="wasm", kind=Kind.TABLE, help="Marks a WASM agent manifest."),
    KeyDoc(
        path="wasm.module",
        kind=Kind.STRING,
        help="Module path (.wasm or .wat) relative to the manifest; omitted on API deploys.",
    ),
    KeyDoc(path="limits", kind=Kind.TABLE, help="Resource limits of the WASM agent."),
    KeyDoc(
        path="limits.max_memory_bytes",
        kind=Kind.SIZE,
        default="10MiB",
        minimum=64 * 1024,
        maximum=4 * 1024**3,
        help="Linear memory the guest may grow to (a size or a number of bytes).",
    ),
    KeyDoc(
        path="limits.max_fuel",
        kind=Kind.INTEGER,
        default=500_000_000,
        minimum=1,
        help="CPU budget of one call, in wasmtime fuel units.",
    ),
    KeyDoc(
        path="limits.max_execution_time",
        kind=Kind.DURATION,
        default="30s",
        help="Wall-clock deadline of one call.",
    ),
    KeyDoc(
        path="limits.max_message_size",
        kind=Kind.SIZE,
        default="100KB",
        minimum=1,
        help="Largest reply the guest may send.",
    ),
    *_DEPLOYMENT,
)
"""Keys of a WASM agent manifest (a file with a ``[wasm]`` table)."""

ROOT_ONLY_KEYS: frozenset[str] = frozenset(
    doc.path
    for doc in (*CONFIG_AGENT_KEYS, *WASM_AGENT_KEYS)
    if "." not in doc.path and doc.kind not in (Kind.TABLE, Kind.FREE_TABLE)
)
"""Top-level keys that are never valid inside a table; finding one there is the TOML trap."""


def documented_key_paths() -> tuple[str, ...]:
    """Return every documented key path of config agents and WASM manifests, without duplicates."""
    seen: dict[str, None] = {}
    for doc in (*CONFIG_AGENT_KEYS, *WASM_AGENT_KEYS):
        seen.setdefault(doc.path, None)
    return tuple(seen)


def keys_by_table(docs: tuple[KeyDoc, ...]) -> Mapping[str, Mapping[str, KeyDoc]]:
    """Group ``docs`` by the table that holds them: ``{"memory": {"enabled": KeyDoc, ...}}``."""
    tables: dict[str, dict[str, KeyDoc]] = {}
    for doc in docs:
        tables.setdefault(doc.parent, {})[doc.name] = doc
        if doc.kind is Kind.TABLE_LIST:
            # Items of an array of tables take their own keys when some are documented
            # ([[mcp_servers]]), else the keys of the table that holds the array (llm.fallback).
            own = {other.name: other for other in docs if other.parent == doc.path}
            tables[doc.path] = own or {
                other.name: other
                for other in docs
                if other.parent == doc.parent and other.path != doc.path
            }
    return tables
