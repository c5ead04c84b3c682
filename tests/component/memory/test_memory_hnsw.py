"""The HNSW layer of the accelerator: real embeddings, real DuckDB files, saved graphs.

The size threshold is lowered to a few dozen rows so the graph is built in well under a second.
"""

from __future__ import annotations

import itertools
import json
import random
import threading

import pytest
import trio

from caxton.memory import MEMORY_MIGRATIONS, MemoryService, NewEntity, queries
from caxton.memory import accelerator as accelerator_module
from caxton.memory import hnsw as hnsw_module
from caxton.store import open_store

pytestmark = pytest.mark.trio

THRESHOLD = 50

SUBJECTS = ["the cat", "a trader", "my neighbour", "the robot", "a child", "the chef"]
VERBS = ["likes", "fears", "repairs", "paints", "studies", "sells", "cooks"]
OBJECTS = [
    "old bicycles",
    "stock options",
    "fresh bread",
    "jet engines",
    "garden roses",
    "jazz records",
    "rainy mornings",
    "chess puzzles",
]
QUERIES = [
    "someone who bakes",
    "financial markets",
    "flying aircraft",
    "music collection",
    "flowers in the garden",
    "a machine that fixes things",
    "board games and strategy",
    "pets and animals",
    "weather in the morning",
    "cycling",
    "an artist at work",
    "selling things at a market",
]
FILTERS = [
    {},
    {"agent": "alpha"},
    {"entity_types": ["habit"], "agent": "beta"},
    {"scope": "agent", "agent": "alpha"},
    {"scope": "workspace", "entity_types": ["opinion"]},
    {"min_similarity": 0.3},
]


def corpus() -> list[NewEntity]:
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS))
    random.Random(11).shuffle(combos)
    entities = []
    for index, (subject, verb, obj) in enumerate(combos[:300]):
        scope = ("global", "workspace", "agent")[index % 3]
        entities.append(
            NewEntity(
                name=f"fact-{index:03d}",
                entity_type=("habit", "opinion")[index % 2],
                observations=[f"{subject} {verb} {obj}"],
                scope=scope,
                agent=("alpha", "beta")[index % 2] if scope == "agent" else None,
            )
        )
    return entities


async def graph_ready(memory: MemoryService) -> None:
    await memory.wait_graph()
    assert memory.statistics().hnsw_ready


def ranked(hits):
    return [(h.entity.name, h.similarity) for h in hits]


def assert_same(found, expected):
    """The same names in the same order with the same similarities (to f16 rounding).

    From the graph's threshold on the mirror holds float16 rows (caxton.memory.index).
    """
    assert [name for name, _ in found] == [name for name, _ in expected]
    assert [score for _, score in found] == pytest.approx(
        [score for _, score in expected], abs=2e-3
    )


async def test_graph_results_match_the_numpy_and_exact_paths(nursery, store, embedder):
    with trio.fail_after(60):
        memory = await nursery.start(
            MemoryService(store, embedder, max_entities=None, hnsw_threshold=THRESHOLD).run
        )
        await memory.create_entities(corpus())
        await graph_ready(memory)
        assert memory.statistics().hnsw_rows == 300
        plain = await nursery.start(
            MemoryService(store, embedder, max_entities=None, hnsw_threshold=None).run
        )
        assert not plain.statistics().hnsw_ready
        overlaps = []
        same = 0
        for query in QUERIES:
            for filters in FILTERS:
                fast = await memory.search(query, limit=10, **filters)
                numpy_hits = await plain.search(query, limit=10, **filters)
                exact = await memory.search(query, limit=10, exact=True, **filters)
                assert len(fast) == len(exact)
                fast_names = {h.entity.name for h in fast}
                overlaps.append(
                    len(fast_names & {h.entity.name for h in exact}) / max(1, len(exact))
                )
                if [n for n, _ in ranked(fast)] == [n for n, _ in ranked(numpy_hits)]:
                    assert_same(ranked(fast), ranked(numpy_hits))
                    same += 1
                for hit in fast:
                    if hit.entity.scope == "agent":
                        assert hit.entity.agent == filters.get("agent")
                    if "scope" in filters:
                        assert hit.entity.scope == filters["scope"]
                    if "entity_types" in filters:
                        assert hit.entity.entity_type in filters["entity_types"]
                    assert hit.similarity >= filters.get("min_similarity", 0.0)
        recall = sum(overlaps) / len(overlaps)
        assert recall >= 0.98, recall
        assert same >= 0.95 * len(overlaps), same
        figures = memory.statistics()
        # Filters that allow fewer than THRESHOLD rows are answered by an exact scan of them.
        assert 0 < figures.hnsw_searches < len(overlaps)
        assert plain.statistics().hnsw_searches == 0


async def test_deletes_and_updates_reach_the_graph(nursery, store, embedder):
    with trio.fail_after(60):
        memory = await nursery.start(
            MemoryService(store, embedder, max_entities=None, hnsw_threshold=THRESHOLD).run
        )
        await memory.create_entities(corpus())
        await graph_ready(memory)
        top = (await memory.search("someone who bakes", limit=10))[0].entity.name
        await memory.delete_entity(top)
        assert memory.statistics().hnsw_rows == 299
        after = await memory.search("someone who bakes", limit=10)
        assert top not in {h.entity.name for h in after}
        assert_same(
            ranked(after), ranked(await memory.search("someone who bakes", limit=10, exact=True))
        )
        # An update moves the vector: the entity is now found for its new meaning.
        await memory.add_observations(
            "fact-007", ["an orbiting satellite telescope photographs distant galaxies"]
        )
        assert memory.statistics().hnsw_rows == 299
        searches = memory.statistics().hnsw_searches
        hits = await memory.search("astronomy and outer space", limit=3)
        assert memory.statistics().hnsw_searches == searches + 1
        assert hits[0].entity.name == "fact-007"
        exact = await memory.search("astronomy and outer space", limit=3, exact=True)
        assert_same(ranked(hits), ranked(exact))


async def test_saved_graph_is_reused_and_stale_or_corrupt_ones_rebuilt(
    nursery, embedder, tmp_path, monkeypatch
):
    path = tmp_path / "memory.duckdb"
    graph_file = tmp_path / "memory.duckdb.hnsw"
    sidecar = tmp_path / "memory.duckdb.hnsw.json"

    async def session(action, *, persist=True):
        """Open the DB, start the service, wait for its graph, run ``action``, close."""
        async with (
            open_store(path, migrations=MEMORY_MIGRATIONS) as store,
            trio.open_nursery() as inner,
        ):
            memory = await inner.start(
                MemoryService(
                    store,
                    embedder,
                    max_entities=None,
                    hnsw_threshold=THRESHOLD,
                    persist_hnsw=persist,
                ).run
            )
            try:
                await graph_ready(memory)
                return await action(memory)
            finally:
                inner.cancel_scope.cancel()

    async def start_figures(memory):
        stats = memory.statistics()
        hits = ranked(await memory.search("financial markets", limit=10))
        exact = ranked(await memory.search("financial markets", limit=10, exact=True))
        assert_same(hits, exact)
        return stats.hnsw_builds, stats.hnsw_loads, hits

    async def first(memory):
        await memory.create_entities(corpus())
        await graph_ready(memory)
        assert memory.statistics().hnsw_builds == 1
        # A write after the build is saved at shutdown.
        await memory.delete_entity("fact-000")
        return ranked(await memory.search("financial markets", limit=10))

    async def delete_one(memory):
        await memory.delete_entity("fact-001")
        return await start_figures(memory)

    with trio.fail_after(90):
        async with (
            open_store(path, migrations=MEMORY_MIGRATIONS) as store,
            trio.open_nursery() as inner,
        ):
            memory = await inner.start(
                MemoryService(store, embedder, max_entities=None, hnsw_threshold=THRESHOLD).run
            )
            expected = await first(memory)
            inner.cancel_scope.cancel()
        assert graph_file.exists()
        assert json.loads(sidecar.read_text())["rows"] == 299

        # The start takes the mirror from the saved files: no embedding is read.
        with monkeypatch.context() as patched:
            patched.setattr(queries, "index_chunks", refuse_reads)
            builds, loads, hits = await session(start_figures)
        assert (builds, loads) == (0, 1)
        assert_same(hits, expected)

        async def reread(memory):
            loads = memory.statistics().hnsw_loads
            await memory.rebuild_index()  # the mirror from DuckDB, the graph still from the file
            stats = memory.statistics()
            assert stats.hnsw_ready
            return stats.hnsw_builds, stats.hnsw_loads - loads

        assert await session(reread) == (0, 1)

        # Written while nothing is saved: the file no longer matches DuckDB.
        builds, loads, _ = await session(delete_one, persist=False)
        assert (builds, loads) == (1, 0)
        builds, loads, hits = await session(start_figures)
        assert (builds, loads) == (1, 0)
        assert "fact-001" not in {name for name, _ in hits}
        builds, loads, _ = await session(start_figures)
        assert (builds, loads) == (0, 1)

        # A sidecar that does not describe the file, a damaged file, an unreadable sidecar.
        described = json.loads(sidecar.read_text())
        sidecar.write_text(json.dumps({**described, "content": "duckdb:299:0:0"}))
        builds, loads, _ = await session(start_figures)
        assert (builds, loads) == (1, 0)
        # A damaged mirror: read from DuckDB, the graph still loaded, both saved again.
        mirror_file = tmp_path / "memory.duckdb.hnsw.mirror"
        data = bytearray(mirror_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        mirror_file.write_bytes(bytes(data))
        with monkeypatch.context() as patched:
            patched.setattr(queries, "index_chunks", counted_reads(queries.index_chunks))
            builds, loads, _ = await session(start_figures)
            assert (builds, loads, counted_reads.calls) == (0, 1, 1)
        with monkeypatch.context() as patched:
            patched.setattr(queries, "index_chunks", refuse_reads)
            assert (await session(start_figures))[:2] == (0, 1)
        # A damaged graph: rebuilt.
        data = bytearray(graph_file.read_bytes())
        data[len(data) // 2] ^= 0xFF
        graph_file.write_bytes(bytes(data))
        builds, loads, _ = await session(start_figures)
        assert (builds, loads) == (1, 0)
        sidecar.write_text("{not json")
        builds, loads, _ = await session(start_figures)
        assert (builds, loads) == (1, 0)


def counted_reads(read):
    counted_reads.calls = 0

    def reading(*args, **kwargs):
        counted_reads.calls += 1
        return read(*args, **kwargs)

    return reading


def refuse_reads(*args, **kwargs):
    raise AssertionError("the embeddings were read although the saved index matched")


async def test_searches_and_writes_during_a_build(nursery, store, embedder, monkeypatch):
    building = trio.Event()
    release = trio.Event()
    original = hnsw_module.build

    def held_build(*args, **kwargs):
        trio.from_thread.run_sync(building.set)
        trio.from_thread.run(release.wait)
        return original(*args, **kwargs)

    monkeypatch.setattr(hnsw_module, "build", held_build)
    with trio.fail_after(60):
        memory = await nursery.start(
            MemoryService(store, embedder, max_entities=None, hnsw_threshold=THRESHOLD).run
        )
        await memory.create_entities(corpus())
        await building.wait()
        assert memory.statistics().hnsw_building
        hits = await memory.search("someone who bakes", limit=10)
        exact = await memory.search("someone who bakes", limit=10, exact=True)
        assert_same(ranked(hits), ranked(exact))
        gone = hits[0].entity.name
        await memory.delete_entity(gone)
        await memory.create_entity(
            NewEntity(
                name="telescope",
                entity_type="habit",
                observations=["an orbiting satellite telescope photographs distant galaxies"],
            )
        )
        stats = memory.statistics()
        assert (stats.hnsw_ready, stats.hnsw_building, stats.hnsw_searches) == (False, True, 0)
        release.set()
        await graph_ready(memory)
        stats = memory.statistics()
        assert stats.hnsw_rows == stats.index_rows == 300
        assert not stats.hnsw_building
        space = await memory.search("astronomy and outer space", limit=10)
        assert space[0].entity.name == "telescope"
        baking = await memory.search("someone who bakes", limit=10)
        assert gone not in {h.entity.name for h in baking}
        assert memory.statistics().hnsw_searches == 2


async def test_searches_go_on_while_the_graph_is_saved(nursery, embedder, tmp_path, monkeypatch):
    """A save writes the graph and mirror files (seconds at a million rows) holding the
    memory writes, not the searches: a search during a save answers before it ends."""
    saving = trio.Event()
    release = threading.Event()
    real_save = accelerator_module.saved_index.save

    def held_save(index, path, content):
        trio.from_thread.run_sync(saving.set)
        assert release.wait(30), "the test did not release the save"
        real_save(index, path, content)

    async with open_store(tmp_path / "memory.duckdb", migrations=MEMORY_MIGRATIONS) as store:
        memory = await nursery.start(
            MemoryService(store, embedder, max_entities=None, hnsw_threshold=THRESHOLD).run
        )
        await memory.create_entities(corpus())
        await graph_ready(memory)
        await memory.save_graph()  # the build's own save, done before the one timed here
        await memory.delete_entity("fact-000")  # the graph changed: the next save writes
        monkeypatch.setattr(accelerator_module.saved_index, "save", held_save)
        saved = []

        async def save() -> None:
            saved.append(await memory.save_graph())

        try:
            async with trio.open_nursery() as inner:
                inner.start_soon(save)
                await saving.wait()
                with trio.fail_after(10):
                    hits = await memory.search("financial markets", limit=5)
                assert not saved  # answered while the save still ran
                release.set()
        finally:
            release.set()
        assert saved == [True]
        assert [hit.entity.name for hit in hits] == [
            hit.entity.name for hit in await memory.search("financial markets", limit=5)
        ]
