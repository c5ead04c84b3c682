"""Benchmark pgvector search for the coming PostgreSQL memory backend (issue #15).

Usage::

    .venv/bin/python tools/bench/pgvector_search.py [--sizes 100000] [--queries 500]
    .venv/bin/python tools/bench/pgvector_search.py --quick      # 10k entities

The goal of issue #15: memory search at 100k entities on pgvector, p99 <= 20 ms and recall@10
>= 0.98 against exact, beside the embedded path in the same run. The PostgreSQL backend does
not exist yet; this measures pgvector itself so that the backend can pick its index settings
(HNSW ``m``, ``ef_construction``, ``hnsw.ef_search``; pgvector 0.8's ``hnsw.iterative_scan``
for filtered search) with numbers.

What it does:

* starts a PostgreSQL with pgvector through ``tools/postgres.py`` in a temporary directory
  (stopped at the end, also on Ctrl-C) and opens :class:`caxton.store.postgres.PostgresStore`
  on it (one connection, as one search at a time);
* vectors: real embeddings of memory_search.py's 10k generated sentences (cached in
  ``~/.cache/caxton-bench``), and beyond that memory_search.py's data set: mixtures of 2-3
  random real embeddings plus noise, normalised, with no near-duplicate clusters; the bench
  prints how far apart the exact 10th and 11th hits are;
* loads them with binary COPY into ``bench_items (id, scope, embedding vector(384))``; ``scope``
  takes 10 values, so one scope keeps 10%; builds an HNSW index (cosine) and times the build;
* queries: 500 real embedded sentences (``someone who <verb> <object>``), embedded once (the
  single-query embed time is printed apart: the search figures do not include it);
* each search is one store call as the backend will make it: a read-only transaction that sets
  ``hnsw.ef_search`` (and ``hnsw.iterative_scan``) with ``set_config(..., true)`` and runs the
  ``ORDER BY embedding <=> q LIMIT 10`` query (planned each time: not prepared), from trio
  through the store's worker thread. The "store" columns time the whole call, "SQL" the two
  statements inside it; "plan" is what EXPLAIN shows for the setting (hnsw or a seq scan);
* recall@1 and recall@10 against exact top-10s computed with numpy (not the database), for
  each ``hnsw.ef_search``, unfiltered and with the 10% scope filter, without and with
  ``hnsw.iterative_scan = relaxed_order`` (results re-sorted in a materialized CTE, as
  pgvector's README does), plus PostgreSQL's exact scan (index scans off) as a baseline;
* beside it, the embedded path (DuckDB + the in-process accelerator, through
  :class:`caxton.memory.MemoryService`, memory_search.py's loading) on the same vectors and
  queries, its filter being an entity type with the same 10% of the rows (``--no-embedded``
  skips it).
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import shutil
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import trio

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _server import REPO, header, percentile
from memory_search import (
    CACHE,
    OBJECTS,
    VERBS,
    K,
    base_vectors,
    bulk_load,
    exact_top,
    mixtures,
    recall,
    sentences,
)

from caxton.memory import MEMORY_MIGRATIONS, Embedder, MemoryService
from caxton.memory.model import EMBEDDING_DIM
from caxton.store import open_store
from caxton.store.migrations import Migration
from caxton.store.postgres import Connection, PostgresStore

if TYPE_CHECKING:
    from types import ModuleType

SCOPES = 10
FILTER_SCOPE = 3
GOAL_P99_MS = 20.0
GOAL_RECALL = 0.98
EXACT_QUERIES = 50

TABLE = Migration(
    feature="bench",
    version=1,
    description="pgvector search bench table",
    statements=(
        f"CREATE TABLE bench_items (id BIGINT PRIMARY KEY, scope TEXT NOT NULL, "
        f"embedding vector({EMBEDDING_DIM}) NOT NULL)",
    ),
)

SEARCH_SQL = (
    "WITH hits AS MATERIALIZED (SELECT id, embedding <=> %(q)s::vector AS distance "
    "FROM bench_items {where} ORDER BY distance LIMIT 10) "
    "SELECT id FROM hits ORDER BY distance"
)


def load_postgres_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "caxton_postgres_tool", REPO / "tools/postgres.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------------- vectors


def vector_literal(vector: np.ndarray) -> str:
    return "[" + ",".join(f"{x:.7g}" for x in vector) + "]"


# --------------------------------------------------------------------------------- PostgreSQL


def binary_copy(conn: Connection, statement: str, columns: list[np.ndarray | None]) -> None:
    """Binary COPY (``statement`` ends ``FROM STDIN WITH (FORMAT BINARY)``) of one row per
    element of the columns, each a numpy array: int64 (bigint), fixed-width bytes ``S<n>``
    (text; every value exactly n bytes), float32 ``(rows, dim)`` (pgvector's binary form:
    dimensions and a reserved int16, then big-endian float4s), or None (NULL in every row)."""
    rows = next(len(c) for c in columns if c is not None)
    fields: list[tuple[str, str] | tuple[str, str, tuple[int]]] = [("fields", ">i2")]
    values: dict[str, object] = {"fields": len(columns)}
    for i, column in enumerate(columns):
        fields.append((f"len{i}", ">i4"))
        if column is None:
            values[f"len{i}"] = -1
        elif column.dtype.kind == "i":
            fields.append((f"v{i}", ">i8"))
            values[f"len{i}"], values[f"v{i}"] = 8, column
        elif column.dtype.kind == "S":
            width = column.dtype.itemsize
            assert int(np.char.str_len(column).min()) == width, "text values of unequal width"
            fields.append((f"v{i}", f"S{width}"))
            values[f"len{i}"], values[f"v{i}"] = width, column
        else:
            dim = column.shape[1]
            fields += [(f"dim{i}", ">i2"), (f"unused{i}", ">i2"), (f"v{i}", ">f4", (dim,))]
            values[f"len{i}"], values[f"dim{i}"], values[f"v{i}"] = 4 + 4 * dim, dim, column
    block = np.zeros(rows, dtype=np.dtype(fields))
    for name, value in values.items():
        block[name] = value
    with conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.write(b"PGCOPY\n\xff\r\n\x00" + struct.pack(">ii", 0, 0))
        copy.write(block.tobytes())
        copy.write(struct.pack(">h", -1))


def copy_rows(conn: Connection, vectors: np.ndarray, first: int) -> None:
    """Binary COPY of ``vectors`` as bench_items rows ``first``, ``first + 1``, ..."""
    ids = np.arange(first, first + len(vectors), dtype=np.int64)
    scopes = np.char.add(b"s", (ids % SCOPES).astype("S1"))
    binary_copy(
        conn,
        "COPY bench_items (id, scope, embedding) FROM STDIN WITH (FORMAT BINARY)",
        [ids, scopes, vectors],
    )


async def pg_load(store: PostgresStore, vectors: np.ndarray) -> None:
    started = time.perf_counter()
    await store.execute_write_fn(lambda c: c.execute("TRUNCATE bench_items"))
    chunk = 10_000
    for start in range(0, len(vectors), chunk):
        block = vectors[start : start + chunk]
        await store.execute_write_fn(functools.partial(copy_rows, vectors=block, first=start))
    print(f"  COPY {len(vectors)} rows: {time.perf_counter() - started:.1f}s")


async def pg_build(store: PostgresStore, m: int, ef_construction: int) -> float:
    def build(conn: Connection) -> float:
        conn.execute("DROP INDEX IF EXISTS bench_items_hnsw")
        conn.execute("SET LOCAL maintenance_work_mem = '2GB'")
        started = time.perf_counter()
        conn.execute(
            f"CREATE INDEX bench_items_hnsw ON bench_items USING hnsw "
            f"(embedding vector_cosine_ops) "
            f"WITH (m = {int(m)}, ef_construction = {int(ef_construction)})"
        )
        seconds = time.perf_counter() - started
        conn.execute("ANALYZE bench_items")
        return seconds

    seconds = await store.execute_write_fn(build)
    size = await store.execute_fn(
        lambda c: c.execute(
            "SELECT pg_size_pretty(pg_relation_size('bench_items_hnsw'))"
        ).fetchone()
    )
    print(
        f"  HNSW index m={m} ef_construction={ef_construction}: built in {seconds:.1f}s "
        f"({size[0] if size else '?'}; maintenance_work_mem 2GB, parallel workers as default)"
    )
    return seconds


async def pg_search(
    store: PostgresStore,
    literals: list[str],
    *,
    ef_search: int,
    filtered: bool,
    iterative: bool,
    exact_scan: bool = False,
) -> tuple[list[float], list[float], list[list[int]], str]:
    """Run each query as one store call; returns store-call ms, SQL ms, ids, and the plan."""
    where = f"WHERE scope = 's{FILTER_SCOPE}'" if filtered else ""
    sql = SEARCH_SQL.format(where=where)
    settings = (
        "SELECT set_config('hnsw.ef_search', %s, true), "
        "set_config('hnsw.iterative_scan', %s, true), set_config('enable_indexscan', %s, true)"
    )
    values = [
        str(ef_search),
        "relaxed_order" if iterative else "off",
        "off" if exact_scan else "on",
    ]

    def search(conn: Connection, literal: str) -> tuple[float, list[int]]:
        started = time.perf_counter()
        conn.execute(settings, values)
        # Planned afresh each time (prepare=False): psycopg prepares a statement it has run
        # five times, and a prepared plan may keep what was chosen under other settings (this
        # bench's exact scan kept using the index), so "plan" would not be what ran.
        rows = conn.execute(sql, {"q": literal}, prepare=False).fetchall()
        return (time.perf_counter() - started) * 1000, [int(r[0]) for r in rows]

    def explain(conn: Connection) -> str:
        conn.execute(settings, values)
        lines = conn.execute("EXPLAIN " + sql, {"q": literals[0]}).fetchall()
        text = " ".join(str(line[0]) for line in lines)
        if "bench_items_hnsw" in text:
            return "hnsw"
        return "seq scan" if "Seq Scan" in text else "other"

    plan = await store.execute_fn(explain)
    for literal in literals[:20]:  # warm the connection and the index pages
        await store.execute_fn(functools.partial(search, literal=literal))
    calls, inside, found = [], [], []
    for literal in literals:
        started = time.perf_counter()
        sql_ms, ids = await store.execute_fn(functools.partial(search, literal=literal))
        calls.append((time.perf_counter() - started) * 1000)
        inside.append(sql_ms)
        found.append(ids)
    return calls, inside, found, plan


# --------------------------------------------------------------------------------- embedded


async def embedded_search(
    embedder: Embedder, texts: list[str], queries: list[str], vectors: np.ndarray, tmp: Path
) -> dict[str, tuple[list[float], list[list[int]]]]:
    """memory_search.py's path: bulk-load into DuckDB, rebuild the accelerator (and its HNSW
    graph above the threshold), then time ``MemoryService.search`` (query embeddings cached)."""
    async with (
        open_store(tmp / "bench.duckdb", migrations=MEMORY_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        memory = await nursery.start(MemoryService(store, embedder, max_entities=None).run)
        await bulk_load(memory, texts, vectors, [f"kind{k}" for k in range(SCOPES)])
        results = await service_searches(memory, embedder, queries)
        figures = memory.statistics()
        print(
            f"  embedded: {figures.hnsw_searches} searches through its HNSW graph, "
            f"{figures.hnsw_fallbacks} fell back to the numpy scan"
        )
        nursery.cancel_scope.cancel()
    return results


async def service_searches(
    memory: MemoryService, embedder: Embedder, queries: list[str]
) -> dict[str, tuple[list[float], list[list[int]]]]:
    """Time ``MemoryService.search`` (top 10) for each query, unfiltered and filtered by the
    entity type ``kind<FILTER_SCOPE>`` (10% of ``bench-<id>`` entities typed ``kind<id % 10>``);
    ms per search and the ids found. The queries are embedded first, so each search gets its
    vector from the embedder's cache (embedding is not in the figures)."""
    await embedder.embed(queries)
    results: dict[str, tuple[list[float], list[list[int]]]] = {}
    for label, types in (("unfiltered", None), ("filtered", [f"kind{FILTER_SCOPE}"])):
        for query in queries[:20]:
            await memory.search(query, limit=K, entity_types=types)
        timings, found = [], []
        for query in queries:
            started = time.perf_counter()
            hits = await memory.search(query, limit=K, entity_types=types)
            timings.append((time.perf_counter() - started) * 1000)
            found.append([int(h.entity.name.removeprefix("bench-")) for h in hits])
        results[label] = (timings, found)
    return results


# --------------------------------------------------------------------------------- main


def row(
    label: str, plan: str, calls: list[float], inside: list[float] | None, r: tuple[float, float]
) -> str:
    sql = (
        f"{percentile(inside, 50):6.2f} {percentile(inside, 99):6.2f}"
        if inside
        else f"{'':6} {'':6}"
    )
    p99 = percentile(calls, 99)
    goal = "meets" if p99 <= GOAL_P99_MS and r[1] >= GOAL_RECALL else ""
    return (
        f"  {label:<44} {plan:<8} {percentile(calls, 50):6.2f} {p99:6.2f}   {sql}   "
        f"{r[0]:6.3f} {r[1]:6.3f}  {goal}"
    )


async def bench_queries(embedder: Embedder, count: int) -> tuple[list[str], list[float]]:
    """``count`` query sentences (not in the data set), and the uncached embedding time of the
    first 20 in ms, reported apart from the search figures."""
    pairs = [f"someone who {v} {o}" for v in VERBS for o in OBJECTS]
    queries = (pairs * (count // len(pairs) + 1))[:count]
    timings = []
    for query in queries[:20]:
        started = time.perf_counter()
        await embedder.embed([query], use_cache=False)
        timings.append((time.perf_counter() - started) * 1000)
    return queries, timings


async def main(args: argparse.Namespace, tool: ModuleType, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        embedder = await nursery.start(Embedder(cache_dir=args.model_cache, cache_size=4096).run)
        texts = sentences(10_000)
        queries, timings = await bench_queries(embedder, args.queries)
        print(
            f"single-query embed (apart from the search figures): p50 "
            f"{statistics.median(timings):.1f} ms, max {max(timings):.1f} ms"
        )
        base = await base_vectors(embedder, texts)
        query_vectors = await embedder.embed(queries)
        literals = [vector_literal(v) for v in query_vectors]

        started = time.perf_counter()
        server = tool.start(tmp / "pg", fsync=False)
        print(f"PostgreSQL started in {time.perf_counter() - started:.1f}s ({tmp / 'pg'})")
        async with trio.open_nursery() as inner:
            store = await inner.start(
                PostgresStore(
                    server.url, migrations=[TABLE], pool_size=1, statement_timeout_s=3600
                ).run
            )
            figures = store.statistics()
            print(f"PostgreSQL {figures.server_version}, pgvector {figures.vector_version}")
            for size in args.sizes:
                await measure_size(
                    args,
                    store,
                    embedder,
                    texts,
                    queries,
                    base,
                    query_vectors,
                    literals,
                    size,
                    tmp,
                )
            inner.cancel_scope.cancel()
        nursery.cancel_scope.cancel()


def run(args: argparse.Namespace) -> None:
    """Run the bench with its PostgreSQL in a temporary directory, stopped at the end (also on
    Ctrl-C or an error)."""
    run_started = time.perf_counter()
    header(
        "pgvector search",
        "search p50/p99 (ms) and recall against numpy's exact top-10: pgvector HNSW through "
        "PostgresStore, beside the embedded path",
    )
    tool = load_postgres_tool()
    tmp = Path(tempfile.mkdtemp(prefix="caxton-bench-pg-"))
    tmp.chmod(0o711)  # as root PostgreSQL runs as an unprivileged user, who must enter it
    try:
        trio.run(main, args, tool, tmp)
    finally:
        tool.stop(tmp / "pg")
        shutil.rmtree(tmp, ignore_errors=True)
        print(f"run took {time.perf_counter() - run_started:.0f}s")


async def measure_size(
    args: argparse.Namespace,
    store: PostgresStore,
    embedder: Embedder,
    texts: list[str],
    queries: list[str],
    base: np.ndarray,
    query_vectors: np.ndarray,
    literals: list[str],
    size: int,
    tmp: Path,
) -> None:
    print(f"N={size}:")
    vectors = mixtures(base, size)
    ids = np.arange(size)
    exact_all, gaps = exact_top(vectors, query_vectors, ids)
    keep = ids % SCOPES == FILTER_SCOPE
    exact_scope, gaps_scope = exact_top(vectors[keep], query_vectors, ids[keep])
    for label, g in (("unfiltered", gaps), ("scope filter", gaps_scope)):
        print(
            f"  exact top-10 separation ({label}): cosine gap between hit 10 and 11 median "
            f"{np.median(g):.4f}, {int((g < 1e-4).sum())}/{len(g)} queries below 1e-4"
        )
    await pg_load(store, vectors)
    table: list[str] = []
    meeting: dict[str, list[str]] = {}
    for m, ef_construction in args.builds:
        await pg_build(store, m, ef_construction)
        for filtered, iterative in ((False, False), (True, False), (True, True)):
            for ef in args.ef_search:
                calls, inside, found, plan = await pg_search(
                    store, literals, ef_search=ef, filtered=filtered, iterative=iterative
                )
                r = recall(found, exact_scope if filtered else exact_all)
                what = "scope 10%" + (", iterative" if iterative else "") if filtered else "all"
                label = f"m={m}/{ef_construction} ef_search={ef} {what}"
                line = row(label, plan, calls, inside, r)
                table.append(line)
                if line.endswith("meets"):
                    meeting.setdefault(f"m={m}/{ef_construction} {what}", []).append(str(ef))
    for filtered in (False, True):
        calls, inside, found, plan = await pg_search(
            store,
            literals[:EXACT_QUERIES],
            ef_search=40,
            filtered=filtered,
            iterative=False,
            exact_scan=True,
        )
        exact = exact_scope if filtered else exact_all
        label = f"pg exact scan {'scope 10%' if filtered else 'all'} ({EXACT_QUERIES} q)"
        table.append(row(label, plan, calls, inside, recall(found, exact[:EXACT_QUERIES])))
    if args.embedded:
        results = await embedded_search(embedder, texts, queries, vectors, tmp)
        for label, (timings, found) in results.items():
            exact = exact_scope if label == "filtered" else exact_all
            what = "scope 10%" if label == "filtered" else "all"
            line = row(
                f"embedded (DuckDB + accelerator) {what}",
                "in-proc",
                timings,
                None,
                recall(found, exact),
            )
            table.append(line)
    else:
        table.append("  embedded path: skipped (--no-embedded)")
    print(
        f"  N={size}, {len(queries)} queries; ms per search (store call = thread hop, BEGIN, "
        f"settings, query, COMMIT; SQL = settings + query)\n"
        f"  {'setting':<44} {'plan':<8} {'store p50':>6} {'p99':>6}   {'SQL p50':>6} {'p99':>6}   "
        f"{'rec@1':>6} {'rec@10':>6}  goal (p99 <= {GOAL_P99_MS:g} ms, recall@10 >= {GOAL_RECALL})"
    )
    for line in table:
        print(line)
    print(f"  N={size} pgvector settings that meet the goal (ef_search values, smallest first):")
    for m, ef_construction in args.builds:
        for what in ("all", "scope 10%", "scope 10%, iterative"):
            efs = meeting.get(f"m={m}/{ef_construction} {what}")
            verdict = f"ef_search {', '.join(efs)}" if efs else "NOT met at any ef_search tried"
            print(f"    m={m}/{ef_construction} {what}: {verdict}")


def parse_builds(text: str) -> list[tuple[int, int]]:
    builds = []
    for part in text.split(","):
        m, ef = part.split(":")
        builds.append((int(m), int(ef)))
    return builds


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="100000", help="comma-separated entity counts")
    parser.add_argument("--quick", action="store_true", help="10k entities only")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument("--ef-search", default="40,100,200,400", help="hnsw.ef_search values")
    parser.add_argument(
        "--builds",
        default="16:64",
        help="HNSW builds to try, m:ef_construction,... (16:64 is pgvector's default)",
    )
    parser.add_argument("--no-embedded", dest="embedded", action="store_false")
    parser.add_argument("--model-cache", type=Path, default=CACHE / "models" / "all-MiniLM-L6-v2")
    parsed = parser.parse_args()
    parsed.sizes = [10_000] if parsed.quick else [int(s) for s in parsed.sizes.split(",")]
    parsed.ef_search = [int(s) for s in parsed.ef_search.split(",")]
    parsed.builds = parse_builds(parsed.builds)
    interrupted = False
    try:
        run(parsed)
    except* KeyboardInterrupt:  # trio's nurseries raise it inside an exception group
        interrupted = True
    if interrupted:
        print("interrupted; PostgreSQL stopped", file=sys.stderr)
        sys.exit(130)
