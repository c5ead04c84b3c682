"""The memory both migrations copy: an embedded data_dir filled through the real services, and
the checks that a memory service on the target answers as the source's did."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import pytest
import trio

from caxton.memory import (
    Embedder,
    MemoryService,
    NewEntity,
    NewRelation,
    Scope,
    assemble_default_model,
    postgres_sql,
)
from caxton.ops.migrate import MigrationSource, Step
from caxton.ops.schema import embedded_migrations
from caxton.store import open_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
    from pathlib import Path

    from caxton.memory.types import SearchHit
    from caxton.ops.migrate import Progress
    from caxton.store.backend import Backend

ENTITIES = [
    NewEntity(
        name="Whiskers",
        entity_type="pet",
        observations=["a small cat that sleeps on the sofa", "likes chasing mice"],
        metadata={"colour": "grey"},
    ),
    NewEntity(
        name="NASDAQ",
        entity_type="market",
        observations=["stock exchange where shares are traded", "prices fell sharply"],
        scope=Scope.WORKSPACE,
    ),
    NewEntity(
        name="Rex",
        entity_type="pet",
        observations=["a dog that barks at the postman"],
        scope=Scope.AGENT,
        agent="keeper",
    ),
    NewEntity(name="Ada", entity_type="person", observations=["owns a cat and a dog"]),
    NewEntity(name="Paris", entity_type="city", observations=["capital of France"]),
]
RELATIONS = [
    NewRelation(source="Ada", target="Whiskers", relation_type="owns", strength=0.9),
    NewRelation(source="Ada", target="Rex", relation_type="owns", confidence=0.5),
    NewRelation(source="Ada", target="Paris", relation_type="lives_in"),
]
OBSERVATIONS = sum(len(e.observations) for e in ENTITIES)

Searches = dict[str, list["SearchHit"]]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return assemble_default_model(tmp_path_factory.mktemp("models") / "all-MiniLM-L6-v2")


@pytest.fixture
async def embedder(nursery: trio.Nursery, model_dir: Path) -> Embedder:
    embedder: Embedder = await nursery.start(Embedder(cache_dir=model_dir, batch_size=32).run)
    return embedder


def source_of(data_dir: Path) -> MigrationSource:
    """The embedded server's files, with the DuckDB file where a server leaves it."""
    return MigrationSource(data_dir=data_dir, database_path=data_dir / "memory.duckdb")


async def interrupted(run: Callable[[Progress], Awaitable[object]]) -> list[Step]:
    """Run ``run(progress)``, cancelled once its first committed batch has two entities in;
    the steps it reported."""
    steps: list[Step] = []
    with trio.CancelScope() as scope:

        def interrupt(step: Step) -> None:
            steps.append(step)
            if step.kind == "entities" and step.done >= 2:
                scope.cancel()

        await run(interrupt)
    assert scope.cancelled_caught
    return steps


@contextlib.asynccontextmanager
async def open_data_dir(data_dir: Path) -> AsyncIterator[Backend]:
    """A new embedded data_dir and its store, as a server opens them."""
    await trio.to_thread.run_sync(data_dir.mkdir)
    async with open_store(data_dir / "memory.duckdb", migrations=embedded_migrations()) as store:
        yield store


async def search_all(memory: MemoryService, queries: Sequence[str]) -> Searches:
    return {
        query: await memory.search(query, limit=10, agent="keeper", exact=True) for query in queries
    }


async def fill_memory(store: Backend, embedder: Embedder, queries: Sequence[str]) -> Searches:
    """:data:`ENTITIES` and :data:`RELATIONS` in ``store``; the searches to compare against."""
    async with trio.open_nursery() as nursery:
        sql = postgres_sql if store.dialect == "postgres" else None
        service = MemoryService(store, embedder, sql=sql) if sql else MemoryService(store, embedder)
        memory: MemoryService = await nursery.start(service.run)
        await memory.create_entities(ENTITIES)
        for relation in RELATIONS:
            await memory.create_relation(relation)
        searches = await search_all(memory, queries)
        nursery.cancel_scope.cancel()
    return searches


async def fill_data_dir(data_dir: Path, embedder: Embedder, queries: Sequence[str]) -> Searches:
    """An embedded data_dir holding only the memory, as a server leaves it; the searches to
    compare against."""
    async with open_data_dir(data_dir) as store:
        return await fill_memory(store, embedder, queries)


async def check_memory(memory: MemoryService, before: Searches) -> None:
    """``memory`` answers ``before``'s queries as the source did (the HNSW path and the exact
    scan alike, with the same similarities), and holds the relations."""
    for exact in (True, False):
        for query, hits in before.items():
            after = await memory.search(query, limit=10, agent="keeper", exact=exact)
            assert [h.entity.name for h in after] == [h.entity.name for h in hits]
            for old, new in zip(hits, after, strict=True):
                assert abs(old.similarity - new.similarity) < 1e-4
                assert new.entity == old.entity
    graph = await memory.graph("Ada", max_depth=1)
    assert {(e.source, e.target, e.relation_type) for e in graph.edges} == {
        (r.source, r.target, r.relation_type) for r in RELATIONS
    }
    assert {e.target: e.strength for e in graph.edges}["Whiskers"] == 0.9
