"""PostgreSQL SQL of the memory component (issue #15): the pgvector :class:`MemorySQL`.

The tables are DuckDB's (:mod:`caxton.memory.schema`) in PostgreSQL's types: times are
``timestamptz`` (read back as aware UTC datetimes), embeddings ``vector(384)`` under an HNSW
index (``vector_cosine_ops``). Lists are passed as array parameters and expanded with
``unnest`` / ``= ANY``, so a batch is a handful of statements; vectors travel as pgvector text
literals (``'[0.1,...]'``), cast in SQL.

Search runs here, not in a process-local mirror, because other instances write to the same
tables: ``ORDER BY embedding <=> q`` through the HNSW index with ``hnsw.ef_search`` set for
the transaction, and ``hnsw.iterative_scan = relaxed_order`` so a filtered search keeps
scanning until it has ``limit`` visible hits (re-sorted afterwards, since relaxed order may
return them slightly out of order). ``exact=True`` orders by the similarity itself, which no
index can serve: a full scan. Search statements are never prepared: a prepared plan may keep
the index choice made under other settings (tools/bench/pgvector_search.py).

:mod:`caxton.memory.sql` describes each member; the docstrings here say what is particular
to PostgreSQL.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from caxton.memory.index import IndexEntry
from caxton.memory.model import EMBEDDING_DIM
from caxton.memory.types import Entity, GraphEdge, GraphNode, Relation, Scope

if TYPE_CHECKING:
    from collections.abc import Sequence

    import psycopg
    from numpy.typing import NDArray

    from caxton.memory.maintenance import DatabaseSpace
    from caxton.store.backend import Backend

    Connection = psycopg.Connection[Any]

#: The store dialect of these statements.
dialect: Final = "postgres"

#: The memory tables (``ANALYZE`` and the size figures cover them).
TABLES = ("memory_entities", "memory_observations", "memory_relations", "memory_embeddings")

#: ``pg_advisory_xact_lock`` key that serialises memory writes across instances ("memory").
WRITE_LOCK_KEY = 0x6D656D6F7279

RelationKey = tuple[str, str, str]

_ENTITY_COLUMNS = "name, entity_type, scope, agent, metadata, created_at, updated_at"


def _utc(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC)


def vector_literal(vector: NDArray[np.float32]) -> str:
    """pgvector's text form of one vector: ``[x1,x2,...]`` (float32 values round-trip)."""
    return "[" + ",".join(map(repr, np.asarray(vector, dtype=np.float32).tolist())) + "]"


def _count(conn: Connection, sql: str, params: Sequence[object] = ()) -> int:
    row = conn.execute(sql, list(params)).fetchone()
    return int(row[0]) if row else 0


def lock_writes(conn: Connection) -> None:
    """Take the memory write lock until the transaction ends (instances write in turn)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK_KEY])


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
    rows = conn.execute(
        f"SELECT {_ENTITY_COLUMNS} FROM memory_entities WHERE name = ANY(%s)", [list(names)]
    ).fetchall()
    if not rows:
        return {}
    observations: dict[str, list[str]] = {str(row[0]): [] for row in rows}
    for entity, content in conn.execute(
        "SELECT entity, content FROM memory_observations WHERE entity = ANY(%s) "
        "ORDER BY entity, position",
        [list(observations)],
    ).fetchall():
        observations[str(entity)].append(str(content))
    return {str(row[0]): _entity(row, observations) for row in rows}


def _entity(row: Sequence[Any], observations: dict[str, list[str]]) -> Entity:
    name, entity_type, scope, agent, metadata, created_at, updated_at = row
    return Entity(
        name=str(name),
        entity_type=str(entity_type),
        observations=tuple(observations.get(str(name), ())),
        scope=Scope(scope),
        agent=None if agent is None else str(agent),
        metadata=json.loads(metadata),
        created_at=_utc(created_at),
        updated_at=_utc(updated_at),
    )


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
        conn.execute(f"DELETE FROM {table} WHERE {column} = ANY(%s)", [names])
    conn.execute(
        f"INSERT INTO memory_entities ({_ENTITY_COLUMNS}) SELECT * FROM unnest("
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], "
        "%s::timestamptz[])",
        [
            names,
            [e.entity_type for e in entities],
            [str(e.scope) for e in entities],
            [e.agent for e in entities],
            [json.dumps(e.metadata, ensure_ascii=False) for e in entities],
            [e.created_at for e in entities],
            [e.updated_at for e in entities],
        ],
    )
    conn.execute(
        "INSERT INTO memory_observations (entity, position, content) "
        "SELECT * FROM unnest(%s::text[], %s::integer[], %s::text[])",
        [
            [e.name for e in entities for _ in e.observations],
            [i for e in entities for i in range(len(e.observations))],
            [o for e in entities for o in e.observations],
        ],
    )
    conn.execute(
        "INSERT INTO memory_embeddings (entity, entity_type, scope, agent, embedding) "
        "SELECT e, t, s, a, v::vector FROM unnest(%s::text[], %s::text[], %s::text[], "
        "%s::text[], %s::text[]) AS u(e, t, s, a, v)",
        [
            names,
            [e.entity_type for e in entities],
            [str(e.scope) for e in entities],
            [e.agent for e in entities],
            [vector_literal(v) for v in np.asarray(vectors, dtype=np.float32)],
        ],
    )


def delete_entity(conn: Connection, name: str) -> tuple[bool, int]:
    """Delete an entity, its observations, embedding and every relation touching it."""
    existed = conn.execute(
        "DELETE FROM memory_entities WHERE name = %s RETURNING name", [name]
    ).fetchone()
    if existed is None:
        return False, 0
    relations = conn.execute(
        "DELETE FROM memory_relations WHERE from_entity = %s OR to_entity = %s", [name, name]
    ).rowcount
    conn.execute("DELETE FROM memory_observations WHERE entity = %s", [name])
    conn.execute("DELETE FROM memory_embeddings WHERE entity = %s", [name])
    return True, max(relations, 0)


def existing_names(conn: Connection, names: Sequence[str]) -> set[str]:
    """The subset of ``names`` that are stored entities."""
    if not names:
        return set()
    rows = conn.execute(
        "SELECT name FROM memory_entities WHERE name = ANY(%s)", [list(set(names))]
    ).fetchall()
    return {str(row[0]) for row in rows}


_RELATION_COLUMNS = "from_entity, to_entity, relation_type, strength, confidence, created_at"


def _relation(row: Sequence[Any]) -> Relation:
    return Relation(
        source=str(row[0]),
        target=str(row[1]),
        relation_type=str(row[2]),
        strength=float(row[3]),
        confidence=float(row[4]),
        created_at=_utc(row[5]),
    )


def fetch_relations(conn: Connection, keys: Sequence[RelationKey]) -> dict[RelationKey, Relation]:
    """The stored relations among ``keys`` (from, to, relation_type)."""
    if not keys:
        return {}
    rows = conn.execute(
        "SELECT r.from_entity, r.to_entity, r.relation_type, r.strength, r.confidence, "
        "r.created_at FROM memory_relations r "
        "JOIN unnest(%s::text[], %s::text[], %s::text[]) AS q(f, t, k) "
        "ON r.from_entity = q.f AND r.to_entity = q.t AND r.relation_type = q.k",
        [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
    ).fetchall()
    return {(str(r[0]), str(r[1]), str(r[2])): _relation(r) for r in rows}


def write_relations(conn: Connection, relations: Sequence[Relation]) -> None:
    """Insert or replace relations (keyed by from, to, relation_type)."""
    if not relations:
        return
    conn.execute(
        f"INSERT INTO memory_relations ({_RELATION_COLUMNS}) SELECT * FROM unnest("
        "%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::timestamptz[]) "
        "ON CONFLICT (from_entity, to_entity, relation_type) DO UPDATE SET "
        "strength = EXCLUDED.strength, confidence = EXCLUDED.confidence, "
        "created_at = EXCLUDED.created_at",
        [
            [r.source for r in relations],
            [r.target for r in relations],
            [r.relation_type for r in relations],
            [r.strength for r in relations],
            [r.confidence for r in relations],
            [r.created_at for r in relations],
        ],
    )


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
    """Through the HNSW index (``ef_search`` candidates, at least ``limit``; iterative scan
    fills a filtered search), or a full scan with ``exact``.

    ``min_similarity`` is applied to the ``limit`` best hits, which gives the same answer as
    applying it first, without letting the iterative scan walk the whole graph for hits that
    cannot pass.
    """
    where = ["(scope <> 'agent' OR agent = %(agent)s)"]
    params: dict[str, object] = {
        "query": vector_literal(query),
        "agent": agent,
        "min_similarity": float(min_similarity),
        "limit": int(limit),
    }
    if scope is not None:
        where.append("scope = %(scope)s")
        params["scope"] = str(scope)
    if entity_types is not None:
        where.append("entity_type = ANY(%(types)s::text[])")
        params["types"] = list(entity_types)
    filters = " AND ".join(where)
    if exact:
        sql = (
            "SELECT entity, similarity FROM (SELECT entity, "
            "1 - (embedding <=> %(query)s::vector) AS similarity FROM memory_embeddings "
            f"WHERE {filters}) AS s WHERE similarity >= %(min_similarity)s "
            "ORDER BY similarity DESC, entity LIMIT %(limit)s"
        )
    else:
        conn.execute(
            "SELECT set_config('hnsw.ef_search', %s, true), "
            "set_config('hnsw.iterative_scan', 'relaxed_order', true)",
            [str(max(int(ef_search), int(limit)))],
        )
        sql = (
            "WITH hits AS MATERIALIZED (SELECT entity, "
            "embedding <=> %(query)s::vector AS distance FROM memory_embeddings "
            f"WHERE {filters} ORDER BY distance LIMIT %(limit)s) "
            "SELECT entity, 1 - distance AS similarity FROM hits "
            "WHERE 1 - distance >= %(min_similarity)s ORDER BY distance, entity"
        )
    rows = conn.execute(sql, params, prepare=False).fetchall()
    return [(str(name), float(similarity)) for name, similarity in rows]


def load_index(conn: Connection) -> tuple[list[IndexEntry], NDArray[np.float32]]:
    """Every entity's index entry and unit vector (only a process that is the database's one
    user keeps a mirror; a shared store searches in SQL)."""
    rows = conn.execute(
        "SELECT entity, entity_type, scope, agent, embedding::real[] FROM memory_embeddings"
    ).fetchall()
    entries = [
        IndexEntry(
            name=str(name),
            entity_type=str(entity_type),
            scope=Scope(str(scope)),
            agent=None if agent is None else str(agent),
        )
        for name, entity_type, scope, agent, _ in rows
    ]
    if not entries:
        return [], np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return entries, np.asarray([row[4] for row in rows], dtype=np.float32)


def neighbours(
    conn: Connection, root: str, max_depth: int
) -> tuple[list[GraphNode], list[GraphEdge]] | None:
    """Breadth-first walk from ``root`` over relations in both directions (one query per
    depth level)."""
    if not existing_names(conn, [root]):
        return None
    depths = {root: 0}
    frontier = [root]
    for depth in range(1, max_depth + 1):
        if not frontier:
            break
        rows = conn.execute(
            "SELECT from_entity, to_entity FROM memory_relations "
            "WHERE from_entity = ANY(%(f)s) OR to_entity = ANY(%(f)s)",
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
        "WHERE from_entity = ANY(%(n)s) AND to_entity = ANY(%(n)s) "
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
        "relations": relation_count(conn),
        "observations": _count(conn, "SELECT count(*) FROM memory_observations"),
        "by_type": by_type,
        "by_scope": by_scope,
    }


def snapshot(conn: Connection) -> tuple[list[Entity], list[Relation]]:
    """Every entity and relation, in name order (one consistent read for exports)."""
    rows = conn.execute(f"SELECT {_ENTITY_COLUMNS} FROM memory_entities ORDER BY name").fetchall()
    observations: dict[str, list[str]] = {}
    for entity, content in conn.execute(
        "SELECT entity, content FROM memory_observations ORDER BY entity, position"
    ).fetchall():
        observations.setdefault(str(entity), []).append(str(content))
    entities = [_entity(row, observations) for row in rows]
    relations = [
        _relation(r)
        for r in conn.execute(
            f"SELECT {_RELATION_COLUMNS} FROM memory_relations "
            "ORDER BY from_entity, to_entity, relation_type"
        ).fetchall()
    ]
    return entities, relations


def database_space(conn: Connection) -> DatabaseSpace | None:
    """None: PostgreSQL's autovacuum reclaims dead rows; there is no file to compact."""
    del conn
    return None


def _database_size(conn: Connection) -> int:
    return _count(conn, "SELECT pg_database_size(current_database())")


def database_figures(conn: Connection) -> dict[str, Any]:
    """The database's size, the memory tables' (with indexes) and their dead-row share."""
    tables = conn.execute(
        "SELECT relname, pg_total_relation_size(relid), n_live_tup, n_dead_tup "
        "FROM pg_stat_user_tables WHERE relname = ANY(%s) ORDER BY relname",
        [list(TABLES)],
    ).fetchall()
    live = sum(int(row[2]) for row in tables)
    dead = sum(int(row[3]) for row in tables)
    return {
        "database_size_bytes": _database_size(conn),
        "memory_tables_bytes": {str(row[0]): int(row[1]) for row in tables},
        "dead_rows": dead,
        "fragmentation": dead / (live + dead) if live + dead else 0.0,
    }


async def size_bytes(store: Backend) -> int:
    """``pg_database_size`` of the current database (every feature's tables)."""
    return await store.execute_fn(_database_size)


def _analyze(conn: Connection) -> None:
    for table in TABLES:
        conn.execute(f"ANALYZE {table}")


async def optimize(
    store: Backend, *, checkpoint: bool, vacuum: bool, analyze: bool
) -> tuple[bool, bool, bool]:
    """``ANALYZE`` of the memory tables when asked; checkpoints and ``VACUUM`` are left to the
    server and its autovacuum (``VACUUM`` cannot run in a transaction), so they are reported
    as not done."""
    del checkpoint, vacuum
    if analyze:
        await store.execute_write_fn(_analyze)
    return False, False, analyze
