"""DuckDB SQL of the memory component: synchronous ``fn(conn)`` functions run by the store.

This module is the DuckDB :class:`caxton.memory.sql.MemorySQL` (its PostgreSQL counterpart is
:mod:`caxton.memory.postgres_sql`). Reads run through
:meth:`caxton.store.Store.execute_fn` (one snapshot per call), writes through
:meth:`caxton.store.Store.execute_write_fn` (one transaction per call). Lists are passed as
array parameters and expanded with ``unnest`` so a batch is a handful of statements.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from caxton.memory.index import IndexEntry
from caxton.memory.maintenance import DatabaseSpace, read_space
from caxton.memory.model import EMBEDDING_DIM
from caxton.memory.types import (
    Entity,
    GraphEdge,
    GraphNode,
    Relation,
    Scope,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from numpy.typing import NDArray

    from caxton.store import Connection, Store
    from caxton.store.backend import Backend

#: The store dialect of these statements.
dialect: Final = "duckdb"

_VECTOR = f"FLOAT[{EMBEDDING_DIM}]"


def lock_writes(conn: Connection) -> None:
    """Nothing to do: DuckDB runs one write at a time, and one process holds the file."""
    del conn


def to_db_time(value: dt.datetime) -> dt.datetime:
    """Aware datetime -> naive UTC for a TIMESTAMP column."""
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def from_db_time(value: dt.datetime) -> dt.datetime:
    """Naive UTC from a TIMESTAMP column -> aware datetime."""
    return value.replace(tzinfo=dt.UTC)


def _count(conn: Connection, sql: str, params: Sequence[object] = ()) -> int:
    row = conn.execute(sql, list(params)).fetchone()
    return int(row[0]) if row else 0


def entity_count(conn: Connection) -> int:
    """The number of stored entities."""
    return _count(conn, "SELECT count(*) FROM memory_entities")


def relation_count(conn: Connection) -> int:
    """The number of stored relations."""
    return _count(conn, "SELECT count(*) FROM memory_relations")


def fetch_entities(conn: Connection, names: Sequence[str]) -> dict[str, Entity]:
    """The stored entities among ``names``, keyed by name."""
    if not names:
        return {}
    where, params = _name_filter("name", names)
    rows = conn.execute(
        "SELECT name, entity_type, scope, agent, metadata, created_at, updated_at "
        f"FROM memory_entities WHERE {where}",
        params,
    ).fetchall()
    return _with_observations(conn, rows)


_SHORT_NAME_LIST = 64


def _name_filter(column: str, names: Sequence[str]) -> tuple[str, list[Any]]:
    """``column IN (...)``: a parameter list for a few names (DuckDB can then use the column's
    index: ~1 ms instead of ~5 ms at 100k rows), one list parameter for many."""
    if len(names) <= _SHORT_NAME_LIST:
        return f"{column} IN ({', '.join('?' * len(names))})", list(names)
    return f"{column} IN (SELECT unnest(?::VARCHAR[]))", [list(names)]


def _with_observations(conn: Connection, rows: list[tuple[Any, ...]]) -> dict[str, Entity]:
    if not rows:
        return {}
    names = [str(row[0]) for row in rows]
    observations: dict[str, list[str]] = {name: [] for name in names}
    where, params = _name_filter("entity", names)
    for entity, content in conn.execute(
        f"SELECT entity, content FROM memory_observations WHERE {where} ORDER BY entity, position",
        params,
    ).fetchall():
        observations[str(entity)].append(str(content))
    result: dict[str, Entity] = {}
    for name, entity_type, scope, agent, metadata, created_at, updated_at in rows:
        result[str(name)] = Entity(
            name=str(name),
            entity_type=str(entity_type),
            observations=tuple(observations[str(name)]),
            scope=Scope(scope),
            agent=None if agent is None else str(agent),
            metadata=json.loads(metadata),
            created_at=from_db_time(created_at),
            updated_at=from_db_time(updated_at),
        )
    return result


def write_entities(
    conn: Connection, entities: Sequence[Entity], vectors: NDArray[np.float32]
) -> None:
    """Insert or replace entities with their observations and embeddings."""
    if not entities:
        return
    names = [e.name for e in entities]
    for table, column in (
        ("memory_entities", "name"),
        ("memory_observations", "entity"),
        ("memory_embeddings", "entity"),
    ):
        conn.execute(
            f"DELETE FROM {table} WHERE {column} IN (SELECT unnest(?::VARCHAR[]))", [names]
        )
    conn.execute(
        "INSERT INTO memory_entities SELECT * FROM (SELECT "
        "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
        "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::TIMESTAMP[]), "
        "unnest(?::TIMESTAMP[]))",
        [
            names,
            [e.entity_type for e in entities],
            [str(e.scope) for e in entities],
            [e.agent for e in entities],
            [json.dumps(e.metadata, ensure_ascii=False) for e in entities],
            [to_db_time(e.created_at) for e in entities],
            [to_db_time(e.updated_at) for e in entities],
        ],
    )
    owners = [e.name for e in entities for _ in e.observations]
    if owners:
        conn.execute(
            "INSERT INTO memory_observations SELECT * FROM (SELECT "
            "unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::VARCHAR[]))",
            [
                owners,
                [i for e in entities for i in range(len(e.observations))],
                [o for e in entities for o in e.observations],
            ],
        )
    conn.execute(
        f"INSERT INTO memory_embeddings SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
        f"unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
        f"unnest(?::{_VECTOR}[]))",
        [
            names,
            [e.entity_type for e in entities],
            [str(e.scope) for e in entities],
            [e.agent for e in entities],
            np.asarray(vectors, dtype=np.float32).tolist(),
        ],
    )


def delete_entity(conn: Connection, name: str) -> tuple[bool, int]:
    """Delete an entity, its observations, embedding and every relation touching it.

    Returns:
        Whether the entity existed, and how many relations were removed.
    """
    existed = _count(conn, "SELECT count(*) FROM memory_entities WHERE name = ?", [name]) > 0
    if not existed:
        return False, 0
    relations = _count(
        conn,
        "SELECT count(*) FROM memory_relations WHERE from_entity = ? OR to_entity = ?",
        [name, name],
    )
    conn.execute(
        "DELETE FROM memory_relations WHERE from_entity = ? OR to_entity = ?", [name, name]
    )
    conn.execute("DELETE FROM memory_observations WHERE entity = ?", [name])
    conn.execute("DELETE FROM memory_embeddings WHERE entity = ?", [name])
    conn.execute("DELETE FROM memory_entities WHERE name = ?", [name])
    return True, relations


def existing_names(conn: Connection, names: Sequence[str]) -> set[str]:
    """The subset of ``names`` that are stored entities."""
    if not names:
        return set()
    rows = conn.execute(
        "SELECT name FROM memory_entities WHERE name IN (SELECT unnest(?::VARCHAR[]))",
        [list(set(names))],
    ).fetchall()
    return {str(row[0]) for row in rows}


RelationKey = tuple[str, str, str]


def fetch_relations(conn: Connection, keys: Sequence[RelationKey]) -> dict[RelationKey, Relation]:
    """The stored relations among ``keys`` (from, to, relation_type)."""
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT r.from_entity, r.to_entity, r.relation_type, r.strength, r.confidence, "
        "r.created_at FROM memory_relations r JOIN (SELECT unnest(?::VARCHAR[]) AS f, "
        "unnest(?::VARCHAR[]) AS t, unnest(?::VARCHAR[]) AS k) q "
        "ON r.from_entity = q.f AND r.to_entity = q.t AND r.relation_type = q.k",
        [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
    ).fetchall()
    return {(str(r[0]), str(r[1]), str(r[2])): _relation(r) for r in rows}


def _relation(row: tuple[Any, ...]) -> Relation:
    return Relation(
        source=str(row[0]),
        target=str(row[1]),
        relation_type=str(row[2]),
        strength=float(row[3]),
        confidence=float(row[4]),
        created_at=from_db_time(row[5]),
    )


def write_relations(conn: Connection, relations: Sequence[Relation]) -> None:
    """Insert or replace relations (keyed by from, to, relation_type)."""
    if not relations:
        return
    columns = [
        [r.source for r in relations],
        [r.target for r in relations],
        [r.relation_type for r in relations],
    ]
    conn.execute(
        "DELETE FROM memory_relations WHERE (from_entity, to_entity, relation_type) IN "
        "(SELECT (f, t, k) FROM (SELECT unnest(?::VARCHAR[]) AS f, unnest(?::VARCHAR[]) AS t, "
        "unnest(?::VARCHAR[]) AS k))",
        columns,
    )
    conn.execute(
        "INSERT INTO memory_relations SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
        "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::DOUBLE[]), unnest(?::DOUBLE[]), "
        "unnest(?::TIMESTAMP[]))",
        [
            *columns,
            [r.strength for r in relations],
            [r.confidence for r in relations],
            [to_db_time(r.created_at) for r in relations],
        ],
    )


def search_exact(
    conn: Connection,
    query: NDArray[np.float32],
    *,
    limit: int,
    min_similarity: float,
    scope: Scope | None,
    agent: str | None,
    entity_types: Sequence[str] | None,
) -> list[tuple[str, float]]:
    """The exact search: cosine similarity over every visible embedding, best first.

    Visibility: an ``agent``-scoped entity is visible only when ``agent`` names its owner.
    """
    where = ["(scope <> 'agent' OR agent = $agent)", "similarity >= $min_similarity"]
    params: dict[str, object] = {
        "query": np.asarray(query, dtype=np.float32).tolist(),
        "agent": agent,
        "min_similarity": float(min_similarity),
        "limit": int(limit),
    }
    if scope is not None:
        where.append("scope = $scope")
        params["scope"] = str(scope)
    if entity_types is not None:
        where.append("list_contains($types::VARCHAR[], entity_type)")
        params["types"] = list(entity_types)
    rows = conn.execute(
        f"SELECT entity, similarity FROM (SELECT entity, scope, agent, entity_type, "
        f"array_cosine_similarity(embedding, $query::{_VECTOR}) AS similarity "
        f"FROM memory_embeddings) "
        f"WHERE {' AND '.join(where)} ORDER BY similarity DESC, entity LIMIT $limit",
        params,
    ).fetchall()
    return [(str(name), float(similarity)) for name, similarity in rows]


def search(
    conn: Connection,
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
    """:func:`search_exact`: DuckDB has no vector index (the in-process accelerator is the
    fast path), so ``exact`` and ``ef_search`` change nothing."""
    del exact, ef_search
    return search_exact(
        conn,
        query,
        limit=limit,
        min_similarity=min_similarity,
        scope=scope,
        agent=agent,
        entity_types=entity_types,
    )


def load_index(conn: Connection) -> tuple[list[IndexEntry], NDArray[np.float32]]:
    """Every entity's index entry and unit vector, for rebuilding the accelerator."""
    result = conn.execute(
        "SELECT entity, entity_type, scope, agent, embedding FROM memory_embeddings"
    ).fetchnumpy()
    names = result["entity"]
    entries = [
        IndexEntry(
            name=str(names[i]),
            entity_type=str(result["entity_type"][i]),
            scope=Scope(str(result["scope"][i])),
            agent=_optional_str(result["agent"][i]),
        )
        for i in range(len(names))
    ]
    if not entries:
        return [], np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    matrix = np.stack(list(result["embedding"])).astype(np.float32, copy=False)
    return entries, matrix


def _optional_str(value: object) -> str | None:
    if value is None or value is np.ma.masked:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    return str(value)


def neighbours(
    conn: Connection, root: str, max_depth: int
) -> tuple[list[GraphNode], list[GraphEdge]] | None:
    """Breadth-first walk from ``root`` over relations in both directions.

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
        rows = conn.execute(
            "SELECT from_entity, to_entity FROM memory_relations "
            "WHERE from_entity IN (SELECT unnest($f::VARCHAR[])) "
            "OR to_entity IN (SELECT unnest($f::VARCHAR[]))",
            {"f": frontier},
        ).fetchall()
        following: list[str] = []
        for source, target in rows:
            for name in (str(source), str(target)):
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
    edge_rows = conn.execute(
        "SELECT from_entity, to_entity, relation_type, strength FROM memory_relations "
        "WHERE from_entity IN (SELECT unnest($n::VARCHAR[])) "
        "AND to_entity IN (SELECT unnest($n::VARCHAR[])) "
        "ORDER BY from_entity, to_entity, relation_type",
        {"n": names},
    ).fetchall()
    edges = [
        GraphEdge(source=str(f), target=str(t), relation_type=str(k), strength=float(s))
        for f, t, k, s in edge_rows
    ]
    return nodes, edges


def counts(conn: Connection) -> dict[str, Any]:
    """Totals and breakdowns for ``stats``."""
    by_type = {
        str(k): int(v)
        for k, v in conn.execute(
            "SELECT entity_type, count(*) FROM memory_entities GROUP BY 1 ORDER BY 1"
        ).fetchall()
    }
    by_scope = {
        str(k): int(v)
        for k, v in conn.execute(
            "SELECT scope, count(*) FROM memory_entities GROUP BY 1 ORDER BY 1"
        ).fetchall()
    }
    return {
        "entities": sum(by_type.values()),
        "relations": _count(conn, "SELECT count(*) FROM memory_relations"),
        "observations": _count(conn, "SELECT count(*) FROM memory_observations"),
        "by_type": by_type,
        "by_scope": by_scope,
    }


def snapshot(conn: Connection) -> tuple[list[Entity], list[Relation]]:
    """Every entity and relation, in name order (one consistent read for exports)."""
    rows = conn.execute(
        "SELECT name, entity_type, scope, agent, metadata, created_at, updated_at "
        "FROM memory_entities ORDER BY name"
    ).fetchall()
    entities = _with_all_observations(conn, rows)
    relations = [
        _relation(r)
        for r in conn.execute(
            "SELECT from_entity, to_entity, relation_type, strength, confidence, created_at "
            "FROM memory_relations ORDER BY from_entity, to_entity, relation_type"
        ).fetchall()
    ]
    return entities, relations


def _with_all_observations(conn: Connection, rows: list[tuple[Any, ...]]) -> list[Entity]:
    observations: dict[str, list[str]] = {}
    for entity, content in conn.execute(
        "SELECT entity, content FROM memory_observations ORDER BY entity, position"
    ).fetchall():
        observations.setdefault(str(entity), []).append(str(content))
    return [
        Entity(
            name=str(name),
            entity_type=str(entity_type),
            observations=tuple(observations.get(str(name), ())),
            scope=Scope(scope),
            agent=None if agent is None else str(agent),
            metadata=json.loads(metadata),
            created_at=from_db_time(created_at),
            updated_at=from_db_time(updated_at),
        )
        for name, entity_type, scope, agent, metadata, created_at, updated_at in rows
    ]


def database_space(conn: Connection) -> DatabaseSpace:
    """The block counts of the DuckDB file (``PRAGMA database_size``)."""
    return read_space(conn)


def database_figures(conn: Connection) -> dict[str, Any]:
    """``PRAGMA database_size`` as a dict, plus ``fragmentation`` (free / total blocks)."""
    cursor = conn.execute("PRAGMA database_size")
    row = cursor.fetchone()
    if row is None:
        return {}
    columns = [d[0] for d in cursor.description or ()]
    figures: dict[str, Any] = dict(zip(columns, row, strict=False))
    total = int(figures.get("total_blocks") or 0)
    free = int(figures.get("free_blocks") or 0)
    figures["fragmentation"] = free / total if total else 0.0
    return figures


def _file_store(store: Backend) -> Store:
    from caxton.store import Store

    if not isinstance(store, Store):
        raise TypeError(
            f"the DuckDB memory SQL needs the DuckDB store, got {type(store).__name__}: "
            "pair caxton.memory.postgres_sql with a PostgresStore"
        )
    return store


async def size_bytes(store: Backend) -> int:
    """The size of the DuckDB file plus its write-ahead log, in bytes."""
    return _file_store(store).size_bytes()


async def optimize(
    store: Backend, *, checkpoint: bool, vacuum: bool, analyze: bool
) -> tuple[bool, bool, bool]:
    """``CHECKPOINT``, ``VACUUM`` and ``ANALYZE`` as asked, each in the writer's turn outside a
    transaction (DuckDB refuses them inside one)."""
    duckdb_store = _file_store(store)
    if checkpoint:
        await duckdb_store.checkpoint()
    for enabled, statement in ((vacuum, "VACUUM"), (analyze, "ANALYZE")):
        if enabled:
            await duckdb_store.execute_write_fn(
                functools.partial(_execute, statement), transaction=False
            )
    return checkpoint, vacuum, analyze


def _execute(statement: str, conn: Connection) -> None:
    conn.execute(statement)
