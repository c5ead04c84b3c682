"""The memory SQL seam: what :class:`caxton.memory.MemoryService` asks of a dialect (issue #15).

The service holds a :class:`caxton.store.backend.Backend` and an object satisfying
:class:`MemorySQL` for that backend's dialect; the composition root picks both. Three modules
satisfy it (a module is a valid Protocol implementation):

* :mod:`caxton.memory.queries` — DuckDB (``FLOAT[384]`` embeddings, exact scans; the
  in-process accelerator answers fast searches);
* :mod:`caxton.memory.postgres_sql` — PostgreSQL with pgvector (``vector(384)`` with an HNSW
  index; searches run in SQL, since other instances write too);
* :mod:`caxton.memory.qdrant_memory` — Qdrant (issue #16): not SQL, but the same calls on a
  :class:`caxton.store.qdrant.QdrantConnection` (points in two collections, Qdrant's search).

The synchronous members are ``fn(conn)`` calls the service runs through the store (reads with
``execute_fn``, writes with ``execute_write_fn``); ``conn`` is the dialect's connection. The
async members are the few steps that are not one transaction (sizes and maintenance).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, Unpack

import numpy as np

from caxton.memory.model import EMBEDDING_DIM

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence

    from numpy.typing import NDArray

    from caxton.memory.index import IndexEntry
    from caxton.memory.maintenance import DatabaseSpace
    from caxton.memory.sql_shared import EntityReads, SearchArguments
    from caxton.memory.types import Entity, GraphEdge, GraphNode, Relation, Scope
    from caxton.store.backend import Backend, Dialect

#: (from, to, relation_type): a relation's key.
RelationKey = tuple[str, str, str]


class MemorySQL(Protocol):
    """The memory tables of one SQL dialect, as calls on a connection of that dialect."""

    @property
    def dialect(self) -> Dialect:
        """The store dialect these statements are written for."""
        ...

    def lock_writes(self, conn: Any) -> None:
        """Serialise memory writes with every other writer of the database, until commit
        (so the ``max_entities`` check and the totals read in the write hold)."""
        ...

    def entity_count(self, conn: Any) -> int:
        """The number of stored entities."""
        ...

    def relation_count(self, conn: Any) -> int:
        """The number of stored relations."""
        ...

    def totals(self, conn: Any) -> tuple[int, int]:
        """The numbers of stored entities and relations (one statement where the store can)."""
        ...

    def fetch_entities(self, conn: Any, names: Sequence[str]) -> dict[str, Entity]:
        """The stored entities among ``names``, keyed by name."""
        ...

    def recent_entities(self, conn: Any, max_bytes: int) -> list[Entity]:
        """Stored entities whose sizes (:func:`caxton.memory.entity_cache.entity_bytes`, or
        as near as the dialect can count without reading them) add up to at most
        ``max_bytes``, the most recently updated first where the dialect can order them so
        (the entity cache's fill: it reads no more than the cache can keep)."""
        ...

    def entity_reads(self, names: Sequence[str]) -> EntityReads:
        """:meth:`fetch_entities` as one-statement parts that may run side by side."""
        ...

    def write_entities(
        self,
        conn: Any,
        entities: Sequence[Entity],
        vectors: NDArray[np.float32],
        *,
        new: Collection[str] = (),
    ) -> None:
        """Insert or replace entities with their observations and embeddings (``new``: names
        known not to be stored, whose old rows need not be looked for)."""
        ...

    def delete_entity(self, conn: Any, name: str) -> tuple[bool, int]:
        """Delete an entity and everything hanging on it: (it existed, relations removed)."""
        ...

    def existing_names(self, conn: Any, names: Sequence[str]) -> set[str]:
        """The subset of ``names`` that are stored entities."""
        ...

    def fetch_relations(
        self, conn: Any, keys: Sequence[RelationKey]
    ) -> dict[RelationKey, Relation]:
        """The stored relations among ``keys``."""
        ...

    def write_relations(self, conn: Any, relations: Sequence[Relation]) -> None:
        """Insert or replace relations (keyed by from, to, relation_type)."""
        ...

    def search(
        self,
        conn: Any,
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

        ``exact`` asks for a full scan; otherwise the dialect may use its vector index with
        ``ef_search`` candidates. An ``agent``-scoped entity is visible only to its agent.
        """
        ...

    def search_entities(
        self, conn: Any, query: NDArray[np.float32], **arguments: Unpack[SearchArguments]
    ) -> tuple[list[tuple[str, float]], dict[str, Entity]]:
        """:meth:`search` (``arguments`` are its keywords), and the hits' entities as
        :meth:`fetch_entities` reads them: one statement where the dialect can (PostgreSQL),
        else the two one after the other."""
        ...

    def index_chunks(
        self, conn: Any, rows: int = ...
    ) -> Iterator[tuple[list[IndexEntry], NDArray[np.float32]]]:
        """Every entity's index entry and unit vector (for the in-process accelerator), at most
        :data:`INDEX_CHUNK_ROWS` rows at a time: a reload of 1M rows never holds them all as
        float32 besides the mirror (1.5 GB more at its peak)."""
        ...

    def content_token(self, conn: Any) -> str | None:
        """A digest of every entity's (name, type, scope, agent, embedding), computed by the
        database without sending rows out (None: the dialect has none, so nothing saved
        beside the store can be checked against it)."""
        ...

    def neighbours(
        self, conn: Any, root: str, max_depth: int
    ) -> tuple[list[GraphNode], list[GraphEdge]] | None:
        """The breadth-first walk from ``root`` (None when it does not exist)."""
        ...

    def counts(self, conn: Any) -> dict[str, Any]:
        """Totals and breakdowns for ``stats``: entities, relations, observations, by_type,
        by_scope."""
        ...

    def snapshot(self, conn: Any) -> tuple[list[Entity], list[Relation]]:
        """Every entity and relation, in name order."""
        ...

    def database_space(self, conn: Any) -> DatabaseSpace | None:
        """Used and free blocks of the database file (None: the dialect has no such figure
        and no early compaction)."""
        ...

    def database_figures(self, conn: Any) -> dict[str, Any]:
        """The dialect's own size figures for ``GET /api/v1/memory/stats`` (``database``)."""
        ...

    async def size_bytes(self, store: Backend) -> int:
        """The size of the database, in bytes."""
        ...

    async def optimize(
        self, store: Backend, *, checkpoint: bool, vacuum: bool, analyze: bool
    ) -> tuple[bool, bool, bool]:
        """Run the maintenance steps the dialect has: (checkpointed, vacuumed, analyzed)."""
        ...


def _conforms() -> None:  # pragma: no cover - checked by mypy, never run
    from caxton.memory import postgres_sql, qdrant_memory, queries

    duckdb_sql: MemorySQL = queries
    pg_sql: MemorySQL = postgres_sql
    qdrant_calls: MemorySQL = qdrant_memory
    del duckdb_sql, pg_sql, qdrant_calls


#: rows per chunk of :meth:`MemorySQL.index_chunks` (about 100 MB of float32 at 384 dimensions)
INDEX_CHUNK_ROWS = 65_536


def load_index(sql: MemorySQL, conn: Any) -> tuple[list[IndexEntry], NDArray[np.float32]]:
    """Every index entry and vector at once (for commands that copy or check a whole store)."""
    entries: list[IndexEntry] = []
    blocks: list[NDArray[np.float32]] = []
    for chunk_entries, chunk in sql.index_chunks(conn):
        entries.extend(chunk_entries)
        blocks.append(chunk)
    if not blocks:
        return [], np.zeros((0, EMBEDDING_DIM), dtype=np.float32)
    return entries, np.concatenate(blocks).astype(np.float32, copy=False)
