"""Benchmark the memory component: ingest, embedding, search latency, recall, RSS.

Usage::

    .venv/bin/python tools/bench/memory_search.py [--sizes 10000,100000] [--queries 50]

What it measures, all through :class:`caxton.memory.MemoryService` on a DuckDB file in a
temporary directory:

* ingest rate: ``create_entities`` in batches of 100 (embedding included);
* single-query embed time: the real model, cache disabled;
* search p50/p99 at each size, through the accelerator and through DuckDB's exact path;
* recall@10 of the accelerator against the exact path;
* above the service's HNSW threshold: the graph's build time (the bench waits for it before
  measuring), how many searches went through it, and how long a restart takes to load the
  saved graph;
* the process's RSS.

Encoding 100k texts takes minutes on two cores, so the vectors for the larger sizes are made
once and cached outside the repository (``~/.cache/caxton-bench``): real embeddings of 10k
generated sentences, plus, beyond that, copies of them with small noise, renormalised. Those
rows are bulk-loaded into DuckDB through the store, and the accelerator is rebuilt from DuckDB
as at a server start.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import itertools
import os
import random
import resource
import statistics
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import trio

from caxton.memory import MEMORY_MIGRATIONS, Embedder, MemoryService, NewEntity, Scope
from caxton.memory.queries import write_entities
from caxton.memory.types import Entity
from caxton.store import open_store

if TYPE_CHECKING:
    from collections.abc import Sequence

CACHE = Path(os.environ.get("CAXTON_BENCH_CACHE", Path.home() / ".cache" / "caxton-bench"))
BASE_TEXTS = 10_000
TYPES = ["fact", "person", "place", "event", "note"]

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


def sentences(count: int) -> list[str]:
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS, PLACES))
    random.Random(42).shuffle(combos)
    return [" ".join(parts) for parts in combos[:count]]


def rss_mib() -> tuple[float, float]:
    current = 0.0
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                current = int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return current, peak


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


def grown(base: np.ndarray, size: int) -> np.ndarray:
    path = CACHE / f"minilm-grown-{len(base)}-{size}.npy"
    cached = load_cached(path)
    if cached is not None:
        return cached
    rng = np.random.default_rng(7)
    reps = -(-size // len(base))
    tiled = np.tile(base, (reps, 1))[:size]
    noise = rng.normal(0.0, 0.02, size=tiled.shape).astype(np.float32)
    noise[: len(base)] = 0.0
    vectors = tiled + noise
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    vectors = vectors.astype(np.float32)
    save_cached(path, vectors)
    return vectors


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
            Entity(
                name=f"bench-{i:06d}",
                entity_type=types[i % len(types)],
                observations=(texts[i % len(texts)],),
                scope=Scope.GLOBAL,
                agent=None,
                metadata={},
                created_at=stamp,
                updated_at=stamp,
            )
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
    threshold = memory.hnsw_threshold
    if threshold is not None and len(vectors) >= threshold:
        await wait_for_graph(memory, "built")
    else:
        print(f"  below the HNSW threshold ({threshold}): numpy scan only")
    return loaded


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


async def measure(memory: MemoryService, queries: list[str], size: int) -> None:
    # Warm the query cache so both paths measure the search, not the encoder.
    await memory.embedder.embed(queries)
    rows = []
    recalls = []
    graph_before = memory.statistics().hnsw_searches
    fallbacks_before = memory.statistics().hnsw_fallbacks
    for exact in (False, True):
        timings = []
        results = []
        for query in queries:
            started = time.perf_counter()
            hits = await memory.search(query, limit=10, exact=exact)
            timings.append((time.perf_counter() - started) * 1000)
            results.append({h.entity.name for h in hits})
        rows.append((exact, timings, results))
        if not exact:
            through = memory.statistics().hnsw_searches - graph_before
            fallbacks = memory.statistics().hnsw_fallbacks - fallbacks_before
    path = f"HNSW + exact re-score ({through}/{len(queries)} searches, {fallbacks} fell back)"
    if not through:
        path = "numpy scan"
    for fast, truth in zip(rows[0][2], rows[1][2], strict=True):
        recalls.append(len(fast & truth) / max(1, len(truth)))
    for exact, timings, _ in rows:
        label = "duckdb exact" if exact else "accelerator "
        print(
            f"  N={size:>6} {label}: p50 {statistics.median(timings):7.2f} ms   "
            f"p99 {percentile(timings, 0.99):7.2f} ms   max {max(timings):7.2f} ms"
        )
    print(f"  N={size:>6} accelerator path: {path}")
    print(f"  N={size:>6} recall@10 accelerator vs exact: {sum(recalls) / len(recalls):.4f}")
    figures = memory.statistics()
    print(f"  service window p99: {figures.search_p99_ms:.2f} ms over {figures.search_window}")


async def ingest(memory: MemoryService) -> None:
    batch = [
        NewEntity(name=f"ingest-{i}", entity_type="fact", observations=[t])
        for i, t in enumerate(sentences(1000))
    ]
    started = time.perf_counter()
    for start in range(0, len(batch), 100):
        await memory.create_entities(batch[start : start + 100])
    elapsed = time.perf_counter() - started
    print(f"ingest through the service (embedding included): {len(batch) / elapsed:.0f} entities/s")
    for entity in batch:
        await memory.delete_entity(entity.name)


async def main(sizes: list[int], query_count: int, model_cache: Path) -> None:
    with tempfile.TemporaryDirectory(prefix="caxton-bench-") as tmp:
        async with trio.open_nursery() as nursery:
            embedder = await nursery.start(Embedder(cache_dir=model_cache, cache_size=4096).run)
            print(f"model loaded in {embedder.statistics().load_seconds:.2f}s")
            texts = sentences(BASE_TEXTS)
            queries = [f"someone who {v} {o}" for v, o in zip(VERBS * 4, OBJECTS, strict=False)]
            queries = (queries * (query_count // len(queries) + 1))[:query_count]
            queries = [f"{q} ({i})" for i, q in enumerate(queries)]

            timings = []
            for query in queries[:20]:
                started = time.perf_counter()
                await embedder.embed([query], use_cache=False)
                timings.append((time.perf_counter() - started) * 1000)
            print(
                f"single-query embed: p50 {statistics.median(timings):.1f} ms, "
                f"max {max(timings):.1f} ms"
            )

            base = await base_vectors(embedder, texts)
            for size in sizes:
                path = Path(tmp) / f"bench-{size}.duckdb"
                async with (
                    open_store(path, migrations=MEMORY_MIGRATIONS) as store,
                    trio.open_nursery() as inner,
                ):
                    memory = await inner.start(
                        MemoryService(store, embedder, max_entities=None).run
                    )
                    if size == sizes[0]:
                        await ingest(memory)
                    print(f"N={size}:")
                    await bulk_load(memory, texts, grown(base, size))
                    await measure(memory, queries, size)
                    current, peak = rss_mib()
                    print(f"  RSS {current:.0f} MiB (peak {peak:.0f} MiB)")
                    if memory.statistics().hnsw_ready:
                        # As at a restart: a second service over the same DB loads the saved graph.
                        again = await inner.start(
                            MemoryService(store, embedder, max_entities=None).run
                        )
                        await wait_for_graph(again, "reloaded from the saved file")
                    inner.cancel_scope.cancel()
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--model-cache", type=Path, default=CACHE / "models" / "all-MiniLM-L6-v2")
    args = parser.parse_args()
    trio.run(main, [int(s) for s in args.sizes.split(",")], args.queries, args.model_cache)
