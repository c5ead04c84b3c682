"""Memory on PostgreSQL shared by several instances, and pgvector's recall (issue #15).

The contract tests of the service run on both backends (test_memory_service.py and
test_memory_transfer.py); these are what only a shared store has: two services on one database
see each other's writes at once, and the HNSW search finds what the exact scan finds.
"""

from __future__ import annotations

import itertools
import logging
import random

import pytest
import trio

from caxton.errors import NotFound
from caxton.memory import (
    MEMORY_POSTGRES_MIGRATIONS,
    MemoryLimitExceeded,
    MemoryService,
    NewEntity,
    NewRelation,
    postgres_sql,
)
from caxton.memory.maintenance import MaintenanceSchedule, MemoryMaintenance
from caxton.store.errors import StorageUnavailable
from caxton.store.postgres import PostgresStore

pytestmark = pytest.mark.trio


async def start_instance(nursery, url, embedder, **options) -> MemoryService:
    """One "caxton start" worth of memory: its own pool and service on the shared database."""
    store = await nursery.start(PostgresStore(url, migrations=MEMORY_POSTGRES_MIGRATIONS).run)
    return await nursery.start(
        MemoryService(store, embedder, sql=postgres_sql, hnsw_ef_search=100, **options).run
    )


async def test_a_write_on_one_instance_is_seen_by_another_at_once(nursery, postgres_url, embedder):
    with trio.fail_after(60):
        a = await start_instance(nursery, postgres_url, embedder, max_entities=3)
        b = await start_instance(nursery, postgres_url, embedder, max_entities=3)
        # Neither keeps a process-local mirror another instance's writes would miss.
        assert not a.accelerator
        assert not b.accelerator
        assert a.hnsw_path is None
        await a.create_entities(
            [
                NewEntity(
                    name="Whiskers",
                    entity_type="pet",
                    observations=["a small cat that sleeps on the sofa"],
                ),
                NewEntity(
                    name="NASDAQ",
                    entity_type="market",
                    observations=["stock exchange where shares are traded"],
                ),
            ]
        )
        for exact in (False, True):
            hits = await b.search("a kitten on a rug", limit=1, exact=exact)
            assert [h.entity.name for h in hits] == ["Whiskers"]
        assert (await b.capacity()).entity_count == 2
        assert (await b.stats()).entity_count == 2
        assert b.statistics().entity_count == 2
        # The limit counts every instance's entities: B may add one, then A none.
        await b.create_entity(NewEntity(name="Rex", entity_type="pet", observations=["a dog"]))
        with pytest.raises(MemoryLimitExceeded):
            await a.create_entity(NewEntity(name="Tom", entity_type="pet"))
        assert a.statistics().entity_count == 3
        await a.create_relation(
            NewRelation(source="Whiskers", target="Rex", relation_type="plays_with")
        )
        graph = await b.graph("Rex", max_depth=1)
        assert [(e.source, e.target) for e in graph.edges] == [("Whiskers", "Rex")]
        merged = await b.add_observations("Whiskers", ["chases the red dot"])
        assert (await a.get_entity("Whiskers")).observations == merged.observations
        assert await b.delete_entity("Rex") == 1
        with pytest.raises(NotFound):
            await a.get_entity("Rex")
        assert [h.entity.name for h in await a.search("a dog", limit=5)] == [
            "Whiskers",
            "NASDAQ",
        ]
        stats = await a.stats()
        assert (stats.entity_count, stats.relation_count) == (2, 0)
        assert a.statistics().relation_count == 0
        assert (await a.export_document())["metadata"]["entity_count"] == 2


SUBJECTS = ["the cat", "a trader", "my neighbour", "the robot", "a child", "the chef", "a pilot"]
VERBS = ["likes", "fears", "repairs", "paints", "studies", "sells", "cooks", "collects"]
OBJECTS = [
    "old bicycles",
    "stock options",
    "fresh bread",
    "jet engines",
    "garden roses",
    "mountain maps",
    "jazz records",
    "rainy mornings",
    "chess puzzles",
]
PLACES = ["in Paris", "at night", "by the sea", "on weekends", "in the attic", "at school"]
QUERIES = [
    "someone who bakes",
    "financial markets",
    "flying aircraft",
    "music collection",
    "flowers in the garden",
    "a machine that fixes things",
    "hiking in the hills",
    "board games and strategy",
    "pets and animals",
    "weather in the morning",
    "a kitchen at the beach",
    "an artist at work at night",
]


async def test_pgvector_recall_against_the_exact_scan(nursery, postgres_url, embedder):
    """recall@10 of the HNSW path (ef_search 100), unfiltered and filtered, >= 0.98."""
    rng = random.Random(15)
    combos = list(itertools.product(SUBJECTS, VERBS, OBJECTS, PLACES))
    rng.shuffle(combos)
    entities = []
    for index, (subject, verb, obj, place) in enumerate(combos[:2000]):
        scope = ("global", "workspace", "agent")[index % 3]
        entities.append(
            NewEntity(
                name=f"fact-{index:04d}",
                # "rare" is 1 in 10: a filter the index alone would not fill the limit for
                entity_type="rare" if index % 10 == 0 else "habit",
                observations=[f"{subject} {verb} {obj} {place}"],
                scope=scope,
                agent=("alpha", "beta")[index % 2] if scope == "agent" else None,
            )
        )
    with trio.fail_after(90):
        memory = await start_instance(nursery, postgres_url, embedder, max_entities=None)
        for start in range(0, len(entities), 500):
            await memory.create_entities(entities[start : start + 500])
        assert (await memory.capacity()).entity_count == 2000
        overlaps = []
        for query in QUERIES:
            for filters in (
                {},
                {"agent": "alpha"},
                {"entity_types": ["rare"], "agent": "beta"},
                {"scope": "workspace"},
            ):
                fast = await memory.search(query, limit=10, **filters)
                exact = await memory.search(query, limit=10, exact=True, **filters)
                assert len(fast) == len(exact) == 10, filters
                assert [h.similarity for h in fast] == sorted(
                    (h.similarity for h in fast), reverse=True
                )
                exact_scores = {h.entity.name: h.similarity for h in exact}
                overlaps.append(len(exact_scores.keys() & {h.entity.name for h in fast}) / 10)
                for hit in fast:
                    if hit.entity.name in exact_scores:
                        assert hit.similarity == pytest.approx(
                            exact_scores[hit.entity.name], abs=1e-5
                        )
                    if hit.entity.scope == "agent":
                        assert hit.entity.agent == filters.get("agent")
                    if "entity_types" in filters:
                        assert hit.entity.entity_type == "rare"
                    if "scope" in filters:
                        assert hit.entity.scope == "workspace"
        recall = sum(overlaps) / len(overlaps)
        assert recall >= 0.98, recall
        # min_similarity cuts the ranked hits, on both paths alike.
        best = (await memory.search(QUERIES[0], limit=10, exact=True))[4].similarity
        for exact in (False, True):
            hits = await memory.search(QUERIES[0], limit=10, min_similarity=best, exact=exact)
            assert all(h.similarity >= best for h in hits)
            assert len(hits) >= 4


async def test_maintenance_on_postgres_analyzes_and_measures_nothing(
    nursery, postgres_url, embedder, caplog
):
    caplog.set_level(logging.INFO, logger="caxton.memory.maintenance")
    with trio.fail_after(60):
        memory = await start_instance(nursery, postgres_url, embedder)
        await memory.create_entity(NewEntity(name="Whiskers", entity_type="pet"))
        # Both jobs due at once, and a dead-space threshold that has nothing to read.
        schedule = MaintenanceSchedule(
            analyze_interval_s=0.1, vacuum_interval_s=0.1, cleanup_threshold=0.5
        )
        maintenance = MemoryMaintenance(memory, schedule)
        await nursery.start(maintenance.run)
        due = await maintenance.tick(trio.current_time() + 1.0)
    assert (due.compact, due.analyze) == (True, True)
    stats = maintenance.statistics()
    assert (stats.failures, stats.compact_runs, stats.analyze_runs) == (0, 1, 1)
    assert stats.dead_fraction is None
    assert "memory maintenance: ANALYZE in " in caplog.text
    assert "could not measure" not in caplog.text
    report = await memory.optimize(checkpoint=True, vacuum=True, analyze=False)
    assert (report.checkpointed, report.vacuumed, report.analyzed) == (False, False, False)
    assert report.size_after_bytes > 0


async def test_merges_from_two_instances_into_one_entity_lose_nothing(
    nursery, postgres_url, embedder
):
    """Each instance plans a merge from what it read; a write that finds the entity changed
    by the other instance plans again instead of overwriting the other's observations."""
    with trio.fail_after(60):
        a = await start_instance(nursery, postgres_url, embedder)
        b = await start_instance(nursery, postgres_url, embedder)
        await a.create_entity(NewEntity(name="log", entity_type="note", observations=["start"]))
        async with trio.open_nursery() as writers:
            for i in range(8):
                writers.start_soon(a.add_observations, "log", [f"from a {i}"])
                writers.start_soon(
                    b.create_entity,
                    NewEntity(name="log", entity_type="note", observations=[f"from b {i}"]),
                )
        observations = (await b.get_entity("log")).observations
    assert len(observations) == 17
    assert {o for o in observations if o != "start"} == {
        f"from {who} {i}" for who in "ab" for i in range(8)
    }


async def test_statistics_follow_other_instances_writes(nursery, postgres_url, embedder):
    """Health and metrics ask ``fresh_statistics()``: on a shared store its totals are read
    from the database when older than ``counts_refresh_s``; nothing reads them meanwhile."""
    with trio.fail_after(60):
        a = await start_instance(nursery, postgres_url, embedder)
        b = await start_instance(nursery, postgres_url, embedder, counts_refresh_s=1.0)
        await b.fresh_statistics()  # counted at start (the rebuild), not again yet
        reads = b.store.statistics().reads_total
        await a.create_entities(
            [NewEntity(name=f"e{i}", entity_type="t", observations=[f"item {i}"]) for i in range(3)]
        )
        await a.create_relation(NewRelation(source="e0", target="e1", relation_type="next"))
        assert (b.statistics().entity_count, b.statistics().relation_count) == (0, 0)
        await trio.sleep(1.1)
        assert b.store.statistics().reads_total == reads  # no timer read them
        async with trio.open_nursery() as askers:  # asked together: one read
            for _ in range(5):
                askers.start_soon(b.fresh_statistics)
        assert b.store.statistics().reads_total == reads + 1
        assert (b.statistics().entity_count, b.statistics().relation_count) == (3, 1)
        # younger than counts_refresh_s: answered from what was read
        await a.create_entities([NewEntity(name="e3", entity_type="t", observations=["x"])])
        assert (await b.fresh_statistics()).entity_count == 3
        assert b.store.statistics().reads_total == reads + 1


async def test_totals_that_cannot_be_read_are_asked_again_only_later(
    nursery, postgres_url, embedder
):
    """A scrape while the database does not answer costs one attempt per ``counts_refresh_s``,
    not one per caller queued behind the last: the others get the totals last counted."""
    with trio.fail_after(60):
        b = await start_instance(nursery, postgres_url, embedder, counts_refresh_s=0.3)
        await trio.sleep(0.35)  # the count at start is old now
        attempts = []

        async def unavailable(fns):  # type: ignore[no-untyped-def]
            attempts.append(trio.current_time())
            await trio.sleep(0.1)  # as a connect that fails
            raise StorageUnavailable("postgresql://test", "no connection within 0.1 s")

        b.store.read_statements = unavailable  # type: ignore[method-assign]
        async with trio.open_nursery() as askers:
            for _ in range(5):
                askers.start_soon(b.fresh_statistics)
        assert len(attempts) == 1
        assert (await b.fresh_statistics()).entity_count == 0  # the last counted
        assert len(attempts) == 1
        await trio.sleep(0.35)
        await b.fresh_statistics()
        assert len(attempts) == 2
