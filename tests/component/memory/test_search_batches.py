"""Concurrent searches on PostgreSQL sharing statements (caxton.memory.search_batches, issue #21),
against a real PostgreSQL with pgvector and the real model."""

from __future__ import annotations

import functools

import numpy as np
import pytest
import trio

from caxton.memory import MEMORY_POSTGRES_MIGRATIONS, MemoryService, NewEntity, postgres_sql
from caxton.memory.search_batches import SearchBatcher
from caxton.store.postgres import PostgresStore

pytestmark = pytest.mark.trio

TOPICS = ("rust", "python", "gardening", "chess", "cooking", "sailing", "music", "finance")
QUERIES = ("systems programming", "growing tomatoes", "opening moves", "boats and wind")
FILTERS = (
    {},
    {"agent": "alpha"},
    {"entity_types": ["rare"], "agent": "beta"},
    {"scope": "workspace", "min_similarity": 0.2},
)


def terms(**filters: object) -> dict[str, object]:
    return {
        "limit": 5,
        "min_similarity": 0.0,
        "scope": None,
        "agent": None,
        "entity_types": None,
        **filters,
    }


async def start_memory(nursery: trio.Nursery, url: str, embedder: object) -> MemoryService:
    store = await nursery.start(PostgresStore(url, migrations=MEMORY_POSTGRES_MIGRATIONS).run)
    memory: MemoryService = await nursery.start(
        MemoryService(store, embedder, sql=postgres_sql, hnsw_ef_search=100).run
    )
    entities = []
    for index in range(240):
        scope = ("global", "workspace", "agent")[index % 3]
        entities.append(
            NewEntity(
                name=f"note-{index:03d}",
                entity_type="rare" if index % 7 == 0 else "note",
                observations=[f"a note on {TOPICS[index % len(TOPICS)]}, number {index}"],
                scope=scope,
                agent=("alpha", "beta")[index % 2] if scope == "agent" else None,
            )
        )
    await memory.create_entities(entities)
    return memory


class GatedStore:
    """The real store, but each read waits for ``gate`` (to hold the batcher's slots)."""

    def __init__(self, store: object) -> None:
        self.store = store
        self.gate = trio.Event()
        self.reads = 0

    async def read_statements(self, fns):  # type: ignore[no-untyped-def]
        self.reads += 1
        await self.gate.wait()
        return await self.store.read_statements(fns)  # type: ignore[attr-defined]


async def one_gated_slot(
    nursery: trio.Nursery, url: str, embedder: object
) -> tuple[GatedStore, SearchBatcher, list[np.ndarray]]:
    """A batcher with one slot over the gated store, and the vectors of QUERIES."""
    memory = await start_memory(nursery, url, embedder)
    gated = GatedStore(memory.store)
    batcher = await nursery.start(SearchBatcher(gated, ef_search=100, slots=1).run)
    return gated, batcher, list(await embedder.embed(list(QUERIES)))  # type: ignore[attr-defined]


async def test_one_statement_answers_each_query_as_its_own_would(
    nursery, postgres_url, embedder
) -> None:
    """Each query of a shared statement, asked by its own agent (none, alpha, beta, none), gets
    what the single search for that query and agent gives, under each set of filters."""
    agents = [None, "alpha", "beta", None]
    with trio.fail_after(60):
        memory = await start_memory(nursery, postgres_url, embedder)
        vectors = list(await embedder.embed(list(QUERIES)))
        for filters in FILTERS:
            arguments = {**terms(**filters), "exact": False, "ef_search": 100}
            together = await memory.store.read_statements(
                [
                    functools.partial(
                        postgres_sql.search_entities_many,
                        queries=vectors,
                        agents=agents,
                        **arguments,
                    )
                ]
            )
            assert together is not None
            for vector, agent, (ranked, found) in zip(vectors, agents, together[0], strict=True):
                single = functools.partial(
                    postgres_sql.search_entities, query=vector, **{**arguments, "agent": agent}
                )
                alone = await memory.store.read_statements([single])
                assert alone is not None
                assert ranked == alone[0][0]
                assert found == alone[0][1]
                if agent is not None and "scope" not in filters:
                    # the agent's own agent-scoped entities are among what it may find
                    visible = {entity.agent for entity in found.values()}
                    assert visible <= {None, agent}
            assert any(result[0] for result in together[0]), filters


async def test_concurrent_searches_share_statements_and_keep_their_own_hits(
    nursery, postgres_url, embedder
) -> None:
    with trio.fail_after(60):
        memory = await start_memory(nursery, postgres_url, embedder)
        asks = [(query, filters) for query in QUERIES for filters in FILTERS] * 3
        alone = {}
        for query, filters in asks[: len(QUERIES) * len(FILTERS)]:
            hits = await memory.search(query, limit=5, **filters)
            alone[query, repr(filters)] = [(h.entity, h.similarity) for h in hits]
        batcher = memory._search_batcher
        assert batcher is not None
        before = (batcher.statements, batcher.searches)
        got: dict[int, list[object]] = {}

        async def ask(index: int, query: str, filters: dict[str, object]) -> None:
            hits = await memory.search(query, limit=5, **filters)
            got[index] = [(h.entity, h.similarity) for h in hits]

        async with trio.open_nursery() as searches:
            for index, (query, filters) in enumerate(asks):
                searches.start_soon(ask, index, query, filters)
        for index, (query, filters) in enumerate(asks):
            assert got[index] == alone[query, repr(filters)]
        statements = batcher.statements - before[0]
        assert batcher.searches - before[1] == len(asks)
        assert statements < len(asks)  # searches that waited went together


async def test_a_search_that_breaks_its_statement_fails_alone(
    nursery, postgres_url, embedder
) -> None:
    with trio.fail_after(60):
        gated, batcher, good = await one_gated_slot(nursery, postgres_url, embedder)
        bad = np.full(good[0].shape, np.nan, dtype=np.float32)  # pgvector refuses NaN
        results: dict[int, object] = {}

        async def ask(index: int, vector: np.ndarray) -> None:
            try:
                results[index] = (await batcher.search(vector, terms()))[0]
            except Exception as exc:
                results[index] = exc

        async with trio.open_nursery() as searches:
            searches.start_soon(ask, 0, good[0])  # takes the one slot, held at the gate
            await trio.sleep(0.2)
            for index, vector in enumerate([good[1], bad, good[2], good[3]], start=1):
                searches.start_soon(ask, index, vector)
            await trio.sleep(0.2)
            gated.gate.set()
        assert isinstance(results[2], Exception)
        assert "NaN" in str(results[2])
        for index in (0, 1, 3, 4):
            assert isinstance(results[index], list), results[index]
            assert results[index]
        # the four that waited went as one statement, which failed, then one by one
        assert (batcher.statements, gated.reads) == (6, 6)


async def test_a_cancelled_waiter_leaves_and_the_others_get_their_hits(
    nursery, postgres_url, embedder
) -> None:
    with trio.fail_after(60):
        gated, batcher, vectors = await one_gated_slot(nursery, postgres_url, embedder)
        results: dict[int, object] = {}
        scopes: dict[int, trio.CancelScope] = {}

        async def ask(index: int) -> None:
            with trio.CancelScope() as scope:
                scopes[index] = scope
                results[index] = (await batcher.search(vectors[index], terms()))[0]
                return
            results[index] = "cancelled"

        async with trio.open_nursery() as searches:
            searches.start_soon(ask, 0)  # its statement starts and waits at the gate
            await trio.sleep(0.2)
            searches.start_soon(ask, 1)
            searches.start_soon(ask, 2)  # these two wait for the slot
            await trio.sleep(0.2)
            scopes[2].cancel()  # leaves the queue
            scopes[0].cancel()  # its statement has started: it runs on for nobody
            await trio.sleep(0.2)
            gated.gate.set()
        assert results[0] == results[2] == "cancelled"
        assert isinstance(results[1], list)
        assert results[1]
        assert batcher.searches == 2  # the cancelled waiter never reached a statement
