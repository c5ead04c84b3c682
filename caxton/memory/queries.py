"""DuckDB SQL of the memory component: synchronous ``fn(conn)`` functions run by the store.

This module is the DuckDB :class:`caxton.memory.sql.MemorySQL` (its PostgreSQL counterpart is
:mod:`caxton.memory.postgres_sql`). Reads run through
:meth:`caxton.store.Store.execute_fn` (one snapshot per call), writes through
:meth:`caxton.store.Store.execute_write_fn` (one transaction per call). Lists are passed as
array parameters and expanded with ``unnest`` so a batch is a handful of statements. The
reads both dialects share are :mod:`caxton.memory.sql_shared`'s, in DuckDB's :data:`STYLE`.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from caxton.memory import sql_shared
from caxton.memory.index import IndexEntry
from caxton.memory.maintenance import DatabaseSpace, read_space
from caxton.memory.model import EMBEDDING_DIM
from caxton.memory.sql import INDEX_CHUNK_ROWS
from caxton.memory.sql import RelationKey as RelationKey
from caxton.memory.sql_shared import counts as counts
from caxton.memory.sql_shared import entity_count as entity_count
from caxton.memory.sql_shared import from_db_time as from_db_time
from caxton.memory.sql_shared import relation_count as relation_count
from caxton.memory.sql_shared import snapshot as snapshot
from caxton.memory.sql_shared import vector_literal
from caxton.memory.types import Scope

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence

    from numpy.typing import NDArray

    from caxton.memory.types import Entity, Relation
    from caxton.store import Connection, Store
    from caxton.store.backend import Backend

#: The store dialect of these statements.
dialect: Final = "duckdb"

_VECTOR = f"FLOAT[{EMBEDDING_DIM}]"


def totals(conn: Any) -> tuple[int, int]:
    """The numbers of stored entities and relations: two counts, which DuckDB answers from its
    row counts, where one statement of two scalar subqueries scans (1.9 ms against 1.1 ms at
    50k entities); the writer has no round trips to save."""
    return entity_count(conn), relation_count(conn)


def lock_writes(conn: Connection) -> None:
    """Nothing to do: DuckDB runs one write at a time, and one process holds the file."""
    del conn


def to_db_time(value: dt.datetime) -> dt.datetime:
    """Aware datetime -> naive UTC for a TIMESTAMP column."""
    return value.astimezone(dt.UTC).replace(tzinfo=None)


def write_entities(
    conn: Connection,
    entities: Sequence[Entity],
    vectors: NDArray[np.float32],
    *,
    new: Collection[str] = (),
) -> None:
    """Insert or replace entities with their observations and embeddings: their rows are
    deleted (but for the ``new`` names, known not to be stored: three statements fewer when
    all are), then inserted from list parameters (``FLOAT[384]`` embeddings)."""
    if not entities:
        return
    STYLE.remove_entity_rows(conn, [e.name for e in entities if e.name not in new])
    conn.execute(
        "INSERT INTO memory_entities SELECT * FROM (SELECT "
        "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
        "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::TIMESTAMP[]), "
        "unnest(?::TIMESTAMP[]))",
        sql_shared.entity_columns(entities, time=to_db_time),
    )
    observations = sql_shared.observation_columns(entities)
    if observations[0]:
        conn.execute(
            "INSERT INTO memory_observations SELECT * FROM (SELECT "
            "unnest(?::VARCHAR[]), unnest(?::INTEGER[]), unnest(?::VARCHAR[]))",
            observations,
        )
    conn.execute(
        f"INSERT INTO memory_embeddings SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
        f"unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), "
        f"unnest(?::VARCHAR[])::{_VECTOR})",
        [*sql_shared.embedding_columns(entities), [vector_literal(v) for v in vectors]],
    )


def delete_entity(conn: Connection, name: str) -> tuple[bool, int]:
    """Delete an entity, its observations, embedding and every relation touching it.

    Returns:
        Whether the entity existed, and how many relations were removed.
    """
    existed = (
        sql_shared.count(conn, "SELECT count(*) FROM memory_entities WHERE name = ?", [name]) > 0
    )
    if not existed:
        return False, 0
    relations = sql_shared.count(
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


def write_relations(conn: Connection, relations: Sequence[Relation]) -> None:
    """Insert or replace relations (keyed by from, to, relation_type)."""
    if not relations:
        return
    columns = sql_shared.relation_columns(relations, time=to_db_time)
    conn.execute(
        "DELETE FROM memory_relations WHERE (from_entity, to_entity, relation_type) IN "
        "(SELECT (f, t, k) FROM (SELECT unnest(?::VARCHAR[]) AS f, unnest(?::VARCHAR[]) AS t, "
        "unnest(?::VARCHAR[]) AS k))",
        columns[:3],
    )
    conn.execute(
        "INSERT INTO memory_relations SELECT * FROM (SELECT unnest(?::VARCHAR[]), "
        "unnest(?::VARCHAR[]), unnest(?::VARCHAR[]), unnest(?::DOUBLE[]), unnest(?::DOUBLE[]), "
        "unnest(?::TIMESTAMP[]))",
        columns,
    )


def _search_rows(conn: Connection, search: sql_shared.SimilaritySearch) -> list[Any]:
    """Cosine similarity over every visible embedding: DuckDB has no vector index (the
    in-process accelerator is the fast path), so ``exact`` and ``ef_search`` change nothing."""
    return conn.execute(
        f"SELECT entity, similarity FROM (SELECT entity, scope, agent, entity_type, "
        f"array_cosine_similarity(embedding, $query::{_VECTOR}) AS similarity "
        f"FROM memory_embeddings) WHERE {search.visible} AND similarity >= $min_similarity "
        "ORDER BY similarity DESC, entity LIMIT $limit",
        {
            **search.params,
            "query": np.asarray(search.query, dtype=np.float32).tolist(),
            "min_similarity": search.min_similarity,
            "limit": search.limit,
        },
    ).fetchall()


#: DuckDB's parameters and lists: up to 64 names as one parameter each (DuckDB can then use
#: the column's index: ~1 ms instead of ~5 ms at 100k rows), more as one list parameter.
STYLE: Final = sql_shared.SQLStyle(
    param="?",
    named_param="${}",
    in_array="{column} IN (SELECT unnest({param}::VARCHAR[]))",
    key_rows=(
        "(SELECT unnest(?::VARCHAR[]) AS f, unnest(?::VARCHAR[]) AS t, unnest(?::VARCHAR[]) AS k) q"
    ),
    types_filter="list_contains($types::VARCHAR[], entity_type)",
    search_rows=_search_rows,
    short_list=64,
)

#: The members :mod:`caxton.memory.sql_shared` writes once, in DuckDB's style.
fetch_entities: Final = STYLE.fetch_entities
entity_reads: Final = STYLE.entity_reads
recent_entities: Final = STYLE.recent_entities
existing_names: Final = STYLE.existing_names
fetch_relations: Final = STYLE.fetch_relations
neighbours: Final = STYLE.neighbours
search: Final = STYLE.search
search_entities: Final = STYLE.search_entities


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
    """The exact search: cosine similarity over every visible embedding, best first (DuckDB's
    only search: :func:`search` is the same)."""
    return search(
        conn,
        query,
        limit=limit,
        min_similarity=min_similarity,
        scope=scope,
        agent=agent,
        entity_types=entity_types,
        exact=True,
        ef_search=0,
    )


def index_chunks(
    conn: Connection, rows: int = INDEX_CHUNK_ROWS
) -> Iterator[tuple[list[IndexEntry], NDArray[np.float32]]]:
    """Every entity's index entry and unit vector, :data:`INDEX_CHUNK_ROWS` rowids at a time
    (a range of rowids is a cheap scan; the caller keeps writes out meanwhile)."""
    last = conn.execute("SELECT max(rowid) FROM memory_embeddings").fetchone()
    if last is None or last[0] is None:
        return
    for start in range(0, int(last[0]) + 1, rows):
        result = conn.execute(
            "SELECT entity, entity_type, scope, agent, embedding FROM memory_embeddings "
            "WHERE rowid >= ? AND rowid < ?",
            [start, start + rows],
        ).fetchnumpy()
        if not len(result["entity"]):
            continue
        # Whole columns to Python lists (a masked column gives None where it is NULL): per
        # row numpy indexing cost ~10 s of a 1M-row reload.
        entries = [
            IndexEntry(
                name=str(name),
                entity_type=str(entity_type),
                scope=_SCOPES[str(scope)],
                agent=None if agent is None else str(agent),
            )
            for name, entity_type, scope, agent in zip(
                result["entity"].tolist(),
                result["entity_type"].tolist(),
                result["scope"].tolist(),
                result["agent"].tolist(),
                strict=True,
            )
        ]
        yield entries, np.stack(list(result["embedding"])).astype(np.float32, copy=False)


_SCOPES = {scope.value: scope for scope in Scope}


def content_token(conn: Connection) -> str | None:
    """A digest of every (entity, type, scope, agent, embedding) row, in any order.

    DuckDB hashes each row and folds the hashes two ways (xor and sum), so no row leaves the
    database: ~1 s at 1M rows on two threads. A DuckDB whose ``hash`` differs (another
    version) gives another token, which only costs a reload from the rows.
    """
    row = conn.execute(
        "SELECT count(*), bit_xor(h), sum(h::HUGEINT) FROM ("
        "SELECT hash(entity, entity_type, scope, agent, embedding) AS h "
        "FROM memory_embeddings)"
    ).fetchone()
    if row is None:
        return None
    count, folded, total = row
    return f"duckdb:{count}:{folded or 0:x}:{total or 0:x}"


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
