"""Concurrent reads of entities by name on PostgreSQL sharing statements
(caxton.memory.read_batches, issue #21), against a real PostgreSQL and the real model."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from caxton.errors import ServiceUnavailable
from caxton.memory import MEMORY_POSTGRES_MIGRATIONS, MemoryService, NewEntity, postgres_sql
from caxton.memory.read_batches import ReadBatcher
from caxton.store.postgres import PostgresStore

pytestmark = pytest.mark.trio

STORED = [f"stored-{i}" for i in range(12)]


async def start_memory(nursery: trio.Nursery, url: str, embedder: object) -> MemoryService:
    store = await nursery.start(PostgresStore(url, migrations=MEMORY_POSTGRES_MIGRATIONS).run)
    memory: MemoryService = await nursery.start(
        MemoryService(store, embedder, sql=postgres_sql).run
    )
    await memory.create_entities(
        [
            NewEntity(name=name, entity_type="note", observations=[f"{name} one", f"{name} two"])
            for name in STORED
        ]
    )
    return memory


class GatedFetch:
    """The service's own read by name, but each call waits for ``gate`` when it is closed,
    and raises ``fail_with`` (once) when set."""

    def __init__(self, memory: MemoryService) -> None:
        self.memory = memory
        self.gate = trio.Event()
        self.calls: list[list[str]] = []
        self.fail_with: BaseException | None = None

    async def __call__(self, names):  # type: ignore[no-untyped-def]
        self.calls.append(list(names))
        await self.gate.wait()
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        return await self.memory._fetch_entities(names)


def asks(i: int) -> list[str]:
    """Caller i's names: two stored ones and one that is not."""
    return [STORED[i % len(STORED)], STORED[(i + 5) % len(STORED)], f"absent-{i}"]


async def test_a_lone_read_goes_at_once_with_its_own_names(nursery, postgres_url, embedder):
    memory = await start_memory(nursery, postgres_url, embedder)
    fetch = GatedFetch(memory)
    fetch.gate.set()
    batcher = ReadBatcher(fetch)
    found = await batcher.read(["stored-1", "absent"])
    assert fetch.calls == [["stored-1", "absent"]]
    assert list(found) == ["stored-1"]
    assert found["stored-1"].observations == ("stored-1 one", "stored-1 two")


async def test_callers_waiting_together_share_one_read_and_get_their_own(
    nursery, postgres_url, embedder
):
    memory = await start_memory(nursery, postgres_url, embedder)
    fetch = GatedFetch(memory)
    batcher = ReadBatcher(fetch, slots=1)
    results: dict[int, dict[str, object]] = {}

    async def call(i: int) -> None:
        results[i] = await batcher.read(asks(i))

    async with trio.open_nursery() as callers:
        callers.start_soon(call, 0)  # takes the one slot, held at the gate
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 10):
            callers.start_soon(call, i)
        await trio.testing.wait_all_tasks_blocked()
        fetch.gate.set()
    assert len(fetch.calls) == 2  # the first alone, then the nine together
    assert set(fetch.calls[1]) == {name for i in range(1, 10) for name in asks(i)}
    for i in range(10):
        alone = await memory._fetch_entities(asks(i))
        assert results[i] == alone
        assert sorted(results[i]) == sorted(asks(i)[:2])
    assert (batcher.reads, batcher.callers) == (2, 10)


async def test_a_failed_read_fails_its_callers_only(nursery, postgres_url, embedder):
    memory = await start_memory(nursery, postgres_url, embedder)
    fetch = GatedFetch(memory)
    batcher = ReadBatcher(fetch, slots=1)
    outcomes: dict[int, object] = {}

    async def call(i: int) -> None:
        try:
            outcomes[i] = sorted(await batcher.read(asks(i)))
        except ServiceUnavailable as exc:
            outcomes[i] = exc

    async with trio.open_nursery() as callers:
        fetch.fail_with = ServiceUnavailable("the store went away")
        callers.start_soon(call, 0)  # its read fails
        await trio.testing.wait_all_tasks_blocked()
        callers.start_soon(call, 1)  # waits for the slot
        callers.start_soon(call, 2)
        await trio.testing.wait_all_tasks_blocked()
        fetch.gate.set()
    assert isinstance(outcomes[0], ServiceUnavailable)
    assert outcomes[1] == sorted(asks(1)[:2])
    assert outcomes[2] == sorted(asks(2)[:2])


async def test_cancelled_callers_leave_and_the_others_get_their_entities(
    nursery, postgres_url, embedder
):
    """A caller waiting in a read is cancelled; the caller that would send the next read is
    cancelled before it starts: the rest still get what they asked for."""
    memory = await start_memory(nursery, postgres_url, embedder)
    fetch = GatedFetch(memory)
    batcher = ReadBatcher(fetch, slots=1)
    scopes = [trio.CancelScope() for _ in range(5)]
    results: dict[int, list[str]] = {}

    async def call(i: int) -> None:
        with scopes[i]:
            results[i] = sorted(await batcher.read(asks(i)))

    async with trio.open_nursery() as callers:
        callers.start_soon(call, 0)  # holds the slot at the gate
        await trio.testing.wait_all_tasks_blocked()
        callers.start_soon(call, 1)  # would send the next read: waits for the slot
        await trio.testing.wait_all_tasks_blocked()
        for i in (2, 3, 4):  # join its read
            callers.start_soon(call, i)
        await trio.testing.wait_all_tasks_blocked()
        scopes[1].cancel()
        scopes[3].cancel()
        await trio.testing.wait_all_tasks_blocked()
        fetch.gate.set()
    assert sorted(results) == [0, 2, 4]
    for i in (0, 2, 4):
        assert results[i] == sorted(asks(i)[:2])


async def test_a_read_asks_for_at_most_max_names(nursery, postgres_url, embedder):
    memory = await start_memory(nursery, postgres_url, embedder)
    fetch = GatedFetch(memory)
    batcher = ReadBatcher(fetch, slots=1, max_names=7)
    results: dict[int, list[str]] = {}

    async def call(i: int) -> None:
        results[i] = sorted(await batcher.read(asks(i)))

    async with trio.open_nursery() as callers:
        callers.start_soon(call, 0)
        await trio.testing.wait_all_tasks_blocked()
        for i in range(1, 7):  # 18 names: three reads of at most 7 (two callers each)
            callers.start_soon(call, i)
        await trio.testing.wait_all_tasks_blocked()
        fetch.gate.set()
    assert [len(names) for names in fetch.calls] == [3, 6, 6, 6]
    assert all(results[i] == sorted(asks(i)[:2]) for i in range(7))


async def test_concurrent_writes_on_postgres_read_their_plans_together(
    nursery, postgres_url, embedder
):
    """Entity writes through the service: merges into stored entities and new ones, 24 at
    once; each gets its own entity, and their plans took fewer reads than writers."""
    memory = await start_memory(nursery, postgres_url, embedder)
    batcher = memory._read_batcher
    assert batcher is not None
    before = (batcher.reads, batcher.callers)
    results: dict[int, object] = {}

    async def write(i: int) -> None:
        name = STORED[i] if i < len(STORED) else f"new-{i}"
        results[i] = await memory.create_entity(
            NewEntity(name=name, entity_type="note", observations=[f"added by {i}"])
        )

    async with trio.open_nursery() as writers:
        for i in range(24):
            writers.start_soon(write, i)
    reads, callers = batcher.reads - before[0], batcher.callers - before[1]
    assert callers == 24
    assert reads < callers
    for i in range(24):
        entity = results[i]
        expected = (
            (f"{STORED[i]} one", f"{STORED[i]} two", f"added by {i}")
            if i < len(STORED)
            else (f"added by {i}",)
        )
        assert entity.observations == expected  # type: ignore[attr-defined]
        assert (await memory.get_entity(entity.name)).observations == expected  # type: ignore[attr-defined]
