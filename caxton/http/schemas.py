"""The bodies of every route, as JSON Schemas for the OpenAPI document.

Two tables feed :mod:`caxton.http.openapi`:

* :func:`components`: named schemas (``#/components/schemas/<name>``). Where an attrs value
  parses a body or builds an answer (memory entities, the message envelope, conversation
  summaries, safe mode, reports), the schema is generated from its fields by
  :mod:`caxton.http.schemagen`; where a handler builds a plain dict (agent views, the health
  report), the schema is declared here.
* :data:`OPERATIONS`: per route, keyed by endpoint (``"<tag>.<handler name>"``), the request
  body and the body of each 2xx answer. Error answers (4xx/5xx) all use the ``Error``
  envelope and need no entry.

A unit test checks that every declared route has an entry (a request schema when it takes a
body, and a response schema for its 2xx answers), and a component test validates real answers
of a running server against the document.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from typing import Final

import attrs

from caxton.agents.logs import LEVELS, LogLine
from caxton.agents.problems import SpecProblem
from caxton.agents.table import ReloadResult
from caxton.agents.versions import AgentState, Canary
from caxton.components import ComponentStatus
from caxton.events import EVENT_TYPES, Event
from caxton.http.console import api as console_api
from caxton.http.schemagen import (
    ANY,
    Schema,
    Shape,
    array,
    attrs_schema,
    extend,
    nullable,
    obj,
    ref,
)
from caxton.memory.embedder import EmbedderStatistics
from caxton.memory.service import MAX_GRAPH_DEPTH, MAX_SEARCH_LIMIT
from caxton.memory.types import (
    Capacity,
    Entity,
    Graph,
    GraphEdge,
    GraphNode,
    ImportReport,
    MemoryStatistics,
    MemoryStats,
    MergeStrategy,
    NewEntity,
    NewRelation,
    OptimizeReport,
    Relation,
    Scope,
)
from caxton.messages import Message
from caxton.messaging.conversations import STATUSES, ConversationSummary
from caxton.messaging.envelope import ENVELOPE_KEYS
from caxton.messaging.routing import STRATEGIES, Provider
from caxton.ops.backup import BackupReport
from caxton.ops.safe_mode import SafeModeStatus
from caxton.ops.verify import Finding, VerifyReport
from caxton.store.store import StoreStatistics

JSON: Final = "application/json"
NDJSON: Final = "application/x-ndjson"
SSE: Final = "text/event-stream"
GZIP: Final = "application/gzip"

_STRING: Schema = {"type": "string"}
_INTEGER: Schema = {"type": "integer"}
_NUMBER: Schema = {"type": "number"}
_BOOLEAN: Schema = {"type": "boolean"}
_OBJECT: Schema = {"type": "object"}
_TEXT: Schema = {"type": "string", "minLength": 1}

_RELATION_KEYS = {"source": "from", "target": "to"}

#: Values whose schema is generated from their attrs fields. The first shape of a class is the
#: one used where another generated value nests it.
SHAPES: Final[Mapping[str, Shape]] = {
    # -- messaging
    "Message": Shape(
        cls=Message,
        exclude=frozenset({"hop", "trace_context"}),
        description="A FIPA message as the server answers it (a reply, or a routed message).",
    ),
    "RecordedMessage": Shape(
        cls=Message,
        exclude=frozenset({"trace_context"}),
        description="A message of a conversation, with its agent-to-agent hops.",
    ),
    "Envelope": Shape(
        cls=Message,
        only=tuple(f.name for f in attrs.fields(Message) if f.name in ENVELOPE_KEYS),
        request=True,
        description="A FIPA envelope a client sends: to a receiver (an agent name) or to a "
        "capability, never both; the server sets message_id and created_at.",
    ),
    "AgentMessageRequest": Shape(
        cls=Message,
        only=("content", "conversation_id", "performative", "sender", "reply_with"),
        request=True,
        description="A message to one agent; without conversation_id a new conversation starts.",
    ),
    "ConversationSummary": Shape(cls=ConversationSummary),
    "Provider": Shape(cls=Provider, extra={"healthy": _BOOLEAN}),
    # -- agents
    "Problem": Shape(
        cls=SpecProblem,
        exclude=frozenset({"file"}),
        rename={"key": "field"},
        description="One finding in an agent file: the key, what is wrong, where, the fix.",
    ),
    "ReloadResult": Shape(cls=ReloadResult, description="The outcome of the last (re)load."),
    "Canary": Shape(cls=Canary, exclude=frozenset({"revision"})),
    "CanaryRequest": Shape(
        cls=Canary,
        only=("version", "traffic_percentage"),
        request=True,
        description="Send traffic_percentage (1-100) of new conversations to a kept version.",
    ),
    "LogLine": Shape(cls=LogLine),
    # -- memory
    "Entity": Shape(cls=Entity),
    "Relation": Shape(cls=Relation, rename=_RELATION_KEYS),
    "NewEntity": Shape(
        cls=NewEntity,
        exclude=frozenset({"created_at", "updated_at"}),
        request=True,
        description="An entity to create (an existing name and type gets the observations).",
    ),
    "NewRelation": Shape(
        cls=NewRelation,
        rename=_RELATION_KEYS,
        exclude=frozenset({"created_at"}),
        request=True,
        description="A relation between two existing entities.",
    ),
    "ImportedEntity": Shape(
        cls=NewEntity, request=True, description="An entity of an export file."
    ),
    "ImportedRelation": Shape(
        cls=NewRelation,
        rename=_RELATION_KEYS,
        request=True,
        description="A relation of an export file.",
    ),
    "GraphNode": Shape(cls=GraphNode),
    "GraphEdge": Shape(cls=GraphEdge, rename=_RELATION_KEYS),
    "Graph": Shape(cls=Graph),
    "MemoryStats": Shape(cls=MemoryStats),
    "MemoryStatistics": Shape(cls=MemoryStatistics),
    "EmbedderStatistics": Shape(cls=EmbedderStatistics),
    "StoreStatistics": Shape(cls=StoreStatistics),
    "Capacity": Shape(cls=Capacity),
    "OptimizeReport": Shape(cls=OptimizeReport),
    "ImportReport": Shape(cls=ImportReport),
    # -- admin
    "SafeModeStatus": Shape(cls=SafeModeStatus),
    "SafeModeRequest": Shape(
        cls=SafeModeStatus,
        only=("enabled", "reason"),
        request=True,
        description="Turn safe mode on or off, with a reason operators see.",
    ),
    "BackupReport": Shape(
        cls=BackupReport,
        exclude=frozenset({"manifest"}),
        extra={
            "created_at": _STRING,
            "version": _STRING,
            "files": _INTEGER,
            "files_by_area": {"type": "object", "additionalProperties": _INTEGER},
            "content_bytes": _INTEGER,
        },
    ),
    "Finding": Shape(cls=Finding),
    "VerifyReport": Shape(
        cls=VerifyReport, extra={"ok": _BOOLEAN, "errors": _INTEGER, "warnings": _INTEGER}
    ),
    # -- health and events
    "ComponentStatus": Shape(cls=ComponentStatus),
    "Event": Shape(cls=Event),
}

ERROR: Final[Schema] = obj(
    {
        "error": obj(
            {
                "code": {"type": "string", "description": "machine-readable, e.g. NOT_FOUND"},
                "message": {"type": "string", "description": "what was wrong and how to fix it"},
                "details": {"type": "object", "description": "facts for programs"},
                "request_id": {"type": ["string", "null"]},
                "trace_id": {
                    "type": "string",
                    "description": "the trace of the request (only with tracing on)",
                },
            },
            required=["code", "message", "details", "request_id"],
        )
    },
    description="Every 4xx and 5xx answer.",
)


_USAGE_SUMS: Final[Schema] = obj(
    {
        "calls": _INTEGER,
        "input_tokens": _INTEGER,
        "output_tokens": _INTEGER,
        "cache_read_tokens": _INTEGER,
        "cache_write_tokens": _INTEGER,
        "total_tokens": _INTEGER,
        "cost": _NUMBER,
    },
    description="Tokens of every kind and their cost (usage.prices), summed.",
)


def _declared() -> dict[str, Schema]:
    """Schemas of the bodies handlers build as plain dicts."""
    agent_states = _AGENT_STATES
    problem = ref("Problem")
    agent = obj(
        {
            "name": _STRING,
            "type": {"type": "string", "enum": ["config", "wasm"]},
            "version": nullable(_STRING),
            "canary": nullable(ref("Canary")),
            "status": {"type": "string", "enum": agent_states},
            "capabilities": array(_STRING),
            "description": _STRING,
            "abi": nullable(_STRING),
            "llm": {
                "description": "config agents: the LLM endpoint in use, or why there is none",
                "anyOf": [
                    obj({"provider": _STRING, "url": _STRING}),
                    obj({"error": _STRING}),
                ],
            },
            "tools": {**array(_STRING), "description": "config agents: their tools"},
            "source": {"type": "string", "description": "the agent file, or <api>"},
            "last_reload": ref("ReloadResult"),
            "pending_errors": {
                **array(problem),
                "description": "problems of a newer file that did not load",
            },
        },
        required=[
            "name",
            "type",
            "version",
            "canary",
            "status",
            "capabilities",
            "description",
            "abi",
            "source",
            "last_reload",
            "pending_errors",
        ],
        description="An agent: its active version, canary, status and last reload.",
    )
    entity_in: Schema = ref("NewEntity")
    metadata = obj(
        {
            "version": {"type": "string", "description": "export format version"},
            "exported_at": {"type": "string", "format": "date-time"},
            "entity_count": {"type": "integer", "minimum": 0},
            "relation_count": {"type": "integer", "minimum": 0},
        },
        required=["version", "entity_count", "relation_count"],
    )
    return {
        "Error": ERROR,
        "Agent": agent,
        "AgentList": obj({"agents": array(ref("Agent")), "total": _INTEGER}),
        "AgentPerformance": obj(
            {
                "name": _STRING,
                "type": _STRING,
                "status": {"type": "string", "enum": agent_states},
                "messages": _INTEGER,
                "errors": _INTEGER,
                "errors_by_code": {"type": "object", "additionalProperties": _INTEGER},
                "p50_ms": _NUMBER,
                "p99_ms": _NUMBER,
                "fuel": _INTEGER,
                "tokens": _INTEGER,
            }
        ),
        "AgentFile": {
            "type": "object",
            "description": "An agent file: TOML in content (a config agent, or a WASM manifest "
            "whose module is already on the server), or a WASM manifest with its module.",
            "properties": {
                "content": {"type": "string", "description": "the agent file (TOML)"},
                "manifest": {"type": "string", "description": "a WASM agent's manifest (TOML)"},
                "wasm_module": {
                    "type": "string",
                    "contentEncoding": "base64",
                    "description": "the module (.wasm or .wat), base64",
                },
            },
            "anyOf": [{"required": ["content"]}, {"required": ["manifest"]}],
        },
        "ValidationReport": obj(
            {"valid": _BOOLEAN, "errors": array(problem), "warnings": array(problem)}
        ),
        "AgentVersion": obj(
            {
                "version": _STRING,
                "revision": _INTEGER,
                "status": {"type": "string", "enum": agent_states},
                "active": _BOOLEAN,
                "traffic_percentage": _NUMBER,
            }
        ),
        "Capability": obj(
            {
                "capability": _STRING,
                "strategy": {"type": "string", "enum": list(STRATEGIES)},
                "providers": array(ref("Provider")),
            }
        ),
        "Conversation": extend(
            ref("ConversationSummary"), {"messages": array(ref("RecordedMessage"))}
        ),
        "SearchHit": extend(
            ref("Entity"), {"similarity": {"type": "number", "minimum": -1, "maximum": 1}}
        ),
        "NewEntities": obj({"entities": {**array(entity_in), "minItems": 1}}),
        "ExportDocument": obj(
            {
                "entities": array(ref("Entity")),
                "relations": array(ref("Relation")),
                "metadata": metadata,
            },
            description="The whole memory as `GET /api/v1/memory/export` writes it.",
        ),
        "ImportDocument": obj(
            {
                "entities": array(ref("ImportedEntity")),
                "relations": array(ref("ImportedRelation")),
                "metadata": metadata,
            },
            required=["metadata"],
            description="An export document; the metadata counts must match the records.",
        ),
        "ExportLine": {
            "description": "One line of a JSONL export: the metadata first, then records.",
            "type": "object",
            "required": ["kind"],
            "properties": {"kind": {"type": "string", "enum": ["metadata", "entity", "relation"]}},
        },
    }


@functools.cache
def components() -> dict[str, Schema]:
    """Every named schema, by name (generated once)."""
    nested: dict[type, str] = {}
    for name, shape in SHAPES.items():
        nested.setdefault(shape.cls, name)
    named = {name: attrs_schema(shape, nested) for name, shape in SHAPES.items()}
    envelope = named["Envelope"]
    for key in ("receiver", "capability"):
        envelope["properties"][key] = dict(_TEXT)
    envelope["oneOf"] = [{"required": ["receiver"]}, {"required": ["capability"]}]
    envelope["required"] = ["content"]
    # the parsers insist on content although the Message value defaults it to ""
    named["AgentMessageRequest"]["required"] = ["content"]
    # plain strings in the values, checked against these lists where they are made
    named["Event"]["properties"]["type"] = {"type": "string", "enum": sorted(EVENT_TYPES)}
    named["LogLine"]["properties"]["level"] = {"type": "string", "enum": list(LEVELS)}
    named["ConversationSummary"]["properties"]["status"] = {
        "type": "string",
        "enum": list(STATUSES),
    }
    return {**named, **_declared()}


@attrs.frozen(kw_only=True)
class Operation:
    """The bodies of one route.

    Attributes:
        request: media type -> schema of the request body (empty: the route takes none).
        request_required: whether a body must be sent (``False``: an empty body is ``{}``).
        responses: status -> media type -> schema of the 2xx answers.
        frames: for WebSockets, ``{"receive": schema, "send": schema}`` of the text frames
            the server receives from and sends to the client.
        query: query parameter name -> a schema narrower than its declared type (the
            values and ranges the handler accepts).
    """

    request: Mapping[str, Schema] = attrs.field(factory=dict)
    request_required: bool = True
    responses: Mapping[int, Mapping[str, Schema]] = attrs.field(factory=dict)
    frames: Mapping[str, Schema] = attrs.field(factory=dict)
    query: Mapping[str, Schema] = attrs.field(factory=dict)


def _json(name_or_schema: str | Schema) -> Mapping[str, Schema]:
    schema = ref(name_or_schema) if isinstance(name_or_schema, str) else name_or_schema
    return {JSON: schema}


def _ok(body: str | Schema, status: int = 200) -> Mapping[int, Mapping[str, Schema]]:
    return {status: _json(body)}


def _op(
    response: str | Schema,
    *,
    status: int = 200,
    request: str | Schema | None = None,
    optional: bool = False,
    query: Mapping[str, Schema] | None = None,
) -> Operation:
    return Operation(
        request=_json(request) if request is not None else {},
        request_required=not optional,
        responses=_ok(response, status),
        query=query or {},
    )


def _range(low: float, high: float, kind: str = "integer") -> Schema:
    return {"type": kind, "minimum": low, "maximum": high}


def _choice(values: Iterable[str]) -> Schema:
    return {"type": "string", "enum": list(values)}


_PAGE: Final[Mapping[str, Schema]] = {"limit": _range(1, 1000), "offset": _range(0, 1_000_000)}
_AGENT_STATES: Final = [state.value for state in AgentState]


_SSE_STREAM: Schema = {
    "type": "string",
    "description": "Server-sent events: `chunk` ({type, text}) frames, then `done` "
    "({type, message}) or `error` ({type, error}).",
}
_AGENT_FRAME: Schema = {
    "oneOf": [
        obj({"type": {"const": "chunk"}, "text": _STRING}),
        obj({"type": {"const": "done"}, "message": ref("Message")}),
        obj(
            {
                "type": {"const": "error"},
                "error": obj({"code": _STRING, "message": _STRING, "details": _OBJECT}),
            }
        ),
    ]
}

#: Endpoint (``"<tag>.<handler name>"``) -> the bodies of that route.
OPERATIONS: Final[Mapping[str, Operation]] = {
    # -- health and meta
    "health.liveness": _op(obj({"status": {"const": "ok"}})),
    "health.readiness": _op(obj({"status": {"const": "ready"}})),
    "health.health_report": _op(
        obj(
            {
                "status": {
                    "type": "string",
                    "enum": ["healthy", "starting", "degraded", "stopping"],
                },
                "version": _STRING,
                "uptime_seconds": _NUMBER,
                "safe_mode": _BOOLEAN,
                "storage": obj(
                    {
                        "backend": {"type": "string", "enum": ["embedded", "postgres"]},
                        "available": _BOOLEAN,
                        "error": _STRING,
                    },
                    required=["backend", "available"],
                ),
                "components": array(ref("ComponentStatus")),
                "agents": obj({"config": _INTEGER, "wasm": _INTEGER}),
                "memory": obj({"backend": _STRING, "entities": _INTEGER}),
                "security": obj(
                    {
                        "authentication": _BOOLEAN,
                        "tls": _BOOLEAN,
                        "rate_limiting": _BOOLEAN,
                        "cors": _BOOLEAN,
                        "audit": _BOOLEAN,
                        "warnings": array(_STRING),
                    }
                ),
            },
            required=["status", "version", "uptime_seconds", "safe_mode", "components"],
        )
    ),
    "meta.openapi_document": _op(
        obj(
            {
                "openapi": {"type": "string", "pattern": r"^3\.1\."},
                "info": _OBJECT,
                "paths": _OBJECT,
                "components": _OBJECT,
            },
            description="An OpenAPI 3.1 document.",
        )
    ),
    "events.events_stream": Operation(frames={"receive": ANY, "send": ref("Event")}),
    # -- agents
    "agents.list_agents": _op(
        "AgentList",
        query={"type": _choice(("config", "wasm")), "status": _choice(_AGENT_STATES), **_PAGE},
    ),
    "agents.agents_performance": _op(obj({"agents": array(ref("AgentPerformance"))})),
    "agents.deploy_agent": _op("Agent", status=201, request="AgentFile"),
    "agents.validate_agent": _op("ValidationReport", request="AgentFile"),
    "agents.get_agent": _op("Agent"),
    "agents.update_agent": _op("Agent", request="AgentFile"),
    "agents.delete_agent": _op(obj({"deleted": _STRING})),
    "agents.restart_agent": _op(extend(ref("Agent"), {"restarted_revision": _INTEGER})),
    "agents.agent_versions": _op(obj({"name": _STRING, "versions": array(ref("AgentVersion"))})),
    "agents.set_canary": _op("Agent", request="CanaryRequest"),
    "agents.promote_agent": _op("Agent"),
    "agents.rollback_agent": _op(
        "Agent",
        request=obj({"version": _STRING}, required=[]),
        optional=True,
    ),
    "agents.agent_logs": Operation(
        query={"tail": _range(0, 1000), "level": _choice(LEVELS)},
        responses={
            200: {
                JSON: obj({"agent": _STRING, "lines": array(ref("LogLine"))}),
                NDJSON: {**ref("LogLine"), "description": "follow=true: one line per log line"},
            }
        },
    ),
    "agents.message_agent": Operation(
        request=_json("AgentMessageRequest"),
        responses={200: {JSON: ref("Message"), SSE: _SSE_STREAM}},
    ),
    "agents.agent_socket": Operation(
        frames={"receive": ref("AgentMessageRequest"), "send": _AGENT_FRAME}
    ),
    # -- messaging
    "messaging.post_message": Operation(
        request=_json("Envelope"),
        query={"timeout": {"type": "number", "exclusiveMinimum": 0, "maximum": 3600}},
        responses={
            200: _json("Message"),
            202: _json(
                obj(
                    {
                        "accepted": {"const": True},
                        "conversation_id": _STRING,
                        "message_id": _STRING,
                    }
                )
            ),
        },
    ),
    "messaging.list_conversations": _op(
        obj({"conversations": array(ref("ConversationSummary")), "total": _INTEGER}),
        query={"status": _choice(STATUSES), **_PAGE},
    ),
    "messaging.get_conversation": _op("Conversation", query={"limit": _range(1, 100_000)}),
    "messaging.close_conversation": _op("ConversationSummary"),
    "messaging.list_capabilities": _op(
        obj(
            {
                "strategy": {"type": "string", "enum": list(STRATEGIES)},
                "capabilities": array(ref("Capability")),
            }
        )
    ),
    "messaging.get_capability": _op("Capability"),
    # -- memory
    "memory.create_entities": Operation(
        request=_json({"oneOf": [ref("NewEntity"), ref("NewEntities")]}),
        responses={
            201: _json(
                {
                    "oneOf": [
                        ref("Entity"),
                        obj({"entities": array(ref("Entity")), "count": _INTEGER}),
                    ]
                }
            )
        },
    ),
    "memory.get_entity": _op("Entity"),
    "memory.delete_entity": _op(obj({"deleted": _STRING, "relations_removed": _INTEGER})),
    "memory.add_observations": _op("Entity", request=obj({"observations": array(_STRING)})),
    "memory.create_relation": _op("Relation", status=201, request="NewRelation"),
    "memory.search": _op(
        obj({"query": _STRING, "results": array(ref("SearchHit")), "count": _INTEGER}),
        query={
            "limit": _range(1, MAX_SEARCH_LIMIT),
            "scope": _choice(s.value for s in Scope),
        },
    ),
    "memory.graph": _op("Graph", query={"max_depth": _range(1, MAX_GRAPH_DEPTH)}),
    "memory.stats": _op(
        extend(
            ref("MemoryStats"),
            {
                "backend": {
                    "type": "string",
                    "enum": ["duckdb", "postgres", "qdrant"],
                    "description": "Where the memory lives (memory.backend qdrant, else the "
                    "store of storage.backend)",
                },
                "search_p50_ms": _NUMBER,
                "search_p99_ms": _NUMBER,
                "cache_hit_rate": nullable(_NUMBER),
                "search": ref("MemoryStatistics"),
                "embedder": nullable(
                    extend(
                        ref("EmbedderStatistics"),
                        {"model": _STRING, "load_ms": _NUMBER, "average_encode_ms": _NUMBER},
                    )
                ),
                "store": ref("StoreStatistics"),
                "database": obj(
                    {"fragmentation": _NUMBER},
                    description="DuckDB's PRAGMA database_size, with the free-block share",
                ),
                "process_memory_bytes": _INTEGER,
            },
        )
    ),
    "memory.capacity": _op("Capacity"),
    "memory.optimize": _op(
        extend(ref("OptimizeReport"), {"reindexed": _BOOLEAN, "index_rows": nullable(_INTEGER)}),
        request=obj(dict.fromkeys(("vacuum", "reindex", "analyze"), _BOOLEAN), required=[]),
        optional=True,
    ),
    "memory.clear_cache": _op(
        obj({"cleared_entries": _INTEGER, "rebuilt": _BOOLEAN, "index_rows": nullable(_INTEGER)}),
        request=obj({"rebuild": _BOOLEAN}, required=[]),
        optional=True,
    ),
    "memory.export": Operation(
        query={"format": _choice(("json", "jsonl"))},
        responses={200: {JSON: ref("ExportDocument"), NDJSON: ref("ExportLine")}},
    ),
    "memory.import_memory": Operation(
        query={"merge_strategy": _choice(m.value for m in MergeStrategy)},
        request={JSON: ref("ImportDocument"), NDJSON: ref("ExportLine")},
        responses=_ok(extend(ref("ImportReport"), {"entity_count": _INTEGER})),
    ),
    # -- admin
    "admin.get_safe_mode": _op("SafeModeStatus"),
    "admin.set_safe_mode": _op("SafeModeStatus", request="SafeModeRequest"),
    "admin.backup": Operation(
        request=_json(
            obj(
                {
                    "path": {"type": "string", "description": "an absolute path on the server"},
                    "download": {"type": "boolean", "description": "stream the archive back"},
                },
                required=[],
            )
        ),
        request_required=False,
        responses={200: {JSON: ref("BackupReport"), GZIP: {"type": "string", "format": "binary"}}},
    ),
    "admin.storage_verify": _op("VerifyReport"),
    # -- usage
    "usage.usage_report": _op(
        obj(
            {
                "since": nullable({"type": "string", "format": "date-time"}),
                "until": nullable({"type": "string", "format": "date-time"}),
                "group_by": _choice(["agent", "key", "model", "day"]),
                "filters": obj({"agent": nullable(_STRING), "key": nullable(_STRING)}),
                "groups": array(extend(_USAGE_SUMS, {"group": _STRING})),
                "totals": _USAGE_SUMS,
                "budgets": array(
                    obj(
                        {
                            "scope": _choice(["agent", "key"]),
                            "name": _STRING,
                            "max_tokens_per_day": nullable(_INTEGER),
                            "max_cost_per_day": nullable(_NUMBER),
                            "used_today": _USAGE_SUMS,
                            "resets_at": {"type": "string", "format": "date-time"},
                        }
                    )
                ),
            },
            description="LLM usage: sums per group, over all, and the budgets in force.",
        )
    ),
    # -- cluster
    "cluster.cluster_status": _op(
        obj(
            {
                "instance": {"type": "string", "description": "the id of the instance answering"},
                "backend": _choice(["embedded", "postgres"]),
                "instances": array(
                    obj(
                        {
                            "id": _STRING,
                            "address": _STRING,
                            "version": _STRING,
                            "agents": {"type": "integer", "minimum": 0},
                            "started_at": {"type": "string", "format": "date-time"},
                            "last_heartbeat": {"type": "string", "format": "date-time"},
                            "self": _BOOLEAN,
                        }
                    )
                ),
            },
            description="The live instances sharing this server's database, oldest first.",
        )
    ),
    # -- MCP (issue #19): one JSON-RPC 2.0 message in, its response out (202 for a notification)
    "mcp.mcp_endpoint": _op(
        obj(
            {
                "jsonrpc": {"const": "2.0"},
                "id": {"type": ["string", "integer", "null"]},
                "result": _OBJECT,
                "error": obj(
                    {"code": _INTEGER, "message": _STRING, "data": _OBJECT},
                    required=["code", "message"],
                ),
            },
            required=["jsonrpc", "id"],
            description="A JSON-RPC response: result, or error (data: Caxton's error fields).",
        ),
        request=obj(
            {
                "jsonrpc": {"const": "2.0"},
                "id": {"type": ["string", "integer"]},
                "method": _STRING,
                "params": _OBJECT,
            },
            required=["jsonrpc", "method"],
            description="One JSON-RPC 2.0 request or notification (initialize, ping, "
            "tools/list, tools/call, notifications/...).",
        ),
    ),
    # -- console (issue #20)
    "console.session": _op(console_api.SESSION_SCHEMA),
    "console.agent_definition": _op(console_api.DEFINITION_SCHEMA),
    "console.metrics_summary": _op(console_api.SUMMARY_SCHEMA),
    # -- A2A (issue #19): cards and JSON-RPC bodies are A2A 1.0's own (a2a-protocol.org)
    "a2a.server_agent_card": _op(
        obj(
            {"name": _STRING, "skills": array(_OBJECT), "agents": array(_OBJECT)},
            required=["name", "skills", "agents"],
            description="An A2A AgentCard for the server, plus every agent's card.",
        )
    ),
    "a2a.agent_agent_card": _op(
        obj(
            {
                "name": _STRING,
                "supportedInterfaces": array(_OBJECT),
                "capabilities": _OBJECT,
                "skills": array(_OBJECT),
            },
            description="An A2A 1.0 AgentCard.",
        )
    ),
    "a2a.remote_agents": _op(obj({"remote_agents": array(_OBJECT)})),
    "a2a.a2a_call": Operation(
        request=_json(
            obj(
                {"jsonrpc": {"const": "2.0"}, "method": _STRING, "params": _OBJECT},
                required=["jsonrpc", "method"],
                description="A JSON-RPC 2.0 request of an A2A 1.0 method.",
            )
        ),
        responses={
            200: {
                JSON: obj(
                    {"jsonrpc": {"const": "2.0"}, "result": _OBJECT, "error": _OBJECT},
                    required=["jsonrpc"],
                    description="A JSON-RPC 2.0 response: result, or error.",
                ),
                SSE: {
                    "type": "string",
                    "description": "SendStreamingMessage / SubscribeToTask: `data:` frames, "
                    "each a JSON-RPC response whose result is an A2A StreamResponse.",
                },
            }
        },
    ),
}
