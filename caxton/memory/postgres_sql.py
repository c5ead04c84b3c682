"""PostgreSQL SQL of the memory component (issue #15): the pgvector :class:`MemorySQL`.

The tables are DuckDB's (:mod:`caxton.memory.schema`) in PostgreSQL's types: times are
``timestamptz`` (read back as aware UTC datetimes), embeddings ``vector(384)`` under an HNSW
index (``vector_cosine_ops``). Lists are passed as array parameters and expanded with
``unnest`` / ``= ANY``, so a batch is a handful of statements; vectors travel as pgvector text
literals (``'[0.1,...]'``), cast in SQL.

Search runs here, not in a process-local mirror, because other instances write to the same
tables: ``ORDER BY embedding <=> q`` through the HNSW index with ``hnsw.ef_search`` set (for
the transaction; outside one, for the connection's session, once per connection and value),
and ``hnsw.iterative_scan = relaxed_order`` so a filtered search keeps
scanning until it has ``limit`` visible hits (re-sorted afterwards, since relaxed order may
return them slightly out of order). ``exact=True`` orders by the similarity itself, which no
index can serve: a full scan. Search statements are never prepared: a prepared plan may keep
the index choice made under other settings (tools/bench/pgvector_search.py).

:mod:`caxton.memory.sql` describes each member; the docstrings here say what is particular
to PostgreSQL. The reads both dialects share are :mod:`caxton.memory.sql_shared`'s, in
PostgreSQL's :data:`STYLE`.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Final, Unpack

import numpy as np
import psycopg

from caxton.memory import sql_shared
from caxton.memory.index import IndexEntry
from caxton.memory.sql import INDEX_CHUNK_ROWS
from caxton.memory.sql import RelationKey as RelationKey
from caxton.memory.sql_shared import counts as counts
from caxton.memory.sql_shared import snapshot as snapshot
from caxton.memory.sql_shared import vector_literal
from caxton.memory.types import Scope

if TYPE_CHECKING:
    from collections.abc import Collection, Iterator, Sequence

    from numpy.typing import NDArray

    from caxton.memory.maintenance import DatabaseSpace
    from caxton.memory.types import Entity, Relation
    from caxton.store.backend import Backend

    Connection = psycopg.Connection[Any]

#: The store dialect of these statements.
dialect: Final = "postgres"

#: The memory tables (``ANALYZE`` and the size figures cover them).
TABLES = ("memory_entities", "memory_observations", "memory_relations", "memory_embeddings")

#: ``memory_entities``' columns as the search statements select them (table alias ``e``).
_ENTITY_COLUMNS: Final = ", ".join(f"e.{c.strip()}" for c in sql_shared.ENTITY_COLUMNS.split(","))

#: ``pg_advisory_xact_lock`` key that serialises memory writes across instances ("memory").
WRITE_LOCK_KEY = 0x6D656D6F7279


def totals(conn: Connection) -> tuple[int, int]:
    """The numbers of stored entities and relations, as ``memory_totals`` keeps them (memory
    v2): its triggers follow every insert, delete and truncate, so each write reads two
    numbers where a count scanned both tables (5 ms at 100k entities and relations, under
    the write lock). Without its row (deleted by hand) they are counted, as before."""
    row = conn.execute("SELECT entities, relations FROM memory_totals").fetchone()
    if row is None:
        return sql_shared.totals(conn)
    return int(row[0]), int(row[1])


def entity_count(conn: Connection) -> int:
    """The number of stored entities (:func:`totals`)."""
    return totals(conn)[0]


def relation_count(conn: Connection) -> int:
    """The number of stored relations (:func:`totals`)."""
    return totals(conn)[1]


def lock_writes(conn: Connection) -> None:
    """Take the memory write lock until the transaction ends (instances write in turn)."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", [WRITE_LOCK_KEY])


def write_entities(
    conn: Connection,
    entities: Sequence[Entity],
    vectors: NDArray[np.float32],
    *,
    new: Collection[str] = (),
) -> None:
    """Insert or replace entities with their observations and embeddings: their rows are
    deleted (but for the ``new`` names, known not to be stored: three statements fewer when
    all are), then inserted from arrays in one statement (the entity and observation rows by
    data-modifying ``WITH`` parts), the embeddings as pgvector text literals."""
    if not entities:
        return
    STYLE.remove_entity_rows(conn, [e.name for e in entities if e.name not in new])
    conn.execute(
        "WITH entity_rows AS ("
        f"INSERT INTO memory_entities ({sql_shared.ENTITY_COLUMNS}) SELECT * FROM unnest("
        "%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::timestamptz[], "
        "%s::timestamptz[])), "
        "observation_rows AS ("
        "INSERT INTO memory_observations (entity, position, content) "
        "SELECT * FROM unnest(%s::text[], %s::integer[], %s::text[])) "
        "INSERT INTO memory_embeddings (entity, entity_type, scope, agent, embedding) "
        "SELECT e, t, s, a, v::vector FROM unnest(%s::text[], %s::text[], %s::text[], "
        "%s::text[], %s::text[]) AS u(e, t, s, a, v)",
        [
            *sql_shared.entity_columns(entities),
            *sql_shared.observation_columns(entities),
            *sql_shared.embedding_columns(entities),
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


def write_relations(conn: Connection, relations: Sequence[Relation]) -> None:
    """Insert or replace relations (keyed by from, to, relation_type)."""
    if not relations:
        return
    conn.execute(
        f"INSERT INTO memory_relations ({sql_shared.RELATION_COLUMNS}) SELECT * FROM unnest("
        "%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[], %s::timestamptz[]) "
        "ON CONFLICT (from_entity, to_entity, relation_type) DO UPDATE SET "
        "strength = EXCLUDED.strength, confidence = EXCLUDED.confidence, "
        "created_at = EXCLUDED.created_at",
        sql_shared.relation_columns(relations),
    )


#: The ``hnsw.ef_search`` each pooled connection's session has, by (connection id, server
#: process id): a search outside a transaction sets it only when it differs.
_session_ef_search: dict[tuple[int, int], int] = {}
_session_lock = threading.Lock()
#: Forget them all past this many (connections closed since leave their entries behind).
_SESSION_MEMO_SIZE = 1024


def _set_ef_search(conn: Connection, ef_search: int) -> None:
    """Give the search that follows ``ef_search`` candidates and the iterative scan: for the
    transaction inside one; else for the session, remembered so that the next search on
    this connection with the same value sends nothing."""
    settings = (
        "SELECT set_config('hnsw.ef_search', %s, {local}), "
        "set_config('hnsw.iterative_scan', 'relaxed_order', {local})"
    )
    if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
        conn.execute(settings.format(local="true"), [str(ef_search)])
        return
    key = (id(conn), conn.info.backend_pid)
    with _session_lock:
        if _session_ef_search.get(key) == ef_search:
            return
    conn.execute(settings.format(local="false"), [str(ef_search)])  # committed at once
    with _session_lock:
        if len(_session_ef_search) >= _SESSION_MEMO_SIZE:
            _session_ef_search.clear()
        _session_ef_search[key] = ef_search


def _search_rows(conn: Connection, search: sql_shared.SimilaritySearch) -> list[Any]:
    """The (entity, similarity) rows of :func:`_search_statement`, best first."""
    sql, params = _search_statement(conn, search)
    return conn.execute(sql, params, prepare=False).fetchall()


def _search_statement(
    conn: Connection, search: sql_shared.SimilaritySearch
) -> tuple[str, dict[str, object]]:
    """The search statement, ``(entity, similarity)`` rows best first, and its parameters:
    through the HNSW index (``ef_search`` candidates, at least ``limit``; iterative scan
    fills a filtered search), or a full scan with ``exact``.

    ``min_similarity`` is applied to the ``limit`` best hits, which gives the same answer as
    applying it first, without letting the iterative scan walk the whole graph for hits that
    cannot pass.
    """
    if search.exact:
        sql = (
            "SELECT entity, similarity FROM (SELECT entity, "
            "1 - (embedding <=> %(query)s::vector) AS similarity FROM memory_embeddings "
            f"WHERE {search.visible}) AS s WHERE similarity >= %(min_similarity)s "
            "ORDER BY similarity DESC, entity LIMIT %(limit)s"
        )
    else:
        _set_ef_search(conn, max(search.ef_search, search.limit))
        sql = (
            "WITH hits AS MATERIALIZED (SELECT entity, "
            "embedding <=> %(query)s::vector AS distance FROM memory_embeddings "
            f"WHERE {search.visible} ORDER BY distance LIMIT %(limit)s) "
            "SELECT entity, 1 - distance AS similarity FROM hits "
            "WHERE 1 - distance >= %(min_similarity)s ORDER BY distance, entity"
        )
    params = {
        **search.params,
        "query": vector_literal(search.query),
        "min_similarity": search.min_similarity,
        "limit": search.limit,
    }
    return sql, params


def search_entities(
    conn: Connection, query: NDArray[np.float32], **arguments: Unpack[sql_shared.SearchArguments]
) -> tuple[list[tuple[str, float]], dict[str, Entity]]:
    """:func:`search` and its hits' entity and observation rows in one statement (one round
    trip, one snapshot): the search's rows as a CTE, joined to both tables."""
    search_sql, params = _search_statement(conn, STYLE.similarity_search(query, **arguments))
    rows = conn.execute(
        f"WITH ranked AS MATERIALIZED ({search_sql}) "
        f"SELECT 0 AS part, r.similarity, {_ENTITY_COLUMNS}, NULL::integer, NULL::text "
        "FROM ranked r JOIN memory_entities e ON e.name = r.entity UNION ALL "
        "SELECT 1, NULL, o.entity, NULL, NULL, NULL, NULL, NULL, NULL, o.position, o.content "
        "FROM ranked r JOIN memory_observations o ON o.entity = r.entity",
        params,
        prepare=False,
    ).fetchall()
    hits = [row for row in rows if row[0] == 0]
    # the search's own order: best first, ties by name
    hits.sort(key=lambda row: (-row[1], row[2]))
    found = sql_shared.entities_from_rows(
        [row[2:9] for row in hits], [(row[2], row[9], row[10]) for row in rows if row[0] == 1]
    )
    return [(str(row[2]), float(row[1])) for row in hits], found


def search_entities_many(
    conn: Connection,
    queries: Sequence[NDArray[np.float32]],
    agents: Sequence[str | None],
    **arguments: Unpack[sql_shared.SearchArguments],
) -> list[tuple[list[tuple[str, float]], dict[str, Entity]]]:
    """:func:`search_entities` for several queries with the same terms but for the asking
    agent (``agents[n]`` asks ``queries[n]``; ``arguments["agent"]`` is not used), in one
    statement (one round trip, one plan, one snapshot): the vectors and agents as rows, each
    joined ``LATERAL`` to the index search :func:`_search_statement` runs alone, then the hits'
    entity and observation rows once for all. Each query's result is what
    :func:`search_entities` gives for it; ``exact`` searches are not taken (a full scan each:
    no gain in sharing it)."""
    if arguments["exact"]:
        raise ValueError("search_entities_many serves index searches only (exact=False)")
    if len(agents) != len(queries):
        raise ValueError(f"{len(queries)} queries but {len(agents)} agents")
    if not queries:
        return []
    shared: sql_shared.SearchArguments = {**arguments, "agent": None}
    search = STYLE.similarity_search(queries[0], **shared)
    # the single search's visibility, with each row's own asking agent in place of the one
    # parameter (NULL matches no agent-scoped entity in both)
    agent_marker = STYLE.named("agent")
    if agent_marker not in search.visible:
        raise AssertionError(f"the search's conditions no longer name {agent_marker}")
    visible = search.visible.replace(agent_marker, "q.agent")
    params = {name: value for name, value in search.params.items() if name != "agent"}
    _set_ef_search(conn, max(search.ef_search, search.limit))
    rows = conn.execute(
        "WITH q AS MATERIALIZED (SELECT t.i, t.v::vector AS v, t.agent "
        "FROM unnest(%(queries)s::text[], %(agents)s::text[]) WITH ORDINALITY AS t(v, agent, i)), "
        "ranked AS MATERIALIZED (SELECT q.i, h.entity, 1 - h.distance AS similarity "
        "FROM q CROSS JOIN LATERAL (SELECT entity, embedding <=> q.v AS distance "
        f"FROM memory_embeddings WHERE {visible} ORDER BY distance LIMIT %(limit)s) h "
        "WHERE 1 - h.distance >= %(min_similarity)s) "
        f"SELECT 0 AS part, r.i, r.similarity, {_ENTITY_COLUMNS}, NULL::integer, NULL::text "
        "FROM ranked r JOIN memory_entities e ON e.name = r.entity UNION ALL "
        "SELECT 1, NULL, NULL, o.entity, NULL, NULL, NULL, NULL, NULL, NULL, o.position, "
        "o.content FROM (SELECT DISTINCT entity FROM ranked) n "
        "JOIN memory_observations o ON o.entity = n.entity",
        {
            **params,
            "queries": [vector_literal(query) for query in queries],
            "agents": list(agents),
            "min_similarity": search.min_similarity,
            "limit": search.limit,
        },
        prepare=False,
    ).fetchall()
    hits = [row for row in rows if row[0] == 0]
    found = sql_shared.entities_from_rows(
        list({row[3]: row[3:10] for row in hits}.values()),
        [(row[3], row[10], row[11]) for row in rows if row[0] == 1],
    )
    per_query: list[list[tuple[str, float]]] = [[] for _ in queries]
    for row in hits:
        per_query[int(row[1]) - 1].append((str(row[3]), float(row[2])))
    results = []
    for ranked in per_query:
        ranked.sort(key=lambda hit: (-hit[1], hit[0]))  # best first, ties by name
        results.append((ranked, {name: found[name] for name, _ in ranked}))
    return results


#: PostgreSQL's parameters and lists: every list is one array parameter.
STYLE: Final = sql_shared.SQLStyle(
    param="%s",
    named_param="%({})s",
    in_array="{column} = ANY({param})",
    key_rows="unnest(%s::text[], %s::text[], %s::text[]) AS q(f, t, k)",
    types_filter="entity_type = ANY(%(types)s::text[])",
    search_rows=_search_rows,
)

#: The members :mod:`caxton.memory.sql_shared` writes once, in PostgreSQL's style.
fetch_entities: Final = STYLE.fetch_entities
entity_reads: Final = STYLE.entity_reads
recent_entities: Final = STYLE.recent_entities
existing_names: Final = STYLE.existing_names
fetch_relations: Final = STYLE.fetch_relations
neighbours: Final = STYLE.neighbours
search: Final = STYLE.search


def content_token(conn: Any) -> str | None:
    """None: searches on this store do not use an in-process mirror saved beside it."""
    del conn
    return None


def index_chunks(
    conn: Connection, rows: int = INDEX_CHUNK_ROWS
) -> Iterator[tuple[list[IndexEntry], NDArray[np.float32]]]:
    """Every entity's index entry and unit vector, a server-side cursor's page at a time (only a
    process that is the database's one user keeps a mirror; a shared store searches in SQL)."""
    with conn.cursor(name="caxton_index_chunks") as cursor:
        cursor.execute(
            "SELECT entity, entity_type, scope, agent, embedding::real[] FROM memory_embeddings"
        )
        while batch := cursor.fetchmany(rows):
            entries = [
                IndexEntry(
                    name=str(name),
                    entity_type=str(entity_type),
                    scope=Scope(str(scope)),
                    agent=None if agent is None else str(agent),
                )
                for name, entity_type, scope, agent, _ in batch
            ]
            yield entries, np.asarray([row[4] for row in batch], dtype=np.float32)


def database_space(conn: Connection) -> DatabaseSpace | None:
    """None: PostgreSQL's autovacuum reclaims dead rows; there is no file to compact."""
    del conn
    return None


def _database_size(conn: Connection) -> int:
    return sql_shared.count(conn, "SELECT pg_database_size(current_database())")


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
