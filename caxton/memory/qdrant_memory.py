"""Qdrant's memory "SQL" (issue #16): the :class:`caxton.memory.sql.MemorySQL` of
:class:`caxton.store.qdrant.QdrantStore`.

Every member is an ``fn(conn)`` call as for the SQL dialects, with ``conn`` the store's
:class:`caxton.store.qdrant.QdrantConnection` (the synchronous qdrant-client and the two
collection names), run in the store's worker threads.

Layout:

* **entities** — one point per entity in the configured collection. Its id is a UUID derived
  from the name (``uuid5``), so a name is found, replaced or deleted by id without a lookup;
  its vector is the 384-d embedding (cosine); its payload holds the name, ``entity_type``,
  ``scope``, ``agent``, ``metadata``, the ``observations`` in order (with
  ``observation_count``), and ``created_at`` / ``updated_at`` as ISO 8601 UTC text.
* **relations** — one point per relation, without a vector, in a second collection
  ``<collection>-relations``; its id is a UUID derived from (from, to, relation_type), its
  payload ``from_entity``, ``to_entity``, ``relation_type``, ``strength``, ``confidence``,
  ``created_at``. A collection of their own rather than lists in the entities' payloads:
  a relation is then one point to upsert or delete (not a read-modify-write of two entity
  payloads that another write may race), the graph walk is a filtered scroll on the indexed
  ``from_entity`` / ``to_entity``, and deleting an entity's relations is one delete by filter.

Qdrant has no transactions: a write of many points is several upserts (each applied before
the next is sent, ``wait=True``), and deleting an entity deletes its relations first, then the
point, so a failure part-way never leaves a relation to a missing entity.

Search is Qdrant's own: through its HNSW index with ``hnsw_ef`` candidates, or a full scan with
``exact`` (``SearchParams(exact=True)``). Local mode always searches exactly (and warns about
``search_params``, so none are sent). Hits are re-sorted with ties by name, as the SQL
dialects return them.

Counts and breakdowns, snapshots and the accelerator's load scroll the collections (Qdrant
has no aggregation but the point count); ``database_space`` is None (Qdrant compacts its own
segments) and ``optimize`` has nothing to run.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import uuid
from typing import TYPE_CHECKING, Any, Final, Unpack

import numpy as np

from caxton.memory.entity_cache import entity_bytes
from caxton.memory.index import IndexEntry
from caxton.memory.sql import INDEX_CHUNK_ROWS
from caxton.memory.sql_shared import EntityReads, SearchArguments, from_db_time
from caxton.memory.types import Entity, GraphEdge, GraphNode, Relation, Scope

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence

    from numpy.typing import NDArray
    from qdrant_client import models

    from caxton.memory.maintenance import DatabaseSpace
    from caxton.memory.sql import RelationKey
    from caxton.store.backend import Backend
    from caxton.store.qdrant import QdrantConnection

#: The store dialect these calls are written for.
dialect: Final = "qdrant"

#: Namespaces of the point ids (``uuid5`` of the entity name, of the relation key).
ENTITY_NAMESPACE: Final = uuid.UUID("5a0e3c7e-2f7b-5d8a-9c1e-6b3f0d4a8e21")
RELATION_NAMESPACE: Final = uuid.UUID("9b7d2e41-6c3a-5f08-8d2b-1e4f7a6c3b95")

#: Points per upsert, retrieve or delete request.
BATCH: Final = 256
#: Points per scroll page.
SCROLL_PAGE: Final = 1000
#: Extra hits asked of a search, so that ties at the ``limit``-th hit are settled by name.
TIE_MARGIN: Final = 8


def entity_id(name: str) -> str:
    """The point id of the entity ``name``."""
    return str(uuid.uuid5(ENTITY_NAMESPACE, name))


def relation_id(key: RelationKey) -> str:
    """The point id of the relation (from, to, relation_type)."""
    return str(uuid.uuid5(RELATION_NAMESPACE, json.dumps(list(key), ensure_ascii=False)))


def _models() -> Any:
    # qdrant_client imports grpc and pydantic models: only where memory is in Qdrant
    from qdrant_client import models

    return models


def _chunks(items: Sequence[Any], size: int = BATCH) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _time(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).isoformat()


def _read_time(value: object) -> dt.datetime:
    return from_db_time(dt.datetime.fromisoformat(str(value)))


def _match(key: str, value: str) -> models.FieldCondition:
    m = _models()
    condition: models.FieldCondition = m.FieldCondition(key=key, match=m.MatchValue(value=value))
    return condition


def _match_any(key: str, values: Sequence[str]) -> models.FieldCondition:
    m = _models()
    condition: models.FieldCondition = m.FieldCondition(key=key, match=m.MatchAny(any=list(values)))
    return condition


def _filter(**parts: Any) -> models.Filter:
    result: models.Filter = _models().Filter(**parts)
    return result


# ----------------------------------------------------------------------------- conversions


def _entity_payload(entity: Entity) -> dict[str, Any]:
    return {
        "name": entity.name,
        "entity_type": entity.entity_type,
        "scope": str(entity.scope),
        "agent": entity.agent,
        "metadata": dict(entity.metadata),
        "observations": list(entity.observations),
        "observation_count": len(entity.observations),
        "created_at": _time(entity.created_at),
        "updated_at": _time(entity.updated_at),
    }


def _entity(payload: dict[str, Any]) -> Entity:
    agent = payload.get("agent")
    return Entity(
        name=str(payload["name"]),
        entity_type=str(payload["entity_type"]),
        observations=tuple(str(o) for o in payload.get("observations") or ()),
        scope=Scope(str(payload["scope"])),
        agent=None if agent is None else str(agent),
        metadata=dict(payload.get("metadata") or {}),
        created_at=_read_time(payload["created_at"]),
        updated_at=_read_time(payload["updated_at"]),
    )


def _relation_payload(relation: Relation) -> dict[str, Any]:
    return {
        "from_entity": relation.source,
        "to_entity": relation.target,
        "relation_type": relation.relation_type,
        "strength": float(relation.strength),
        "confidence": float(relation.confidence),
        "created_at": _time(relation.created_at),
    }


def _relation(payload: dict[str, Any]) -> Relation:
    return Relation(
        source=str(payload["from_entity"]),
        target=str(payload["to_entity"]),
        relation_type=str(payload["relation_type"]),
        strength=float(payload["strength"]),
        confidence=float(payload["confidence"]),
        created_at=_read_time(payload["created_at"]),
    )


def _relation_key(payload: dict[str, Any]) -> RelationKey:
    return (str(payload["from_entity"]), str(payload["to_entity"]), str(payload["relation_type"]))


# ----------------------------------------------------------------------------- reads


def _scroll(
    conn: QdrantConnection,
    collection: str,
    *,
    where: models.Filter | None = None,
    payload: bool | list[str] = True,
    vectors: bool = False,
) -> Iterator[Any]:
    """Every point of ``collection`` matching ``where``, a page at a time."""
    offset: Any = None
    while True:
        records, offset = conn.client.scroll(
            collection,
            scroll_filter=where,
            limit=SCROLL_PAGE,
            offset=offset,
            with_payload=payload,
            with_vectors=vectors,
        )
        yield from records
        if offset is None:
            return


def _retrieve(
    conn: QdrantConnection, collection: str, ids: Sequence[str], payload: bool | list[str]
) -> list[Any]:
    found: list[Any] = []
    for chunk in _chunks(list(dict.fromkeys(ids))):
        found.extend(conn.client.retrieve(collection, ids=list(chunk), with_payload=payload))
    return found


def _count(conn: QdrantConnection, collection: str, where: models.Filter | None = None) -> int:
    return int(conn.client.count(collection, count_filter=where, exact=True).count)


def lock_writes(conn: QdrantConnection) -> None:
    """Nothing to do: Qdrant has no transactions or locks; this process's memory writes run one
    at a time under :class:`caxton.memory.MemoryService`'s lock."""
    del conn


def entity_count(conn: QdrantConnection) -> int:
    """The number of entity points (an exact count)."""
    return _count(conn, conn.entities)


def relation_count(conn: QdrantConnection) -> int:
    """The number of relation points (an exact count)."""
    return _count(conn, conn.relations)


def totals(conn: QdrantConnection) -> tuple[int, int]:
    """:func:`entity_count` and :func:`relation_count` (two requests)."""
    return entity_count(conn), relation_count(conn)


def fetch_entities(conn: QdrantConnection, names: Sequence[str]) -> dict[str, Entity]:
    """The stored entities among ``names``, retrieved by their point ids."""
    if not names:
        return {}
    records = _retrieve(conn, conn.entities, [entity_id(n) for n in names], True)
    entities = (_entity(r.payload or {}) for r in records)
    wanted = set(names)
    return {e.name: e for e in entities if e.name in wanted}


def entity_reads(names: Sequence[str]) -> EntityReads:
    """:func:`fetch_entities` as a single part (Qdrant retrieves the points in one request)."""
    together = functools.partial(fetch_entities, names=names)
    return EntityReads(parts=(together,), combine=lambda results: results[0], together=together)


def recent_entities(conn: QdrantConnection, max_bytes: int) -> list[Entity]:
    """The first points of a scroll whose sizes add up to at most ``max_bytes`` (in point id
    order; Qdrant orders by a payload field only with an index on it, which this collection
    does not keep), the most recently updated first among them. The scroll stops at the
    first that does not fit."""
    entities: list[Entity] = []
    total = 0
    for record in _scroll(conn, conn.entities):
        entity = _entity(record.payload or {})
        total += entity_bytes(entity)
        if total > max_bytes:
            break
        entities.append(entity)
    entities.sort(key=lambda e: (-e.updated_at.timestamp(), e.name))
    return entities


def existing_names(conn: QdrantConnection, names: Sequence[str]) -> set[str]:
    """The subset of ``names`` that are stored entities."""
    if not names:
        return set()
    records = _retrieve(conn, conn.entities, [entity_id(n) for n in names], ["name"])
    wanted = set(names)
    return {str((r.payload or {}).get("name")) for r in records} & wanted


def fetch_relations(
    conn: QdrantConnection, keys: Sequence[RelationKey]
) -> dict[RelationKey, Relation]:
    """The stored relations among ``keys``, retrieved by their point ids."""
    if not keys:
        return {}
    records = _retrieve(conn, conn.relations, [relation_id(k) for k in keys], True)
    wanted = set(keys)
    found = {_relation_key(r.payload or {}): _relation(r.payload or {}) for r in records}
    return {k: v for k, v in found.items() if k in wanted}


# ----------------------------------------------------------------------------- writes


def write_entities(
    conn: QdrantConnection,
    entities: Sequence[Entity],
    vectors: NDArray[np.float32],
    *,
    new: Collection[str] = (),
) -> None:
    """Insert or replace entities: each point (vector and whole payload) is upserted (so
    ``new`` changes nothing here)."""
    del new
    if not entities:
        return
    m = _models()
    rows = np.asarray(vectors, dtype=np.float32)
    points = [
        m.PointStruct(id=entity_id(e.name), vector=rows[i].tolist(), payload=_entity_payload(e))
        for i, e in enumerate(entities)
    ]
    for chunk in _chunks(points):
        conn.client.upsert(conn.entities, points=list(chunk), wait=True)


def write_relations(conn: QdrantConnection, relations: Sequence[Relation]) -> None:
    """Insert or replace relations (keyed by from, to, relation_type)."""
    if not relations:
        return
    m = _models()
    points = [
        m.PointStruct(
            id=relation_id((r.source, r.target, r.relation_type)),
            vector={},
            payload=_relation_payload(r),
        )
        for r in relations
    ]
    for chunk in _chunks(points):
        conn.client.upsert(conn.relations, points=list(chunk), wait=True)


def delete_entity(conn: QdrantConnection, name: str) -> tuple[bool, int]:
    """Delete an entity and every relation touching it (relations first).

    Returns:
        Whether the entity existed, and how many relations were removed.
    """
    if not existing_names(conn, [name]):
        return False, 0
    m = _models()
    touching = _filter(should=[_match("from_entity", name), _match("to_entity", name)])
    relations = _count(conn, conn.relations, touching)
    if relations:
        conn.client.delete(
            conn.relations, points_selector=m.FilterSelector(filter=touching), wait=True
        )
    conn.client.delete(
        conn.entities, points_selector=m.PointIdsList(points=[entity_id(name)]), wait=True
    )
    return True, relations


# ----------------------------------------------------------------------------- search


def _visible(
    scope: Scope | None, agent: str | None, entity_types: Sequence[str] | None
) -> models.Filter:
    """The points a search may return: an ``agent``-scoped entity only for its own agent (the
    rule of the SQL dialects), narrowed by ``scope`` and ``entity_types``."""
    not_agent_scoped = _match("scope", str(Scope.AGENT))
    must: list[Any] = []
    must_not: list[Any] = []
    if agent is None:
        must_not.append(not_agent_scoped)
    else:
        must.append(_filter(should=[_filter(must_not=[not_agent_scoped]), _match("agent", agent)]))
    if scope is not None:
        must.append(_match("scope", str(scope)))
    if entity_types is not None:
        must.append(_match_any("entity_type", entity_types))
    return _filter(must=must or None, must_not=must_not or None)


def search(
    conn: QdrantConnection,
    query: NDArray[np.float32],
    *,
    limit: int,
    min_similarity: float,
    scope: Scope | None,
    agent: str | None,
    entity_types: Sequence[str] | None,
    exact: bool,
    ef_search: int,
) -> list[tuple[str, float]]:
    """(name, cosine similarity) of the best visible matches, best first (ties by name).

    Through Qdrant's HNSW index with ``max(ef_search, limit)`` candidates, or a full scan with
    ``exact``; local mode always scans. ``min_similarity`` is Qdrant's ``score_threshold``
    (the cosine similarity, for a cosine collection).
    """
    if entity_types is not None and not entity_types:
        return []
    m = _models()
    params = None
    if not conn.local:
        params = m.SearchParams(hnsw_ef=max(int(ef_search), int(limit)), exact=exact)
    response = conn.client.query_points(
        conn.entities,
        query=np.asarray(query, dtype=np.float32).tolist(),
        query_filter=_visible(scope, agent, entity_types),
        search_params=params,
        limit=int(limit) + TIE_MARGIN,
        score_threshold=float(min_similarity),
        with_payload=["name"],
        with_vectors=False,
    )
    hits = [
        (str((p.payload or {})["name"]), float(p.score))
        for p in response.points
        if p.score >= min_similarity
    ]
    hits.sort(key=lambda hit: (-hit[1], hit[0]))
    return hits[: int(limit)]


def search_entities(
    conn: QdrantConnection, query: NDArray[np.float32], **arguments: Unpack[SearchArguments]
) -> tuple[list[tuple[str, float]], dict[str, Entity]]:
    """:func:`search`, then :func:`fetch_entities` of its hits (two requests)."""
    ranked = search(conn, query, **arguments)
    return ranked, fetch_entities(conn, [name for name, _ in ranked])


def content_token(conn: Any) -> str | None:
    """None: searches on this store do not use an in-process mirror saved beside it."""
    del conn
    return None


def index_chunks(
    conn: QdrantConnection, rows: int = INDEX_CHUNK_ROWS
) -> Iterator[tuple[list[IndexEntry], NDArray[np.float32]]]:
    """Every entity's index entry and unit vector, in chunks (only a local-mode store, which is
    this process's alone, keeps the accelerator)."""
    entries: list[IndexEntry] = []
    vectors: list[Any] = []
    for record in _scroll(
        conn,
        conn.entities,
        payload=["name", "entity_type", "scope", "agent"],
        vectors=True,
    ):
        payload = record.payload or {}
        agent = payload.get("agent")
        entries.append(
            IndexEntry(
                name=str(payload["name"]),
                entity_type=str(payload["entity_type"]),
                scope=Scope(str(payload["scope"])),
                agent=None if agent is None else str(agent),
            )
        )
        vectors.append(record.vector)
        if len(entries) >= rows:
            yield entries, np.asarray(vectors, dtype=np.float32)
            entries, vectors = [], []
    if entries:
        yield entries, np.asarray(vectors, dtype=np.float32)


# ----------------------------------------------------------------------------- graph


def neighbours(
    conn: QdrantConnection, root: str, max_depth: int
) -> tuple[list[GraphNode], list[GraphEdge]] | None:
    """Breadth-first walk from ``root`` over relations in both directions (one filtered scroll
    of the relation collection per depth level).

    Returns:
        The nodes (root at depth 0, each node at its shortest distance) and every relation
        between two returned nodes, or None when ``root`` does not exist.
    """
    if not existing_names(conn, [root]):
        return None
    depths = {root: 0}
    frontier = [root]
    for depth in range(1, max_depth + 1):
        if not frontier:
            break
        following: list[str] = []
        for chunk in _chunks(frontier, SCROLL_PAGE):
            touching = _filter(
                should=[_match_any("from_entity", chunk), _match_any("to_entity", chunk)]
            )
            for record in _scroll(
                conn, conn.relations, where=touching, payload=["from_entity", "to_entity"]
            ):
                payload = record.payload or {}
                for name in (str(payload["from_entity"]), str(payload["to_entity"])):
                    if name not in depths:
                        depths[name] = depth
                        following.append(name)
        frontier = following
    names = sorted(depths, key=lambda n: (depths[n], n))
    entities = fetch_entities(conn, names)
    nodes = [
        GraphNode(
            name=name,
            entity_type=entities[name].entity_type,
            depth=depths[name],
            observations=entities[name].observations,
        )
        for name in names
        if name in entities
    ]
    edges: dict[RelationKey, GraphEdge] = {}
    for chunk in _chunks(names, SCROLL_PAGE):
        for record in _scroll(
            conn, conn.relations, where=_filter(must=[_match_any("from_entity", chunk)])
        ):
            payload = record.payload or {}
            if str(payload["to_entity"]) in depths:
                key = _relation_key(payload)
                edges[key] = GraphEdge(
                    source=key[0],
                    target=key[1],
                    relation_type=key[2],
                    strength=float(payload["strength"]),
                )
    return nodes, [edges[k] for k in sorted(edges)]


# ----------------------------------------------------------------------------- reports


def counts(conn: QdrantConnection) -> dict[str, Any]:
    """Totals and breakdowns for ``stats`` (one scroll of the entities' small fields)."""
    by_type: dict[str, int] = {}
    by_scope: dict[str, int] = {}
    observations = 0
    for record in _scroll(
        conn, conn.entities, payload=["entity_type", "scope", "observation_count"]
    ):
        payload = record.payload or {}
        entity_type = str(payload["entity_type"])
        scope = str(payload["scope"])
        by_type[entity_type] = by_type.get(entity_type, 0) + 1
        by_scope[scope] = by_scope.get(scope, 0) + 1
        observations += int(payload.get("observation_count") or 0)
    return {
        "entities": sum(by_type.values()),
        "relations": relation_count(conn),
        "observations": observations,
        "by_type": dict(sorted(by_type.items())),
        "by_scope": dict(sorted(by_scope.items())),
    }


def snapshot(conn: QdrantConnection) -> tuple[list[Entity], list[Relation]]:
    """Every entity and relation, in name order (a scroll of each collection: writes made
    while it runs may or may not be in it; Qdrant has no snapshot isolation)."""
    entities = sorted(
        (_entity(r.payload or {}) for r in _scroll(conn, conn.entities)), key=lambda e: e.name
    )
    relations = sorted(
        (_relation(r.payload or {}) for r in _scroll(conn, conn.relations)),
        key=lambda r: (r.source, r.target, r.relation_type),
    )
    return entities, relations


def database_space(conn: QdrantConnection) -> DatabaseSpace | None:
    """None: Qdrant's optimizer merges and vacuums its segments itself."""
    del conn
    return None


def database_figures(conn: QdrantConnection) -> dict[str, Any]:
    """The collections' points, indexed vectors, segments and status (``fragmentation`` is 0:
    Qdrant vacuums its segments itself)."""
    figures: dict[str, Any] = {"backend": "qdrant", "fragmentation": 0.0}
    for role, collection in (("entities", conn.entities), ("relations", conn.relations)):
        info = conn.client.get_collection(collection)
        figures[role] = {
            "collection": collection,
            "points": int(info.points_count or 0),
            "indexed_vectors": int(info.indexed_vectors_count or 0),
            "segments": int(info.segments_count or 0),
            "status": str(getattr(info.status, "value", info.status)),
        }
    return figures


async def size_bytes(store: Backend) -> int:
    """The local-mode folder's size in bytes; 0 for a Qdrant server (its disk is its own to
    report)."""
    from caxton.store.qdrant import QdrantStore

    if not isinstance(store, QdrantStore):
        raise TypeError(
            f"the Qdrant memory calls need the Qdrant store, got {type(store).__name__}"
        )
    return await store.size_bytes()


async def optimize(
    store: Backend, *, checkpoint: bool, vacuum: bool, analyze: bool
) -> tuple[bool, bool, bool]:
    """Nothing to run: Qdrant's optimizer merges, vacuums and indexes segments by itself, so
    every step is reported as not done."""
    del store, checkpoint, vacuum, analyze
    return False, False, False
