"""The search accelerator on its own, over a real DuckDB store with made-up vectors.

No embedder: the rows are written straight through the memory queries, so these tests show the
accelerator's lifecycle (reload, follow, fallback to DuckDB's exact scan) by itself.
"""

from __future__ import annotations

import datetime as dt

import numpy as np
import pytest
import trio
import trio.testing

from caxton.memory import EMBEDDING_DIM, Entity, Scope, queries
from caxton.memory.accelerator import SearchAccelerator

pytestmark = pytest.mark.trio

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


def entity(name: str, *, scope: Scope = Scope.GLOBAL, agent: str | None = None) -> Entity:
    return Entity(
        name=name,
        entity_type="thing",
        observations=(f"{name} is a thing",),
        scope=scope,
        agent=agent,
        metadata={},
        created_at=NOW,
        updated_at=NOW,
    )


def vectors(count: int, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((count, EMBEDDING_DIM)).astype(np.float32)


ALL = {"limit": 10, "min_similarity": -1.0, "scope": None, "agent": None, "entity_types": None}


async def write(store, entities, matrix) -> None:
    await store.execute_write_fn(lambda c: queries.write_entities(c, entities, matrix))


async def loaded_accelerator(nursery, store, count: int):
    """``count`` entities ``e0``... written, and a running accelerator (no graph) loaded with
    them; returns the accelerator, the entities and their vectors."""
    rows = [entity(f"e{i}") for i in range(count)]
    matrix = vectors(count)
    await write(store, rows, matrix)
    accelerator = SearchAccelerator(store, EMBEDDING_DIM, hnsw_threshold=None)
    await nursery.start(accelerator.run)
    await accelerator.reload()
    return accelerator, rows, matrix


async def test_mirror_answers_as_the_exact_scan_and_follows_writes(nursery, store):
    with trio.fail_after(30):
        rows = [entity(f"e{i}") for i in range(20)] + [
            entity("mine", scope=Scope.AGENT, agent="helper")
        ]
        matrix = vectors(len(rows))
        await write(store, rows, matrix)
        accelerator = SearchAccelerator(store, EMBEDDING_DIM, hnsw_threshold=None)
        await nursery.start(accelerator.run)
        assert not accelerator.ready
        assert await accelerator.reload() == len(rows)
        assert accelerator.ready
        assert accelerator.statistics().index_rows == len(rows)

        query = matrix[3]
        mirror = await accelerator.rank(query, **ALL)
        exact = await accelerator.rank(query, exact=True, **ALL)
        assert [n for n, _ in mirror] == [n for n, _ in exact]
        assert mirror[0][0] == "e3"
        assert "mine" not in {n for n, _ in mirror}
        helper = await accelerator.rank(matrix[-1], **{**ALL, "agent": "helper"})
        assert helper[0][0] == "mine"

        # A committed write reaches the mirror through follow().
        extra = [entity("late")]
        late = vectors(1, seed=99)
        await write(store, extra, late)
        await accelerator.follow(upsert=(extra, late), remove=["e3"])
        found = {n for n, _ in await accelerator.rank(late[0], **{**ALL, "limit": 30})}
        assert "late" in found
        assert "e3" not in found
        assert accelerator.statistics().index_rows == len(rows)


async def test_a_failed_follow_falls_back_to_the_exact_scan_until_reload(nursery, store):
    with trio.fail_after(30):
        accelerator, rows, matrix = await loaded_accelerator(nursery, store, 5)

        # Two entities but one vector: the mirror refuses the write and stops answering.
        await accelerator.follow(upsert=(rows[:2], matrix[:1]))
        assert not accelerator.ready
        hits = await accelerator.rank(matrix[2], **ALL)
        assert hits[0][0] == "e2"
        assert len(hits) == len(rows)

        await accelerator.reload()
        assert accelerator.ready


async def test_a_disabled_accelerator_always_takes_the_exact_scan(nursery, store):
    with trio.fail_after(30):
        rows = [entity(f"e{i}") for i in range(4)]
        matrix = vectors(len(rows))
        await write(store, rows, matrix)
        accelerator = SearchAccelerator(store, EMBEDDING_DIM, enabled=False)
        await nursery.start(accelerator.run)
        assert await accelerator.reload() == len(rows)
        assert not accelerator.ready
        stats = accelerator.statistics()
        assert (stats.accelerator_enabled, stats.index_rows) == (False, 0)
        hits = await accelerator.rank(matrix[1], **ALL)
        assert hits[0][0] == "e1"


async def test_embeddings_round_trip_through_duckdb_bit_for_bit(store):
    """The embeddings go to DuckDB as text literals: every float32 comes back as it went,
    the extremes and negative zero among them."""
    matrix = vectors(3)
    info = np.finfo(np.float32)
    matrix[0, :4] = [info.max, info.tiny, info.smallest_subnormal, -0.0]
    matrix[1, :3] = [np.nextafter(np.float32(1), np.float32(2)), 0.1, -info.eps]
    names = ["extremes", "near-one", "plain"]
    await write(store, [entity(name) for name in names], matrix)
    rows = await store.execute_fn(
        lambda c: c.execute(
            "SELECT entity, embedding FROM memory_embeddings ORDER BY entity"
        ).fetchall()
    )
    stored = {name: np.asarray(vector, dtype=np.float32) for name, vector in rows}
    for i, name in enumerate(names):
        assert stored[name].tobytes() == matrix[i].tobytes(), name


async def test_a_small_mirror_is_searched_on_the_event_loop_but_never_beside_a_change(
    nursery, store, monkeypatch
):
    """Up to INLINE_SEARCH_ROWS rows a search skips the worker thread (same hits as the thread
    path); it still waits for whatever holds the mirror's limiter, a write or a build."""
    from caxton.memory import accelerator as accelerator_module

    with trio.fail_after(30):
        accelerator, rows, matrix = await loaded_accelerator(nursery, store, 30)
        threads = 0
        run_sync = trio.to_thread.run_sync

        async def counted(*args, **kwargs):
            nonlocal threads
            threads += 1
            return await run_sync(*args, **kwargs)

        monkeypatch.setattr(accelerator_module.trio.to_thread, "run_sync", counted)
        inline = await accelerator.rank(matrix[3], **ALL)
        assert (inline[0][0], threads) == ("e3", 0)
        monkeypatch.setattr(accelerator_module, "INLINE_SEARCH_ROWS", len(rows) - 1)
        assert await accelerator.rank(matrix[3], **ALL) == inline
        assert threads == 1
        monkeypatch.setattr(accelerator_module, "INLINE_SEARCH_ROWS", len(rows))

        found: list[list[tuple[str, float]]] = []

        async def search() -> None:
            found.append(await accelerator.rank(matrix[5], **ALL))

        async with accelerator._index_limiter:  # as a write applying to the mirror holds it
            nursery.start_soon(search)
            await trio.testing.wait_all_tasks_blocked()
            assert found == []
        await trio.testing.wait_all_tasks_blocked()
        assert found[0][0][0] == "e5"
