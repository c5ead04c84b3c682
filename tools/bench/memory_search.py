"""Benchmark the memory component at scale: ingest, embedding, search latency, recall, RSS.

Usage::

    .venv/bin/python tools/bench/memory_search.py [--sizes 100000,1000000] [--queries 500]
    .venv/bin/python tools/bench/memory_search.py --quick        # 10k entities
    .venv/bin/python tools/bench/memory_search.py --sizes 1000000 --keep DIR
    .venv/bin/python tools/bench/memory_search.py --sizes 1000000 --keep DIR --restart-only

``--keep`` leaves each size's store and saved graph in DIR; ``--restart-only`` then measures
only a restart on them (reload, RSS, search latency and recall after the churn), which at 1M
takes minutes instead of the ~40 of loading and building.

Every figure is printed beside its goal from issue #17 (1M: search p99 <= 10 ms without the
embedding, recall@10 >= 0.95, RSS <= 3 GiB after load, graph reload <= 10 s; 100k: p99 <= 5 ms,
recall@10 >= 0.98; ingest with embedding >= 250 entities/s).

The data set. Real embeddings (all-MiniLM-L6-v2) of 10k generated sentences ("<subject> <verb>
<object> <place>"), cached outside the repository (``~/.cache/caxton-bench``); beyond 10k, each
row is a normalised mixture of 2-3 random base embeddings (weights 0.3-1.0) plus Gaussian noise
(sigma 0.01 per dimension). Unlike noisy copies of the base, mixtures leave no clusters of
near-identical rows, so "the exact top-10" is a real answer; the bench prints how well separated
it is (the cosine gap between exact hits 10 and 11). The queries are other real sentences,
"someone who <verb> <object>" (not in the data set), embedded once.

What it measures, through :class:`caxton.memory.MemoryService` on a DuckDB file in a temporary
directory:

* single-query embedding time (the real model, cache off), reported apart: the search figures
  exclude it (each query's vector is already in the embedder's cache);
* ingest through ``create_entities`` in batches of 100, embedding included (first size only);
* the bulk load (rows written through the store, the accelerator rebuilt from DuckDB as at a
  server start) and the HNSW graph's build time, waited for, then its first save;
* the entity cache's fill (the service fills it in the background after the rebuild, as at a
  server start, with the most recently updated entities up to ``memory.entity_cache_size``),
  waited for like the graph;
* search p50/p99 and recall@1/recall@10 against the exact top-10 (numpy over the data set),
  and DuckDB's exact path on a few queries as a baseline;
* churn: 10% of the entities deleted and as many new ones inserted, through the service's write
  path (batched 1000 per transaction, the accelerator following each write); recall at once and
  once the graph has caught up;
* a restart in a fresh process (``--reload-child``): the service opens the DB file and loads
  the saved graph; its reload time, RSS after load (model included, none of the bench's own
  arrays) and its searches' latency and recall once the entity cache is filled; then, in the
  same process, a service with the entity cache off, whose searches read every hit from DuckDB
  (what a search pays for a hit the cache does not hold: beyond its bound, or before a fill).
  The bench process's own RSS is printed too, but it holds the data set and the exact answers
  besides the service.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import functools
import itertools
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
import trio

from caxton.config.model import DuckDBConfig, MemoryConfig
from caxton.memory import MEMORY_MIGRATIONS, Embedder, MemoryService, NewEntity, Scope
from caxton.memory.queries import STYLE, write_entities
from caxton.memory.types import Entity
from caxton.store import open_store

if TYPE_CHECKING:
    from collections.abc import Sequence

    from duckdb import DuckDBPyConnection

CACHE = Path(os.environ.get("CAXTON_BENCH_CACHE", Path.home() / ".cache" / "caxton-bench"))
BASE_TEXTS = 10_000
TYPES = ["fact", "person", "place", "event", "note"]
K = 10
CHURN = 0.10
GOAL_INGEST = 250.0
#: the entity cache's default bound (memory.entity_cache_size), as the server has it
ENTITY_CACHE_MIB = int(MemoryConfig().entity_cache_size) / 2**20
#: the store opened as ``caxton start`` opens it by default (memory.duckdb.*): without the
#: limit DuckDB may cache up to 80% of RAM, which the RSS after a restart would count
SERVER_STORE: dict[str, Any] = {
    "migrations": MEMORY_MIGRATIONS,
    "memory_limit_bytes": int(DuckDBConfig().memory_limit),
    "threads": DuckDBConfig().threads,
}

SUBJECTS = [
    "the cat", "a trader", "my neighbour", "the robot", "a child", "the chef", "a pilot",
    "the teacher", "an engineer", "the farmer", "a poet", "the doctor", "a sailor", "the judge",
    "a student", "the mayor", "a nurse", "the baker", "a climber", "the librarian",
]  # fmt: skip
VERBS = [
    "likes", "fears", "repairs", "paints", "studies", "sells", "cooks", "collects", "writes about",
    "dreams of", "photographs", "teaches", "forgets", "visits", "measures", "builds",
]  # fmt: skip
OBJECTS = [
    "old bicycles", "stock options", "fresh bread", "jet engines", "garden roses",
    "mountain maps", "jazz records", "rainy mornings", "chess puzzles", "ancient coins",
    "solar panels", "river boats", "winter coats", "night trains", "paper kites",
    "clay pots", "desert plants", "city bridges", "wool sweaters", "radio signals",
    "broken clocks", "spicy soups", "glass bottles", "ocean storms", "mechanical toys",
    "quiet libraries", "red apples", "silver spoons", "election results", "snowy peaks",
    "tax forms", "wooden chairs",
]  # fmt: skip
PLACES = ["in Paris", "at home", "on Mondays", "every summer", "near the harbour", "at night"]


@attrs.frozen(kw_only=True)
class Goals:
    """Issue #17's goals for one size (None: no goal at that size)."""

    p99_ms: float | None = None
    recall_at_10: float | None = None
    rss_gib: float | None = None
    reload_s: float | None = None


GOALS = {
    100_000: Goals(p99_ms=5.0, recall_at_10=0.98),
    1_000_000: Goals(p99_ms=10.0, recall_at_10=0.95, rss_gib=3.0, reload_s=10.0),
}


def goals_for(size: int) -> Goals:
    """The goals of the largest goal size not above ``size`` (none below 100k)."""
    fitting = [s for s in GOALS if s <= size]
    return GOALS[max(fitting)] if fitting else Goals()


def verdict(value: float, goal: float | None, *, at_most: bool) -> str:
    if goal is None:
        return "(no goal at this size)"
    sign = "<=" if at_most else ">="
    met = value <= goal if at_most else value >= goal
    return f"goal {sign} {goal:g}: {'met' if met else 'NOT MET'}"


def sentences(count: int) -> list[str]:
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS, PLACES))
    random.Random(42).shuffle(combos)
    return [" ".join(parts) for parts in combos[:count]]


def query_sentences(count: int) -> list[str]:
    """``count`` real queries, "someone who <verb> <object>" (none of them in the data set;
    512 distinct, repeated beyond that)."""
    pairs = [f"someone who {v} {o}" for v in VERBS for o in OBJECTS]
    random.Random(3).shuffle(pairs)
    return (pairs * (count // len(pairs) + 1))[:count]


def rss_mib() -> tuple[float, float]:
    """Current and peak RSS in MiB (VmRSS, VmHWM: unlike ``ru_maxrss``, the peak of this
    program only, not of the process it was forked from)."""
    figures = {"VmRSS:": 0.0, "VmHWM:": 0.0}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            key = line.split(maxsplit=1)[0] if line.strip() else ""
            if key in figures:
                figures[key] = int(line.split()[1]) / 1024
    return figures["VmRSS:"], figures["VmHWM:"]


def load_cached(path: Path) -> np.ndarray | None:
    return np.load(path) if path.exists() else None


def save_cached(path: Path, vectors: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)


async def base_vectors(embedder: Embedder, texts: list[str]) -> np.ndarray:
    path = CACHE / f"minilm-base-{len(texts)}.npy"
    cached = load_cached(path)
    if cached is not None:
        return cached
    print(f"encoding {len(texts)} texts once (cached in {path}) ...", flush=True)
    started = time.perf_counter()
    vectors = await embedder.embed(texts, use_cache=False)
    print(f"  {len(texts) / (time.perf_counter() - started):.0f} texts/s", flush=True)
    save_cached(path, vectors)
    return vectors


# --------------------------------------------------------------------------------- data set


def mixtures(base: np.ndarray, size: int, *, seed: int = 7) -> np.ndarray:
    """``base`` itself, then mixtures of 2-3 random base vectors plus noise, normalised."""
    if size <= len(base):
        return base[:size].astype(np.float32)
    rng = np.random.default_rng(seed)
    extra = size - len(base)
    mixed = np.zeros((extra, base.shape[1]), dtype=np.float32)
    parts = rng.integers(2, 4, size=extra)
    for slot in range(3):
        picks = rng.integers(0, len(base), size=extra)
        weights = rng.uniform(0.3, 1.0, size=extra).astype(np.float32)
        weights[parts <= slot] = 0.0
        mixed += weights[:, None] * base[picks]
    mixed += rng.normal(0.0, 0.01, size=mixed.shape).astype(np.float32)
    vectors = np.concatenate([base, mixed])
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors.astype(np.float32)


def exact_top(
    vectors: np.ndarray, queries: np.ndarray, ids: np.ndarray
) -> tuple[list[list[int]], np.ndarray]:
    """Exact cosine top-10 ids per query (numpy), and each query's gap between hit 10 and 11."""
    tops: list[list[int]] = []
    gaps = []
    for start in range(0, len(queries), 100):
        scores = queries[start : start + 100] @ vectors.T
        part = np.argpartition(-scores, K + 1, axis=1)[:, : K + 1]
        for row, candidates in zip(scores, part, strict=True):
            ordered = candidates[np.argsort(-row[candidates])]
            tops.append([int(ids[i]) for i in ordered[:K]])
            gaps.append(float(row[ordered[K - 1]] - row[ordered[K]]))
    return tops, np.array(gaps)


def recall(found: list[list[int]], exact: list[list[int]]) -> tuple[float, float]:
    """recall@1 (the exact best hit came first) and recall@10, averaged over the queries."""
    at1 = [1.0 if f[:1] == e[:1] else 0.0 for f, e in zip(found, exact, strict=True)]
    at10 = [len(set(f) & set(e)) / K for f, e in zip(found, exact, strict=True)]
    return statistics.fmean(at1), statistics.fmean(at10)


def print_duplicates(vectors: np.ndarray, sample: int = 1000) -> None:
    """How close each of ``sample`` random rows is to its nearest other row: noisy copies
    would show ~0.99 and more, making "the exact top-10" a coin toss among copies."""
    picks = np.random.default_rng(1).choice(len(vectors), min(sample, len(vectors)), replace=False)
    nearest = []
    for start in range(0, len(picks), 100):
        rows = picks[start : start + 100]
        scores = vectors[rows] @ vectors.T
        scores[np.arange(len(rows)), rows] = -1.0
        nearest.append(scores.max(axis=1))
    found = np.concatenate(nearest)
    print(
        f"  nearest-neighbour cosine of {len(found)} random rows: median {np.median(found):.4f}, "
        f"99th percentile {np.percentile(found, 99):.4f}, max {found.max():.4f}"
    )


def print_separation(gaps: np.ndarray, label: str) -> None:
    print(
        f"  exact top-10 separation{label}: cosine gap between hits 10 and 11 median "
        f"{np.median(gaps):.4f}, 10th percentile {np.percentile(gaps, 10):.4f}; "
        f"{int((gaps < 1e-4).sum())}/{len(gaps)} queries below 1e-4"
    )


def bench_entity(i: int, texts: Sequence[str], stamp: dt.datetime, types: Sequence[str]) -> Entity:
    return Entity(
        name=f"bench-{i:06d}",
        entity_type=types[i % len(types)],
        observations=(texts[i % len(texts)],),
        scope=Scope.GLOBAL,
        agent=None,
        metadata={},
        created_at=stamp,
        updated_at=stamp,
    )


def bench_id(name: str) -> int:
    return int(name.removeprefix("bench-"))


# --------------------------------------------------------------------------------- service


async def bulk_load(
    memory: MemoryService, texts: list[str], vectors: np.ndarray, types: Sequence[str] = TYPES
) -> float:
    """Write ``vectors`` as entities straight into the store (entity ``i`` has type
    ``types[i % len(types)]``), rebuild the accelerator and wait for its graph; the load time."""
    started = time.perf_counter()
    stamp = dt.datetime.now(dt.UTC)
    chunk = 5000
    for start in range(0, len(vectors), chunk):
        rows = [
            bench_entity(i, texts, stamp, types)
            for i in range(start, min(start + chunk, len(vectors)))
        ]
        block = vectors[start : start + len(rows)]
        await memory.store.execute_write_fn(
            functools.partial(write_entities, entities=rows, vectors=block)
        )
    loaded = time.perf_counter() - started
    rebuild_started = time.perf_counter()
    await memory.rebuild_index()
    print(
        f"  bulk load {len(vectors)} rows: {loaded:.1f}s; "
        f"accelerator rebuild from DuckDB: {time.perf_counter() - rebuild_started:.2f}s"
    )
    if graph_wanted(memory, len(vectors)):
        await wait_for_graph(memory, "built")
        # The accelerator saves a new graph at once; a save in progress holds the memory
        # writes, so this waits for it (or saves, if it has not begun): the searches below are
        # of a settled graph, not one being written out (~5 s at 1M; usearch holds a search
        # while it writes the graph's file).
        started = time.perf_counter()
        wrote = await memory.save_graph()
        print(
            f"  graph and mirror saved after the build: {time.perf_counter() - started:.1f}s "
            f"waited ({'written by this call' if wrote else 'the service had saved them'})"
        )
    else:
        print(f"  below the HNSW threshold ({memory.hnsw_threshold}): numpy scan only")
    await wait_for_cache(memory)
    return loaded


async def wait_for_cache(memory: MemoryService) -> dict[str, float]:
    """Wait for the entity cache's fill; print and return its figures."""
    started = time.perf_counter()
    await memory.wait_entity_cache()
    figures = memory.statistics()
    filled = {
        "waited_s": time.perf_counter() - started,
        "fill_s": figures.entity_cache_fill_seconds,
        "entries": figures.entity_cache_entries,
        "mib": figures.entity_cache_bytes / 2**20,
    }
    print(
        f"  entity cache filled: {filled['entries']:.0f} entities, {filled['mib']:.0f} MiB "
        f"(bound {ENTITY_CACHE_MIB:.0f} MiB) in {filled['fill_s']:.2f}s, ready after "
        f"{filled['waited_s']:.2f}s more"
    )
    return filled


def graph_wanted(memory: MemoryService, size: int) -> bool:
    threshold = memory.hnsw_threshold
    return threshold is not None and size >= threshold


async def wait_for_graph(memory: MemoryService, verb: str) -> float:
    started = time.perf_counter()
    await memory.wait_graph()
    waited = time.perf_counter() - started
    figures = memory.statistics()
    print(
        f"  HNSW graph {verb}: ready after {waited:.1f}s (build {figures.hnsw_build_seconds:.1f}s, "
        f"builds {figures.hnsw_builds}, loads {figures.hnsw_loads}, rows {figures.hnsw_rows})"
    )
    return waited


def percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    return ordered[max(0, min(len(ordered) - 1, int(np.ceil(fraction * len(ordered))) - 1))]


async def timed_searches(
    memory: MemoryService, queries: list[str], *, exact: bool = False, warm: int = 20
) -> tuple[list[float], list[list[int]]]:
    """ms per ``MemoryService.search`` (top 10) and the ids found; the query vectors come from
    the embedder's cache (embedded first), so the timings exclude the embedding."""
    await memory.embedder.embed(queries)
    for query in queries[:warm]:
        await memory.search(query, limit=K, exact=exact)
    timings, found = [], []
    for query in queries:
        started = time.perf_counter()
        hits = await memory.search(query, limit=K, exact=exact)
        timings.append((time.perf_counter() - started) * 1000)
        found.append([bench_id(h.entity.name) for h in hits])
    return timings, found


def print_search(
    label: str,
    timings: list[float],
    found: list[list[int]],
    exact: list[list[int]],
    goals: Goals | None,
) -> tuple[float, float, float]:
    r1, r10 = recall(found, exact)
    p99 = percentile(timings, 0.99)
    print(
        f"  {label}: p50 {statistics.median(timings):.2f} ms, p99 {p99:.2f} ms, "
        f"max {max(timings):.2f} ms over {len(timings)} queries; recall@1 {r1:.3f}, "
        f"recall@10 {r10:.4f}"
    )
    if goals is not None:
        print(
            f"    p99 {verdict(p99, goals.p99_ms, at_most=True)}; "
            f"recall@10 {verdict(r10, goals.recall_at_10, at_most=False)}"
        )
    return p99, r1, r10


async def ingest(memory: MemoryService) -> None:
    batch = [
        NewEntity(name=f"ingest-{i}", entity_type="fact", observations=[t])
        for i, t in enumerate(sentences(1000))
    ]
    texts = [t for e in batch for t in e.observations]
    started = time.perf_counter()
    for start in range(0, len(texts), 100):
        await memory.embedder.embed(texts[start : start + 100], use_cache=False)
    embedding = len(texts) / (time.perf_counter() - started)
    started = time.perf_counter()
    for start in range(0, len(batch), 100):
        await memory.create_entities(batch[start : start + 100])
    rate = len(batch) / (time.perf_counter() - started)
    print(
        f"ingest through the service (embedding included): {rate:.0f} entities/s; "
        f"{verdict(rate, GOAL_INGEST, at_most=False)} (embedding alone, batches of 100, "
        f"cache off: {embedding:.0f} texts/s)"
    )
    for entity in batch:
        await memory.delete_entity(entity.name)


def churn_write(
    conn: DuckDBPyConnection, *, remove: list[str], entities: list[Entity], vectors: np.ndarray
) -> None:
    STYLE.remove_entity_rows(conn, remove)
    write_entities(conn, entities, vectors)


async def churn(
    memory: MemoryService, texts: list[str], removed: np.ndarray, first_new: int, new: np.ndarray
) -> float:
    """Delete the entities ``removed`` and insert ``new`` as ``bench-<first_new + j>``, 1000 of
    each per write, through the service's commit (the accelerator follows each write as it
    follows ``delete_entity`` and ``create_entities``); the seconds taken."""
    started = time.perf_counter()
    stamp = dt.datetime.now(dt.UTC)
    step = 1000
    for start in range(0, max(len(removed), len(new)), step):
        remove = [f"bench-{int(i):06d}" for i in removed[start : start + step]]
        block = new[start : start + step]
        entities = [
            bench_entity(first_new + start + j, texts, stamp, TYPES) for j in range(len(block))
        ]
        # The service's own write path (as delete_entity / create_entities), batched.
        async with memory._write_lock:
            await memory._commit(
                functools.partial(churn_write, remove=remove, entities=entities, vectors=block),
                upsert=(entities, block),
                remove=remove,
            )
    return time.perf_counter() - started


async def settle_graph(memory: MemoryService) -> float:
    """Wait until no graph build is running (one may start after the churn); the seconds."""
    started = time.perf_counter()
    await trio.sleep(1.0)
    while memory.statistics().hnsw_building:  # noqa: ASYNC110 - the service has no event for it
        await trio.sleep(0.2)
    if memory.statistics().hnsw_rows:
        await memory.wait_graph()
    return time.perf_counter() - started


# --------------------------------------------------------------------------------- restart


async def reload_child(args: argparse.Namespace) -> None:
    """In a fresh process: open the DB file, start the service (its mirror and graph loaded
    from the saved files), search once the entity cache is filled, then again through a
    service without the cache; print one JSON line of figures."""
    started = time.perf_counter()
    queries = query_sentences(args.queries)
    async with trio.open_nursery() as nursery:
        embedder = await nursery.start(Embedder(cache_dir=args.model_cache, cache_size=4096).run)
        model_s = time.perf_counter() - started
        async with open_store(args.reload_child, **SERVER_STORE) as store:
            async with trio.open_nursery() as service_nursery:
                opened = time.perf_counter()
                memory = await service_nursery.start(
                    MemoryService(store, embedder, max_entities=None).run
                )
                mirror_s = time.perf_counter() - opened
                graph_started = time.perf_counter()
                if graph_wanted(memory, memory.statistics().entity_count):
                    await memory.wait_graph()
                graph_s = time.perf_counter() - graph_started
                cache_started = time.perf_counter()
                await memory.wait_entity_cache()
                cache_s = time.perf_counter() - cache_started
                figures = memory.statistics()
                rss, peak = rss_mib()  # the filled entity cache included
                timings, found = await timed_searches(memory, queries)
                service_nursery.cancel_scope.cancel()
            async with trio.open_nursery() as service_nursery:
                uncached = await service_nursery.start(
                    MemoryService(store, embedder, max_entities=None, entity_cache_bytes=0).run
                )
                if graph_wanted(uncached, uncached.statistics().entity_count):
                    await uncached.wait_graph()
                store_timings, store_found = await timed_searches(uncached, queries)
                service_nursery.cancel_scope.cancel()
            print(
                json.dumps(
                    {
                        "model_s": model_s,
                        "mirror_s": mirror_s,
                        "graph_s": graph_s,
                        "rss_mib": rss,
                        "peak_mib": peak,
                        "cache_s": cache_s,
                        "cache_fill_s": figures.entity_cache_fill_seconds,
                        "cache_entries": figures.entity_cache_entries,
                        "cache_mib": figures.entity_cache_bytes / 2**20,
                        "graph_loads": figures.hnsw_loads,
                        "graph_builds": figures.hnsw_builds,
                        "rows": figures.entity_count,
                        "timings": timings,
                        "found": found,
                        "store_timings": store_timings,
                        "store_found": store_found,
                    }
                )
            )
        nursery.cancel_scope.cancel()


async def restart(args: argparse.Namespace, db: Path) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--reload-child",
        str(db),
        "--queries",
        str(args.queries),
        "--model-cache",
        str(args.model_cache),
    ]
    done = await trio.run_process(command, capture_stdout=True, stderr=subprocess.STDOUT)
    lines = done.stdout.decode().strip().splitlines()
    return dict(json.loads(lines[-1]))


# --------------------------------------------------------------------------------- main


async def measure_size(
    args: argparse.Namespace,
    embedder: Embedder,
    texts: list[str],
    queries: list[str],
    query_vectors: np.ndarray,
    base: np.ndarray,
    size: int,
    tmp: Path,
    *,
    first: bool,
) -> None:
    goals = goals_for(size)
    print(f"N={size}:")
    started = time.perf_counter()
    vectors = mixtures(base, size)
    ids = np.arange(size)
    tops, gaps = exact_top(vectors, query_vectors, ids)
    print(f"  data set made and exact top-10s computed in {time.perf_counter() - started:.1f}s")
    print_separation(gaps, "")
    print_duplicates(vectors)
    rng = np.random.default_rng(size)
    removed = np.sort(rng.choice(size, int(size * CHURN), replace=False))
    new = mixtures(base, len(base) + len(removed), seed=size + 1)[len(base) :]
    keep = np.ones(size, dtype=bool)
    keep[removed] = False
    after_ids = np.concatenate([ids[keep], np.arange(size, size + len(new))])
    after_tops, after_gaps = exact_top(
        np.concatenate([vectors[keep], new]), query_vectors, after_ids
    )
    print_separation(after_gaps, " after the churn")

    db = tmp / f"bench-{size}.duckdb"
    if args.restart_only:
        if not db.exists():
            print(f"  no {db} from an earlier --keep run: skipped")
            return
        print(f"  (--restart-only: the store and graph of an earlier run in {tmp})")
        await print_restart(args, db, after_tops, goals)
        return
    async with (
        open_store(db, **SERVER_STORE) as store,
        trio.open_nursery() as nursery,
    ):
        memory = await nursery.start(MemoryService(store, embedder, max_entities=None).run)
        if first:
            await ingest(memory)
        await bulk_load(memory, texts, vectors)
        build_s = memory.statistics().hnsw_build_seconds
        del vectors
        timings, found = await timed_searches(memory, queries)
        print_search("search (embedding excluded)", timings, found, tops, goals)
        exact_n = min(args.exact_queries, len(queries))
        exact_timings, exact_found = await timed_searches(
            memory, queries[:exact_n], exact=True, warm=2
        )
        print_search(
            "DuckDB exact path (baseline)", exact_timings, exact_found, tops[:exact_n], None
        )
        current, peak = rss_mib()
        print(
            f"  bench process RSS {current:.0f} MiB (peak {peak:.0f} MiB): the service plus the "
            f"bench's own data set and exact answers"
        )

        churn_s = await churn(memory, texts, removed, size, new)
        print(
            f"  churn: {len(removed)} deleted and {len(new)} inserted in {churn_s:.1f}s "
            f"({2 * len(removed) / churn_s:.0f} writes/s, no embedding)"
        )
        builds_before = memory.statistics().hnsw_builds
        timings, found = await timed_searches(memory, queries)
        print_search("search right after the churn", timings, found, after_tops, goals)
        settled = await settle_graph(memory)
        rebuilt = memory.statistics().hnsw_builds - builds_before
        timings, found = await timed_searches(memory, queries)
        print_search(
            f"search after the churn, graph settled ({settled:.1f}s, {rebuilt} rebuilds)",
            timings,
            found,
            after_tops,
            goals,
        )
        await memory.save_graph()
        nursery.cancel_scope.cancel()

    await print_restart(args, db, after_tops, goals)
    print(
        f"  N={size} graph build {build_s:.1f}s; load average "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}"
    )


async def print_restart(
    args: argparse.Namespace, db: Path, after_tops: list[list[int]], goals: Goals
) -> None:
    """Restart in a fresh process on ``db`` and print its figures against ``goals``."""
    figures = await restart(args, db)
    rss_gib = figures["rss_mib"] / 1024
    print(
        f"  restart in a fresh process: model {figures['model_s']:.1f}s, service start "
        f"(mirror and graph from the saved files when they match the database, else the "
        f"mirror from DuckDB) {figures['mirror_s']:.1f}s, graph ready after "
        f"{figures['graph_s']:.1f}s more (loads {figures['graph_loads']}, builds "
        f"{figures['graph_builds']}, {figures['rows']} entities)"
    )
    reload_s = figures["mirror_s"] + figures["graph_s"]
    print(
        f"    reload (service start to graph ready) {reload_s:.1f}s; "
        f"{verdict(reload_s, goals.reload_s, at_most=True)}"
    )
    print(
        f"    RSS after load {figures['rss_mib']:.0f} MiB = {rss_gib:.2f} GiB (model and filled "
        f"entity cache included; "
        f"peak {figures['peak_mib']:.0f} MiB); {verdict(rss_gib, goals.rss_gib, at_most=True)}"
    )
    print(
        f"    entity cache filled after the graph: {figures['cache_entries']} entities, "
        f"{figures['cache_mib']:.0f} MiB in {figures['cache_fill_s']:.2f}s (ready "
        f"{figures['cache_s']:.2f}s after the graph)"
    )
    print_search(
        "search after the restart", figures["timings"], figures["found"], after_tops, goals
    )
    print_search(
        "search after the restart, entity cache off (every hit read from DuckDB)",
        figures["store_timings"],
        figures["store_found"],
        after_tops,
        None,
    )
    print(f"    load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


async def main(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as stack:
        if args.keep is None:
            tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="caxton-bench-"))
        else:
            args.keep.mkdir(parents=True, exist_ok=True)
            tmp = str(args.keep)
        async with trio.open_nursery() as nursery:
            embedder = await nursery.start(
                Embedder(cache_dir=args.model_cache, cache_size=4096).run
            )
            print(
                f"model loaded in {embedder.statistics().load_seconds:.2f}s; load average "
                f"{' '.join(f'{x:.2f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs"
            )
            texts = sentences(BASE_TEXTS)
            queries = query_sentences(args.queries)
            timings = []
            for query in queries[:50]:
                started = time.perf_counter()
                await embedder.embed([query], use_cache=False)
                timings.append((time.perf_counter() - started) * 1000)
            print(
                f"single-query embedding (apart from the search figures): p50 "
                f"{statistics.median(timings):.1f} ms, p99 {percentile(timings, 0.99):.1f} ms"
            )
            base = await base_vectors(embedder, texts)
            query_vectors = await embedder.embed(queries)
            for n, size in enumerate(args.sizes):
                await measure_size(
                    args,
                    embedder,
                    texts,
                    queries,
                    query_vectors,
                    base,
                    size,
                    Path(tmp),
                    first=n == 0 and not args.restart_only,
                )
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10000,100000", help="comma-separated entity counts")
    parser.add_argument("--quick", action="store_true", help="10k entities only")
    parser.add_argument("--queries", type=int, default=500)
    parser.add_argument(
        "--exact-queries", type=int, default=20, help="queries timed on DuckDB's exact path"
    )
    parser.add_argument("--model-cache", type=Path, default=CACHE / "models" / "all-MiniLM-L6-v2")
    parser.add_argument(
        "--keep",
        type=Path,
        help="keep each size's store and saved graph in this folder (bench-<size>.duckdb)",
    )
    parser.add_argument(
        "--restart-only",
        action="store_true",
        help="with --keep: only the restart figures, on the stores an earlier --keep run left",
    )
    parser.add_argument("--reload-child", type=Path, help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.restart_only and parsed.keep is None:
        parser.error("--restart-only needs --keep FOLDER (the folder of an earlier --keep run)")
    if parsed.reload_child is not None:
        trio.run(reload_child, parsed)
        sys.exit(0)
    parsed.sizes = [10_000] if parsed.quick else [int(s) for s in parsed.sizes.split(",")]
    run_started = time.perf_counter()
    trio.run(main, parsed)
    print(f"run took {time.perf_counter() - run_started:.0f}s")
