"""The tools ``/mcp`` offers: each running agent, and memory search and store (issue #19).

``ask_<agent>`` sends a question to that agent through the router's one message path (the
same as ``POST /api/v1/agents/{name}/messages``: a conversation is recorded, the loop guard,
timeouts and failure replies apply) and returns its reply; giving the ``conversation_id`` of
an earlier reply continues that conversation. ``memory_search`` and ``memory_store`` are the
memory API's search and entity creation.

Each tool names the least role that may call it, as the REST route it mirrors does: asking an
agent and storing need ``user``, searching needs ``readonly``. ``tools/list`` shows a caller
only the tools its role may call.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

import attrs
from mcp import types

from caxton.errors import CaxtonError
from caxton.memory.types import NewEntity, Scope
from caxton.messaging.envelope import parse_envelope
from caxton.security.roles import Role
from caxton.tracing import stamped

if TYPE_CHECKING:
    from caxton.services import Services

ASK_PREFIX: Final = "ask_"
MAX_NAME: Final = 64
MAX_SEARCH_RESULTS: Final = 50
#: Observations one ``memory_store`` call may add.
MAX_OBSERVATIONS: Final = 100


class ToolError(CaxtonError):
    """A tool ran and failed: the result the client reads carries ``isError``."""

    code = "MCP_TOOL_FAILED"
    http_status = 200


@attrs.frozen(kw_only=True)
class CallerView:
    """Who calls: the sender stamped on messages, the role, and whether safe mode is on."""

    sender: str
    role: Role
    safe_mode: bool
    #: the hop count the caller's ``_meta`` carried (a Caxton agent calling through MCP)
    hop: int = 0


@attrs.frozen(kw_only=True)
class ServedTool:
    """A tool of ``/mcp``: its MCP definition, least role, whether it changes state (audited,
    refused in safe mode), and what it does."""

    definition: types.Tool
    role: Role
    mutating: bool
    kind: str  # agent | memory_search | memory_store, the metrics label
    #: ``run(services, caller, arguments)``
    run: Callable[..., Awaitable[types.CallToolResult]]


def ask_tool_name(agent: str) -> str:
    """``ask_<agent>``; names past 64 characters are cut and given a short hash."""
    name = ASK_PREFIX + agent
    if len(name) <= MAX_NAME:
        return name
    digest = hashlib.blake2s(agent.encode(), digest_size=4).hexdigest()
    return name[: MAX_NAME - 9] + "_" + digest


def served_tools(state: Services) -> dict[str, ServedTool]:
    """Every tool by name: one per running agent, then the memory tools."""
    tools: dict[str, ServedTool] = {}
    for view in state.registry.list_view():
        if view.get("status") != "running":
            continue
        agent = str(view["name"])
        name = ask_tool_name(agent)
        if name in tools:
            continue
        tools[name] = _ask_tool(name, agent, view)
    tools["memory_search"] = MEMORY_SEARCH
    tools["memory_store"] = MEMORY_STORE
    return tools


def text_result(text: str, *, error: bool = False, **structured: Any) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(type="text", text=text)],
        structuredContent=structured or None,
        isError=error,
    )


def json_result(document: dict[str, Any]) -> types.CallToolResult:
    """``document`` as both the text (JSON) and the structured content of a result."""
    return text_result(json.dumps(document, ensure_ascii=False), **document)


# -- agents -------------------------------------------------------------------------------------

_ASK_INPUT: Final = {
    "type": "object",
    "properties": {
        "question": {"type": "string", "description": "What to ask the agent."},
        "conversation_id": {
            "type": "string",
            "description": "Continue this conversation (from an earlier reply); omit to start "
            "a new one.",
        },
    },
    "required": ["question"],
}
_ASK_OUTPUT: Final = {
    "type": "object",
    "properties": {
        "reply": {"type": "string"},
        "agent": {"type": "string"},
        "conversation_id": {"type": "string"},
    },
    "required": ["reply", "agent", "conversation_id"],
}


def _ask_tool(name: str, agent: str, view: dict[str, Any]) -> ServedTool:
    about = str(view.get("description") or "").strip()
    capabilities = ", ".join(str(c) for c in view.get("capabilities") or [])
    description = f"Ask the Caxton agent {agent!r} a question and get its reply."
    if about:
        description += f" {about[:500]}"
    if capabilities:
        description += f" Capabilities: {capabilities[:300]}."

    async def run(
        state: Services, caller: CallerView, args: dict[str, Any]
    ) -> types.CallToolResult:
        return await _ask(state, caller, agent, args)

    return ServedTool(
        definition=types.Tool(
            name=name,
            title=f"Ask {agent}",
            description=description,
            inputSchema=_ASK_INPUT,
            outputSchema=_ASK_OUTPUT,
        ),
        role=Role.USER,
        mutating=True,
        kind="agent",
        run=run,
    )


async def _ask(
    state: Services, caller: CallerView, agent: str, args: dict[str, Any]
) -> types.CallToolResult:
    question = args.get("question")
    if not isinstance(question, str) or not question.strip():
        raise ToolError("the argument 'question' must be a non-empty string")
    body: dict[str, Any] = {"content": question, "performative": "request"}
    conversation_id = args.get("conversation_id")
    if conversation_id is not None:
        if not isinstance(conversation_id, str):
            raise ToolError("the argument 'conversation_id' must be a string")
        body["conversation_id"] = conversation_id
    message = parse_envelope(
        body,
        sender=caller.sender,
        receiver=agent,
        max_message_size=state.config.messaging.max_message_size,
    )
    # a Caxton agent asking through MCP: one hop further (the loop guard), and the agent's
    # span a child of the tools/call span (which continues the caller's trace)
    message = stamped(attrs.evolve(message, hop=caller.hop))
    delivery = await state.router.deliver(
        message, conversation="open" if conversation_id is not None else "new"
    )
    if delivery.refused:
        raise delivery.error or ToolError(f"the message to {agent!r} was not delivered")
    reply = delivery.reply
    content = reply.content
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if reply.performative in ("failure", "not_understood"):
        return text_result(f"{agent} answered {reply.performative}: {text}", error=True)
    return text_result(text, reply=text, agent=agent, conversation_id=reply.conversation_id)


# -- memory -------------------------------------------------------------------------------------


async def _memory_search(
    state: Services, caller: CallerView, args: dict[str, Any]
) -> types.CallToolResult:
    query = args.get("query")
    if not isinstance(query, str) or not query.strip():
        raise ToolError("the argument 'query' must be a non-empty string")
    limit = args.get("limit", 10)
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 50:
        raise ToolError(f"the argument 'limit' must be an integer from 1 to {MAX_SEARCH_RESULTS}")
    hits = await state.memory.search(query, limit=limit)
    found = [hit.brief() for hit in hits]
    return json_result({"results": found})


async def _memory_store(
    state: Services, caller: CallerView, args: dict[str, Any]
) -> types.CallToolResult:
    name, entity_type = args.get("name"), args.get("entity_type")
    observations = args.get("observations")
    if not isinstance(name, str) or not name.strip():
        raise ToolError("the argument 'name' must be a non-empty string")
    if not isinstance(entity_type, str) or not entity_type.strip():
        raise ToolError("the argument 'entity_type' must be a non-empty string")
    if (
        not isinstance(observations, list)
        or not all(isinstance(item, str) for item in observations)
        or len(observations) > MAX_OBSERVATIONS
    ):
        raise ToolError(
            f"the argument 'observations' must be a list of at most {MAX_OBSERVATIONS} strings"
        )
    entity = await state.memory.create_entity(
        NewEntity(
            name=name,
            entity_type=entity_type,
            observations=tuple(observations),
            scope=Scope.GLOBAL,
        )
    )
    return json_result({"stored": entity.name, "observations": len(entity.observations)})


MEMORY_SEARCH: Final = ServedTool(
    definition=types.Tool(
        name="memory_search",
        title="Search Caxton memory",
        description="Search Caxton's long-term memory for entities related to a query; returns "
        "the best matches with their observations and similarity.",
        inputSchema={
            "type": "object",
            "properties": {
                "query": {"type": "string", "description": "What to look for."},
                "limit": {"type": "integer", "minimum": 1, "maximum": MAX_SEARCH_RESULTS},
            },
            "required": ["query"],
        },
    ),
    role=Role.READONLY,
    mutating=False,
    kind="memory_search",
    run=_memory_search,
)
MEMORY_STORE: Final = ServedTool(
    definition=types.Tool(
        name="memory_store",
        title="Store in Caxton memory",
        description="Store observations about a named entity in Caxton's memory (merged into "
        "the entity when it exists).",
        inputSchema={
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Entity name."},
                "entity_type": {"type": "string", "description": "e.g. person, project, fact."},
                "observations": {
                    "type": "array",
                    "items": {"type": "string"},
                    "maxItems": MAX_OBSERVATIONS,
                },
            },
            "required": ["name", "entity_type", "observations"],
        },
    ),
    role=Role.USER,
    mutating=True,
    kind="memory_store",
    run=_memory_store,
)
