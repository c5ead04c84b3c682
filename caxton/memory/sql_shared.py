"""The memory SQL that DuckDB and PostgreSQL share, written once (issue #15).

:mod:`caxton.memory.queries` (DuckDB) and :mod:`caxton.memory.postgres_sql` (PostgreSQL) keep
the same tables, so most reads are the same statements. What differs is how a statement
spells a parameter and takes a list of names (DuckDB: ``IN (SELECT unnest(?::VARCHAR[]))``,
or a short ``IN (?, ?)`` list that lets it use the column's index; PostgreSQL:
``= ANY(%s)``), and the statement of a similarity search. :class:`SQLStyle` holds those, and
the members of :class:`caxton.memory.sql.MemorySQL` that take parameters are its methods,
which each dialect module binds to its own names. The members without parameters, the row
conversions and the columns of a bulk write are plain functions here. What differs in more
than spelling (types, bulk writes, upserts, the search statement, sizes and maintenance)
stays in the dialect modules.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

import attrs
import numpy as np
from numpy.typing import NDArray

from caxton.memory.entity_cache import ENTRY_OVERHEAD_BYTES
from caxton.memory.types import Entity, GraphEdge, GraphNode, Relation, Scope

if TYPE_CHECKING:
    from caxton.memory.sql import RelationKey

#: The columns of ``memory_entities``, in table order.
ENTITY_COLUMNS = "name, entity_type, scope, agent, metadata, created_at, updated_at"

#: The columns of ``memory_relations``, in table order.
RELATION_COLUMNS = "from_entity, to_entity, relation_type, strength, confidence, created_at"

#: The tables holding an entity's own rows, with the column naming it.
_ENTITY_TABLES = (
    ("memory_entities", "name"),
    ("memory_observations", "entity"),
    ("memory_embeddings", "entity"),
)


def from_db_time(value: dt.datetime) -> dt.datetime:
    """A stored time as an aware UTC datetime (DuckDB's ``TIMESTAMP`` reads back naive UTC,
    PostgreSQL's ``timestamptz`` aware)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=dt.UTC)
    return value.astimezone(dt.UTC)


def as_read(entity: Entity) -> Entity:
    """``entity`` as a read of it gives it back once written (every dialect): times in UTC,
    the metadata as its JSON reads."""
    return attrs.evolve(
        entity,
        observations=tuple(entity.observations),
        metadata=json.loads(json.dumps(entity.metadata, ensure_ascii=False)),
        created_at=from_db_time(entity.created_at),
        updated_at=from_db_time(entity.updated_at),
    )


def _as_stored(value: dt.datetime) -> dt.datetime:
    return value


def count(conn: Any, sql: str, params: Sequence[object] = ()) -> int:
    """The integer in the first column of the first row of ``sql`` (0 without a row)."""
    row = conn.execute(sql, list(params)).fetchone()
    return int(row[0]) if row else 0


@functools.lru_cache(maxsize=4)  # one dimension per model; a few at most (migrations)
def _vector_format(dim: int) -> str:
    return "[" + ",".join(("%.9g",) * dim) + "]"


def vector_literal(vector: NDArray[np.float32]) -> str:
    """A vector's text form ``[x1,x2,...]``, as pgvector's ``vector`` and DuckDB's ``FLOAT[n]``
    read it. DuckDB parses a batch of these faster than it takes the same vectors as lists of
    Python floats.

    Nine significant digits identify every float32, so each value reads back bit for bit
    (both parsers round correctly); the whole vector is one ``%`` format, which costs a third
    of formatting each float's ``repr`` (80 against 230 µs for 384 numbers, once per search and
    per stored entity, holding the GIL).
    """
    values = np.asarray(vector, dtype=np.float32).ravel().tolist()
    return _vector_format(len(values)) % tuple(values)


def entity_count(conn: Any) -> int:
    """The number of stored entities."""
    return count(conn, "SELECT count(*) FROM memory_entities")


def relation_count(conn: Any) -> int:
    """The number of stored relations."""
    return count(conn, "SELECT count(*) FROM memory_relations")


def totals(conn: Any) -> tuple[int, int]:
    """The numbers of stored entities and relations, in one statement (one round trip to a
    database server; DuckDB's :func:`caxton.memory.queries.totals` counts them apart)."""
    row = conn.execute(
        "SELECT (SELECT count(*) FROM memory_entities), (SELECT count(*) FROM memory_relations)"
    ).fetchone()
    return int(row[0]), int(row[1])


def entity_from_row(row: Sequence[Any], observations: dict[str, list[str]]) -> Entity:
    """The entity of a ``memory_entities`` row (:data:`ENTITY_COLUMNS`), with its
    observations from ``observations`` (keyed by entity name)."""
    name, entity_type, scope, agent, metadata, created_at, updated_at = row
    return Entity(
        name=str(name),
        entity_type=str(entity_type),
        observations=tuple(observations.get(str(name), ())),
        scope=Scope(scope),
        agent=None if agent is None else str(agent),
        metadata=json.loads(metadata),
        created_at=from_db_time(created_at),
        updated_at=from_db_time(updated_at),
    )


def entities_from_rows(
    entity_rows: Sequence[Sequence[Any]], observation_rows: Sequence[Sequence[Any]]
) -> dict[str, Entity]:
    """Entities keyed by name from their ``memory_entities`` rows (:data:`ENTITY_COLUMNS`)
    and ``(entity, position, content)`` observation rows (any order)."""
    observations: dict[str, list[str]] = {str(row[0]): [] for row in entity_rows}
    for entity, _, content in sorted(observation_rows, key=lambda r: (r[0], r[1])):
        if (held := observations.get(str(entity))) is not None:
            held.append(str(content))
    return {str(row[0]): entity_from_row(row, observations) for row in entity_rows}


class SearchArguments(TypedDict):
    """A similarity search's terms after its query (the keywords of ``MemorySQL.search``)."""

    limit: int
    min_similarity: float
    scope: Scope | None
    agent: str | None
    entity_types: Sequence[str] | None
    exact: bool
    ef_search: int


@attrs.frozen
class EntityReads:
    """A read of entities by name: as parts, each ``part(conn)`` one statement (so they may
    run side by side, :meth:`caxton.store.Store.read_statements`) with how their results make
    the entities, and as one statement, ``together(conn)``."""

    parts: tuple[Callable[[Any], Any], ...]
    combine: Callable[[Sequence[Any]], dict[str, Entity]]
    together: Callable[[Any], dict[str, Entity]]


def relation_from_row(row: Sequence[Any]) -> Relation:
    """The relation of a ``memory_relations`` row (:data:`RELATION_COLUMNS`)."""
    return Relation(
        source=str(row[0]),
        target=str(row[1]),
        relation_type=str(row[2]),
        strength=float(row[3]),
        confidence=float(row[4]),
        created_at=from_db_time(row[5]),
    )


def entity_columns(
    entities: Sequence[Entity],
    *,
    time: Callable[[dt.datetime], dt.datetime] = _as_stored,
) -> list[list[Any]]:
    """The ``memory_entities`` rows of ``entities`` as columns (:data:`ENTITY_COLUMNS`), for
    a bulk insert; ``time`` turns a time into what the dialect's column takes."""
    return [
        [e.name for e in entities],
        [e.entity_type for e in entities],
        [str(e.scope) for e in entities],
        [e.agent for e in entities],
        [json.dumps(e.metadata, ensure_ascii=False) for e in entities],
        [time(e.created_at) for e in entities],
        [time(e.updated_at) for e in entities],
    ]


def observation_columns(entities: Sequence[Entity]) -> list[list[Any]]:
    """The ``memory_observations`` rows of ``entities`` as columns (entity, position,
    content), for a bulk insert."""
    return [
        [e.name for e in entities for _ in e.observations],
        [i for e in entities for i in range(len(e.observations))],
        [o for e in entities for o in e.observations],
    ]


def embedding_columns(entities: Sequence[Entity]) -> list[list[Any]]:
    """The ``memory_embeddings`` rows of ``entities`` as columns but the vector (entity,
    entity_type, scope, agent), for a bulk insert."""
    return [
        [e.name for e in entities],
        [e.entity_type for e in entities],
        [str(e.scope) for e in entities],
        [e.agent for e in entities],
    ]


def relation_columns(
    relations: Sequence[Relation],
    *,
    time: Callable[[dt.datetime], dt.datetime] = _as_stored,
) -> list[list[Any]]:
    """The ``memory_relations`` rows of ``relations`` as columns (:data:`RELATION_COLUMNS`),
    for a bulk write; the first three are the keys."""
    return [
        [r.source for r in relations],
        [r.target for r in relations],
        [r.relation_type for r in relations],
        [r.strength for r in relations],
        [r.confidence for r in relations],
        [time(r.created_at) for r in relations],
    ]


def counts(conn: Any) -> dict[str, Any]:
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
        "observations": count(conn, "SELECT count(*) FROM memory_observations"),
        "by_type": by_type,
        "by_scope": by_scope,
    }


def snapshot(conn: Any) -> tuple[list[Entity], list[Relation]]:
    """Every entity and relation, in name order (one consistent read for exports)."""
    rows = conn.execute(f"SELECT {ENTITY_COLUMNS} FROM memory_entities ORDER BY name").fetchall()
    observations: dict[str, list[str]] = {}
    for entity, content in conn.execute(
        "SELECT entity, content FROM memory_observations ORDER BY entity, position"
    ).fetchall():
        observations.setdefault(str(entity), []).append(str(content))
    entities = [entity_from_row(row, observations) for row in rows]
    relations = [
        relation_from_row(r)
        for r in conn.execute(
            f"SELECT {RELATION_COLUMNS} FROM memory_relations "
            "ORDER BY from_entity, to_entity, relation_type"
        ).fetchall()
    ]
    return entities, relations


@attrs.frozen(kw_only=True, eq=False)
class SimilaritySearch:
    """One similarity search, as a dialect's statement takes it.

    Attributes:
        query: the query's unit vector.
        limit: the most hits to return.
        min_similarity: the least cosine similarity of a hit.
        exact: a full scan is asked for, not the vector index.
        ef_search: the vector index's candidates (at least ``limit`` are taken).
        visible: the conditions, joined by ``AND``, that keep the embeddings the search may
            return, in the dialect's named markers.
        params: the parameters of ``visible``, by name.
    """

    query: NDArray[np.float32]
    limit: int
    min_similarity: float
    exact: bool
    ef_search: int
    visible: str
    params: dict[str, object]


@attrs.frozen(kw_only=True)
class SQLStyle:
    """How one dialect writes parameters, lists and a similarity search, and the memory
    members that take parameters, written once over them.

    Attributes:
        param: the positional parameter marker (``?``, ``%s``).
        named_param: a named parameter marker, ``{}`` standing for the name (``${}``,
            ``%({})s``).
        in_array: a column matched against one array parameter, ``{column}`` and ``{param}``
            standing for the two.
        key_rows: three array parameters (from, to, relation type) as the relation
            ``q(f, t, k)``.
        types_filter: ``entity_type`` matched against the named array parameter ``types``.
        search_rows: the dialect's similarity search: (name, similarity) rows, best first
            (ties by name).
        short_list: up to this many names are passed one parameter each (``IN (?, ?)``),
            which lets DuckDB use the column's index (~1 ms instead of ~5 ms at 100k rows);
            more, or with 0 any number, go as one array parameter.
    """

    param: str
    named_param: str
    in_array: str
    key_rows: str
    types_filter: str
    search_rows: Callable[[Any, SimilaritySearch], list[Any]]
    short_list: int = 0

    def named(self, name: str) -> str:
        """The marker of the named parameter ``name``."""
        return self.named_param.format(name)

    def any_of(self, column: str, param: str | None = None) -> str:
        """``column`` matched against the array parameter ``param`` (the next positional one
        by default)."""
        return self.in_array.format(column=column, param=param or self.param)

    def name_filter(self, column: str, names: Sequence[str]) -> tuple[str, list[Any]]:
        """``column`` matched against ``names`` (not empty), and the parameters."""
        if len(names) <= self.short_list:
            return f"{column} IN ({', '.join([self.param] * len(names))})", list(names)
        return self.any_of(column), [list(names)]

    def remove_entity_rows(self, conn: Any, names: Sequence[str]) -> None:
        """Delete the entity, observation and embedding rows of ``names`` (relations stay),
        so that a write can insert them afresh."""
        if not names:
            return
        for table, column in _ENTITY_TABLES:
            conn.execute(f"DELETE FROM {table} WHERE {self.any_of(column)}", [list(names)])

    def fetch_entities(self, conn: Any, names: Sequence[str]) -> dict[str, Entity]:
        """The stored entities among ``names``, keyed by name."""
        if not names:
            return {}
        # One statement for both tables (a statement costs ~1.5 ms in DuckDB whatever it
        # reads): the entity rows, then the observation rows, told apart by ``part``.
        entity_where, entity_params = self.name_filter("name", names)
        observation_where, observation_params = self.name_filter("entity", names)
        rows = conn.execute(
            f"SELECT 0 AS part, {ENTITY_COLUMNS}, NULL AS position, NULL AS content "
            f"FROM memory_entities WHERE {entity_where} UNION ALL "
            "SELECT 1, entity, NULL, NULL, NULL, NULL, NULL, NULL, position, content "
            f"FROM memory_observations WHERE {observation_where}",
            [*entity_params, *observation_params],
        ).fetchall()
        return entities_from_rows(
            [row[1:8] for row in rows if row[0] == 0],
            [(row[1], row[8], row[9]) for row in rows if row[0] == 1],
        )

    def recent_entities(self, conn: Any, max_bytes: int) -> list[Entity]:
        """The most recently updated entities (ties by name) whose sizes add up to at most
        ``max_bytes``, each sized as the entity cache counts it but for its metadata, counted
        by its JSON text: the sizes are added up in SQL, so no more than that is read. Two
        statements, one snapshot only inside the caller's transaction."""
        limit = max_bytes // ENTRY_OVERHEAD_BYTES  # no entity takes less
        if limit < 1:
            return []
        p = self.param
        chosen = conn.execute(
            "WITH candidates AS ("
            f"SELECT name, updated_at, {ENTRY_OVERHEAD_BYTES} + length(name) "
            "+ length(entity_type) + length(metadata) AS size FROM memory_entities "
            f"ORDER BY updated_at DESC, name LIMIT {p}), "
            "sized AS (SELECT c.name, c.updated_at, "
            "c.size + coalesce(sum(length(o.content)), 0) AS size FROM candidates c "
            "LEFT JOIN memory_observations o ON o.entity = c.name "
            "GROUP BY c.name, c.updated_at, c.size) "
            "SELECT name FROM (SELECT name, updated_at, sum(size) OVER (ORDER BY "
            "updated_at DESC, name ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS total "
            f"FROM sized) AS r WHERE total <= {p} ORDER BY updated_at DESC, name",
            [limit, max_bytes],
        ).fetchall()
        names = [str(row[0]) for row in chosen]
        found = self.fetch_entities(conn, names)
        return [found[name] for name in names if name in found]

    def entity_reads(self, names: Sequence[str]) -> EntityReads:
        """:meth:`fetch_entities` as two statements that may run side by side (entity rows,
        observation rows)."""
        return EntityReads(
            parts=(
                functools.partial(
                    self._rows_named,
                    columns=ENTITY_COLUMNS,
                    table="memory_entities",
                    column="name",
                    names=names,
                ),
                functools.partial(
                    self._rows_named,
                    columns="entity, position, content",
                    table="memory_observations",
                    column="entity",
                    names=names,
                ),
            ),
            combine=lambda results: entities_from_rows(results[0], results[1]),
            together=functools.partial(self.fetch_entities, names=names),
        )

    def _rows_named(
        self, conn: Any, *, columns: str, table: str, column: str, names: Sequence[str]
    ) -> list[Any]:
        """``columns`` of the rows of ``table`` whose ``column`` is one of ``names``."""
        if not names:
            return []
        where, params = self.name_filter(column, names)
        rows: list[Any] = conn.execute(
            f"SELECT {columns} FROM {table} WHERE {where}", params
        ).fetchall()
        return rows

    def existing_names(self, conn: Any, names: Sequence[str]) -> set[str]:
        """The subset of ``names`` that are stored entities."""
        if not names:
            return set()
        rows = conn.execute(
            f"SELECT name FROM memory_entities WHERE {self.any_of('name')}", [list(set(names))]
        ).fetchall()
        return {str(row[0]) for row in rows}

    def fetch_relations(
        self, conn: Any, keys: Sequence[RelationKey]
    ) -> dict[RelationKey, Relation]:
        """The stored relations among ``keys`` (from, to, relation_type)."""
        if not keys:
            return {}
        rows = conn.execute(
            "SELECT r.from_entity, r.to_entity, r.relation_type, r.strength, r.confidence, "
            f"r.created_at FROM memory_relations r JOIN {self.key_rows} "
            "ON r.from_entity = q.f AND r.to_entity = q.t AND r.relation_type = q.k",
            [[k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys]],
        ).fetchall()
        return {(str(r[0]), str(r[1]), str(r[2])): relation_from_row(r) for r in rows}

    def neighbours(
        self, conn: Any, root: str, max_depth: int
    ) -> tuple[list[GraphNode], list[GraphEdge]] | None:
        """Breadth-first walk from ``root`` over relations in both directions (one query per
        depth level).

        Returns:
            The nodes (root at depth 0, each node at its shortest distance) and every
            relation between two returned nodes, or None when ``root`` does not exist.
        """
        if not self.existing_names(conn, [root]):
            return None
        depths = {root: 0}
        frontier = [root]
        frontier_param = self.named("f")
        for depth in range(1, max_depth + 1):
            if not frontier:
                break
            rows = conn.execute(
                "SELECT from_entity, to_entity FROM memory_relations "
                f"WHERE {self.any_of('from_entity', frontier_param)} "
                f"OR {self.any_of('to_entity', frontier_param)}",
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
        entities = self.fetch_entities(conn, names)
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
        names_param = self.named("n")
        edge_rows = conn.execute(
            "SELECT from_entity, to_entity, relation_type, strength FROM memory_relations "
            f"WHERE {self.any_of('from_entity', names_param)} "
            f"AND {self.any_of('to_entity', names_param)} "
            "ORDER BY from_entity, to_entity, relation_type",
            {"n": names},
        ).fetchall()
        edges = [
            GraphEdge(source=str(f), target=str(t), relation_type=str(k), strength=float(s))
            for f, t, k, s in edge_rows
        ]
        return nodes, edges

    def search(
        self, conn: Any, query: NDArray[np.float32], **arguments: Unpack[SearchArguments]
    ) -> list[tuple[str, float]]:
        """(name, cosine similarity) of the best visible matches, best first (ties by name).

        An ``agent``-scoped entity is visible only when ``agent`` names its owner (the rule
        of :class:`caxton.memory.index.IndexEntry` too); ``scope`` and ``entity_types``
        narrow further. The statement is the dialect's :attr:`search_rows`.
        """
        rows = self.search_rows(conn, self.similarity_search(query, **arguments))
        return [(str(name), float(similarity)) for name, similarity in rows]

    def search_entities(
        self, conn: Any, query: NDArray[np.float32], **arguments: Unpack[SearchArguments]
    ) -> tuple[list[tuple[str, float]], dict[str, Entity]]:
        """:meth:`search`, then :meth:`fetch_entities` of its hits."""
        ranked = self.search(conn, query, **arguments)
        return ranked, self.fetch_entities(conn, [name for name, _ in ranked])

    def similarity_search(
        self,
        query: NDArray[np.float32],
        *,
        limit: int,
        min_similarity: float,
        scope: Scope | None,
        agent: str | None,
        entity_types: Sequence[str] | None,
        exact: bool,
        ef_search: int,
    ) -> SimilaritySearch:
        """The :class:`SimilaritySearch` of :meth:`search`'s arguments, in this style."""
        visible = [f"(scope <> 'agent' OR agent = {self.named('agent')})"]
        params: dict[str, object] = {"agent": agent}
        if scope is not None:
            visible.append(f"scope = {self.named('scope')}")
            params["scope"] = str(scope)
        if entity_types is not None:
            visible.append(self.types_filter)
            params["types"] = list(entity_types)
        return SimilaritySearch(
            query=query,
            limit=int(limit),
            min_similarity=float(min_similarity),
            exact=exact,
            ef_search=int(ef_search),
            visible=" AND ".join(visible),
            params=params,
        )
