"""Memory routes: entities, relations, search, graph, reports, export and import (DESIGN §6, §7).

Handlers validate the request's shape here (400 for a body that is not JSON, 422 for JSON of
the wrong shape) and leave the rules on values (sizes, limits, conflicts) to
:class:`caxton.memory.MemoryService`, whose errors carry their own status (404, 409, 422, 507).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio
from quart import Response, request

from caxton.errors import BadRequest, JSONValue, ValidationFailed
from caxton.http.params import (
    float_arg,
    int_arg,
    json_body,
    json_object,
    optional_json_object,
    raw_body,
)
from caxton.http.routes import QueryParam, RouteTable
from caxton.http.state import current_services
from caxton.http.streaming import background_body
from caxton.memory import Embedder, NewEntity, NewRelation, transfer
from caxton.memory.service import MAX_GRAPH_DEPTH, MAX_SEARCH_LIMIT
from caxton.metrics import resident_memory_bytes
from caxton.security.roles import Role

if TYPE_CHECKING:
    from collections.abc import Iterator

    from caxton.memory import MemoryService

LOGGER = logging.getLogger("caxton.http.memory")

routes = RouteTable("memory")

ENTITY_KEYS = frozenset({"name", "entity_type", "observations", "scope", "agent", "metadata"})
RELATION_KEYS = frozenset({"from", "to", "relation_type", "strength", "confidence"})
OPTIMIZE_KEYS = ("vacuum", "reindex", "analyze")
ENTITY_BODY = (
    '{"name": "Whiskers", "entity_type": "pet", "observations": ["a small cat"], '
    '"scope": "global", "agent": null, "metadata": {}} or {"entities": [...]}'
)
#: Bytes gathered before an export chunk is handed to the connection.
EXPORT_FLUSH_BYTES = 64 * 1024
NDJSON_TYPES = ("application/x-ndjson", "application/jsonl", "application/x-jsonlines")


def _memory() -> MemoryService:
    return current_services().memory


def _check_keys(record: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    unknown = sorted(set(record) - allowed)
    if unknown:
        raise ValidationFailed(
            f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
            f"allowed: {', '.join(sorted(allowed))}",
            details={"field": where, "unknown": list[JSONValue](unknown)},
        )


def _check_required(record: dict[str, Any], required: tuple[str, ...], where: str) -> None:
    for key in required:
        if key not in record:
            raise ValidationFailed(f"{where}.{key} is required", details={"field": key})


def _check_flags(body: dict[str, Any]) -> None:
    """Every value of ``body`` is true or false (the optimize and cache-clear switches)."""
    for key, value in body.items():
        if not isinstance(value, bool):
            raise ValidationFailed(f'"{key}" must be true or false', details={"field": key})


def _new_entity(record: object, where: str) -> NewEntity:
    if not isinstance(record, dict):
        raise ValidationFailed(
            f"{where}: an entity must be a JSON object such as {ENTITY_BODY.split(' or ')[0]}",
            details={"field": where},
        )
    _check_keys(record, ENTITY_KEYS, where)
    _check_required(record, ("name", "entity_type"), where)
    try:
        return NewEntity(
            name=record["name"],
            entity_type=record["entity_type"],
            observations=record.get("observations", ()),
            scope=record.get("scope", "global"),
            agent=record.get("agent"),
            metadata=record.get("metadata"),
        )
    except ValidationFailed as exc:
        raise ValidationFailed(f"{where}: {exc.message}", details=exc.details) from None
    except (TypeError, ValueError) as exc:
        raise ValidationFailed(f"{where}: {exc}", details={"field": where}) from None


def _as_json(value: Any) -> dict[str, Any]:
    return attrs.asdict(value, value_serializer=_plain)


def _plain(_instance: object, _field: object, value: object) -> object:
    return str(value) if isinstance(value, dt.datetime) else value


# --------------------------------------------------------------------------------- entities


@routes.route(
    "/api/v1/memory/entities",
    methods=("POST",),
    role=Role.USER,
    summary="Create one entity, or several with {entities: [...]}; an existing entity of the "
    "same name and type gets the new observations.",
    request_body=ENTITY_BODY,
    responses=(201, 400, 409, 422, 507),
)
async def create_entities() -> tuple[dict[str, Any], int]:
    body = await json_object(ENTITY_BODY)
    if "entities" in body:
        _check_keys(body, frozenset({"entities"}), "body")
        records = body["entities"]
        if not isinstance(records, list) or not records:
            raise ValidationFailed(
                '"entities" must be a non-empty list of entity objects',
                details={"field": "entities"},
            )
        new = [_new_entity(r, f"entities[{i}]") for i, r in enumerate(records)]
        created = await _memory().create_entities(new)
        return {"entities": [e.to_json() for e in created], "count": len(created)}, 201
    entity = await _memory().create_entity(_new_entity(body, "entity"))
    return entity.to_json(), 201


@routes.route(
    "/api/v1/memory/entities/<name>",
    role=Role.READONLY,
    summary="One entity with its observations.",
    responses=(200, 404),
)
async def get_entity(name: str) -> dict[str, Any]:
    return (await _memory().get_entity(name)).to_json()


@routes.route(
    "/api/v1/memory/entities/<name>",
    methods=("DELETE",),
    role=Role.USER,
    summary="Delete an entity with its observations and relations.",
    responses=(200, 404),
)
async def delete_entity(name: str) -> dict[str, Any]:
    removed = await _memory().delete_entity(name)
    return {"deleted": name, "relations_removed": removed}


@routes.route(
    "/api/v1/memory/entities/<name>/observations",
    methods=("POST",),
    role=Role.USER,
    summary="Append observations to an entity (exact duplicates are dropped).",
    request_body='{"observations": ["likes chasing mice"]}',
    responses=(200, 400, 404, 422),
)
async def add_observations(name: str) -> dict[str, Any]:
    body = await json_object('{"observations": ["likes chasing mice"]}')
    _check_keys(body, frozenset({"observations"}), "body")
    observations = body.get("observations")
    if not isinstance(observations, list):
        raise ValidationFailed(
            '"observations" must be a list of strings, for example ["likes chasing mice"]',
            details={"field": "observations"},
        )
    return (await _memory().add_observations(name, observations)).to_json()


# --------------------------------------------------------------------------------- relations

RELATION_BODY = '{"from": "Whiskers", "to": "Ada", "relation_type": "owned_by", "strength": 0.9}'


@routes.route(
    "/api/v1/memory/relations",
    methods=("POST",),
    role=Role.USER,
    summary="Create a relation between two existing entities (or update its strength and "
    "confidence).",
    request_body=RELATION_BODY,
    responses=(201, 400, 404, 422),
)
async def create_relation() -> tuple[dict[str, Any], int]:
    body = await json_object(RELATION_BODY)
    _check_keys(body, RELATION_KEYS, "relation")
    _check_required(body, ("from", "to", "relation_type"), "relation")
    relation = await _memory().create_relation(
        NewRelation(
            source=body["from"],
            target=body["to"],
            relation_type=body["relation_type"],
            strength=body.get("strength", 1.0),
            confidence=body.get("confidence", 1.0),
        )
    )
    return relation.to_json(), 201


# --------------------------------------------------------------------------------- queries


@routes.route(
    "/api/v1/memory/search",
    role=Role.READONLY,
    summary="Entities closest in meaning to q, best first, each with its similarity.",
    query=(
        QueryParam(name="q", description="free text", required=True),
        QueryParam(
            name="limit", description=f"at most this many (1-{MAX_SEARCH_LIMIT})", type="integer"
        ),
        QueryParam(
            name="min_similarity", description="drop hits below this (-1 to 1)", type="number"
        ),
        QueryParam(name="scope", description="agent, workspace or global"),
        QueryParam(name="agent", description="the asking agent (sees its agent-scoped entities)"),
        QueryParam(name="entity_types", description="comma-separated types to keep"),
    ),
    responses=(200, 400, 422),
)
async def search() -> dict[str, Any]:
    query = request.args.get("q")
    if query is None:
        raise BadRequest("query parameter q is required: /api/v1/memory/search?q=some+text")
    limit = int_arg("limit", 10, low=1, high=MAX_SEARCH_LIMIT)
    min_similarity = float_arg("min_similarity", 0.0)
    raw_types = request.args.get("entity_types")
    types = None
    if raw_types:
        types = [t.strip() for t in raw_types.split(",") if t.strip()]
    hits = await _memory().search(
        query,
        limit=limit,
        min_similarity=min_similarity,
        scope=request.args.get("scope") or None,
        agent=request.args.get("agent") or None,
        entity_types=types,
    )
    return {"query": query, "results": [h.to_json() for h in hits], "count": len(hits)}


@routes.route(
    "/api/v1/memory/graph/<name>",
    role=Role.READONLY,
    summary="The entities and relations around an entity, up to max_depth relations away.",
    query=(
        QueryParam(
            name="max_depth", description=f"1-{MAX_GRAPH_DEPTH} (default 2)", type="integer"
        ),
    ),
    responses=(200, 400, 404, 422),
)
async def graph(name: str) -> dict[str, Any]:
    depth = int_arg("max_depth", 2, low=1, high=MAX_GRAPH_DEPTH)
    return (await _memory().graph(name, max_depth=depth)).to_json()


# --------------------------------------------------------------------------------- reports


@routes.route(
    "/api/v1/memory/stats",
    role=Role.READONLY,
    summary="The memory's backend (duckdb, postgres or qdrant), entity, relation and "
    "observation counts, database size and fragmentation, search latency (p50/p99), embedding "
    "cache hit rate and model figures.",
)
async def stats() -> dict[str, Any]:
    memory = _memory()
    store = current_services().store
    content = (await memory.stats()).to_json()
    service = memory.statistics()  # its totals just counted by ``stats``
    embedder = memory.embedder
    embedding: dict[str, Any] | None = None
    if isinstance(embedder, Embedder):
        figures = embedder.statistics()
        embedding = {"model": current_services().config.memory.embedding_model, **_as_json(figures)}
        embedding["load_ms"] = figures.load_seconds * 1000.0
        embedding["average_encode_ms"] = (
            figures.embed_seconds_total / figures.batches * 1000.0 if figures.batches else 0.0
        )
    return {
        "backend": memory.store.dialect,
        **content,
        "search_p50_ms": service.search_p50_ms,
        "search_p99_ms": service.search_p99_ms,
        "cache_hit_rate": embedding["hit_rate"] if embedding else None,
        "search": _as_json(service),
        "embedder": embedding,
        "store": _as_json(store.statistics()),
        # memory's own store: the main one, or Qdrant with memory.backend: qdrant (issue #16)
        "database": await memory.store.execute_fn(memory.sql.database_figures),
        "process_memory_bytes": resident_memory_bytes(),
    }


@routes.route(
    "/api/v1/memory/capacity",
    role=Role.READONLY,
    summary="How full the memory is: entities against memory.max_entities; warning from 90%.",
)
async def capacity() -> dict[str, Any]:
    return _as_json(await _memory().capacity())


@routes.route(
    "/api/v1/memory/optimize",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="Checkpoint, then the steps asked for: vacuum, analyze, reindex (rebuild the "
    "search accelerator from DuckDB). An empty body runs every step.",
    request_body='{"vacuum": true, "reindex": true, "analyze": true}',
    responses=(200, 400, 422),
)
async def optimize() -> dict[str, Any]:
    body = await optional_json_object('{"vacuum": true}')
    _check_keys(body, frozenset(OPTIMIZE_KEYS), "body")
    _check_flags(body)
    steps = {key: bool(body.get(key, False)) for key in OPTIMIZE_KEYS}
    if not any(steps.values()):
        steps = dict.fromkeys(OPTIMIZE_KEYS, True)
    memory = _memory()
    report = _as_json(await memory.optimize(vacuum=steps["vacuum"], analyze=steps["analyze"]))
    report["reindexed"] = steps["reindex"]
    report["index_rows"] = await memory.rebuild_index() if steps["reindex"] else None
    return report


@routes.route(
    "/api/v1/memory/cache/clear",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="Forget the cached query embeddings; with rebuild, also reload the search "
    "accelerator from DuckDB.",
    request_body='{"rebuild": true}',
    responses=(200, 400, 422),
)
async def clear_cache() -> dict[str, Any]:
    body = await optional_json_object('{"rebuild": true}')
    _check_keys(body, frozenset({"rebuild"}), "body")
    _check_flags(body)
    rebuild = body.get("rebuild", False)
    memory = _memory()
    embedder = memory.embedder
    cleared = 0
    if isinstance(embedder, Embedder):
        cleared = embedder.statistics().cache_entries
        embedder.clear_cache()
    rows = await memory.rebuild_index() if rebuild else None
    return {"cleared_entries": cleared, "rebuilt": rebuild, "index_rows": rows}


# --------------------------------------------------------------------------------- transfer


def _chunked(pieces: Iterator[str]) -> Iterator[bytes]:
    buffer: list[bytes] = []
    size = 0
    for piece in pieces:
        data = piece.encode("utf-8")
        buffer.append(data)
        size += len(data)
        if size >= EXPORT_FLUSH_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)


@routes.route(
    "/api/v1/memory/export",
    role=Role.READONLY,
    summary="The whole memory, streamed: a JSON document {entities, relations, metadata} or "
    "JSONL (metadata line first).",
    query=(QueryParam(name="format", description="json (default) or jsonl"),),
    responses=(200, 400),
)
async def export() -> Response:
    kind = request.args.get("format", "json")
    if kind not in ("json", "jsonl"):
        raise BadRequest(f"format must be json or jsonl, got {kind!r}", details={"field": "format"})
    # Read before answering, so a failed read is an error response rather than a cut stream.
    snapshot = await _memory().snapshot()
    pieces = snapshot.jsonl_lines() if kind == "jsonl" else snapshot.json_chunks()

    async def produce(send: trio.MemorySendChannel[bytes]) -> None:
        try:
            for chunk in _chunked(pieces):
                await send.send(chunk)
        except trio.BrokenResourceError:
            LOGGER.info("memory export: the client went away before the end")

    mimetype = "application/x-ndjson" if kind == "jsonl" else "application/json"
    response = Response(background_body(produce), mimetype=mimetype)
    stamp = snapshot.exported_at.strftime("%Y%m%dT%H%M%SZ")
    response.headers["Content-Disposition"] = f'attachment; filename="caxton-memory-{stamp}.{kind}"'
    response.headers["X-Caxton-Entity-Count"] = str(len(snapshot.entities))
    response.headers["X-Caxton-Relation-Count"] = str(len(snapshot.relations))
    response.timeout = None
    return response


@routes.route(
    "/api/v1/memory/import",
    methods=("POST",),
    role=Role.OPERATOR,
    summary="Import an export: the JSON document as the body, or JSONL with Content-Type "
    "application/x-ndjson. All or nothing.",
    query=(
        QueryParam(
            name="merge_strategy",
            description="update_existing (default), skip_existing or error_on_conflict",
        ),
    ),
    request_body='{"entities": [...], "relations": [...], "metadata": {"version": "1.0", ...}}',
    responses=(200, 400, 409, 422, 507),
)
async def import_memory() -> dict[str, Any]:
    strategy = request.args.get("merge_strategy") or "update_existing"
    memory = _memory()
    content_type = (request.content_type or "").split(";")[0].strip().lower()
    if content_type in NDJSON_TYPES:
        data = transfer.parse_bytes(await raw_body(), format="jsonl")
        report = await memory.import_data(data, merge_strategy=strategy)
    else:
        document = await json_body(
            "if this is an export file, it may be truncated (send JSONL with Content-Type "
            "application/x-ndjson)"
        )
        report = await memory.import_document(document, merge_strategy=strategy)
    return {**report.to_json(), "entity_count": memory.statistics().entity_count}
