"""Group commit of entity writes (issue #21), on every backend: concurrent creators share
transactions, and each still gets its own outcome (``memory`` is ``backend_memory``)."""

from __future__ import annotations

import pytest
import trio

from caxton.memory import MemoryLimitExceeded, NewEntity

pytestmark = pytest.mark.trio


@pytest.fixture
def memory(backend_memory):
    return backend_memory


def note(name: str, text: str) -> NewEntity:
    return NewEntity(name=name, entity_type="note", observations=[text])


async def test_concurrent_creators_share_commits_and_all_land(memory):
    writes_before = memory.store.statistics().writes_total
    created = {}

    async def create(i: int) -> None:
        created[i] = await memory.create_entity(note(f"n{i}", f"note {i} about topic {i % 4}"))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(16):
                nursery.start_soon(create, i)
    assert sorted(created) == list(range(16))
    assert all(created[i].name == f"n{i}" for i in range(16))
    for i in (0, 7, 15):
        assert (await memory.get_entity(f"n{i}")).observations == (f"note {i} about topic {i % 4}",)
        hits = await memory.search(f"note {i} about topic {i % 4}", limit=1)
        assert hits[0].entity.name == f"n{i}"
    assert memory.statistics().entity_count == 16
    # Sixteen creators, far fewer transactions.
    assert memory.store.statistics().writes_total - writes_before <= 8


async def test_a_full_memory_refuses_only_the_writes_that_do_not_fit(backend, nursery, embedder):
    memory = await backend.start_memory(nursery, embedder, max_entities=10)
    outcomes: dict[int, object] = {}

    async def create(i: int) -> None:
        try:
            outcomes[i] = await memory.create_entity(note(f"e{i}", f"entry {i}"))
        except MemoryLimitExceeded as exc:
            outcomes[i] = exc

    with trio.fail_after(60):
        async with trio.open_nursery() as group:
            for i in range(16):
                group.start_soon(create, i)
    refused = [i for i, o in outcomes.items() if isinstance(o, MemoryLimitExceeded)]
    assert len(refused) == 6
    assert memory.statistics().entity_count == 10
    for i in refused:
        with pytest.raises(Exception, match="does not exist"):
            await memory.get_entity(f"e{i}")


async def test_creators_of_the_same_name_merge_instead_of_overwriting(memory):
    async def create(i: int) -> None:
        await memory.create_entity(note("shared", f"observation {i}"))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(6):
                nursery.start_soon(create, i)
    stored = await memory.get_entity("shared")
    assert sorted(stored.observations) == [f"observation {i}" for i in range(6)]
    assert memory.statistics().entity_count == 1
    assert memory._name_locks == {}  # the per-name locks go with their last writer


async def test_a_cancelled_creator_leaves_the_others_group_alone(memory):
    cancelled = trio.CancelScope()
    done: list[str] = []

    async def create(name: str) -> None:
        await memory.create_entity(note(name, f"text of {name}"))
        done.append(name)

    async def impatient() -> None:
        with cancelled:
            await memory.create_entity(note("impatient", "text of the impatient one"))
            done.append("impatient")

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(create, f"c{i}")
            nursery.start_soon(impatient)
            await trio.sleep(0)  # noqa: ASYNC115 - the creators start; none has written yet
            cancelled.cancel()
    assert sorted(done) == sorted(f"c{i}" for i in range(8))
    for i in range(8):
        assert (await memory.get_entity(f"c{i}")).name == f"c{i}"
    # Cancelled before its write was queued: nothing of it was written, and no half of it.
    with pytest.raises(Exception, match="does not exist"):
        await memory.get_entity("impatient")
    assert memory.statistics().entity_count == 8


async def test_a_delete_while_a_create_plans_is_not_undone_by_the_stale_plan(memory):
    await memory.create_entity(note("fragile", "old observation"))
    planned = trio.Event()
    release = trio.Event()
    embed = memory.embedder.embed

    async def held_embed(texts, **kwargs):
        if any("new observation" in text for text in texts) and not release.is_set():
            planned.set()
            await release.wait()
        return await embed(texts, **kwargs)

    memory.embedder.embed = held_embed
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(memory.create_entity, note("fragile", "new observation"))
                await planned.wait()  # planned as a merge into the old entity
                await memory.delete_entity("fragile")
                release.set()
    finally:
        del memory.embedder.embed
    # The merge was planned on an entity deleted since: re-planned, not resurrected.
    assert (await memory.get_entity("fragile")).observations == ("new observation",)


class CountingSQL:
    """The service's SQL dialect, counting the entity reads."""

    def __init__(self, sql) -> None:
        self.sql = sql
        self.reads = 0

    def __getattr__(self, name):
        return getattr(self.sql, name)

    def fetch_entities(self, conn, names):
        self.reads += 1
        return self.sql.fetch_entities(conn, names)

    def entity_reads(self, names):
        """Counted once, whether its parts run side by side or together."""
        self.reads += 1
        return self.sql.entity_reads(names)


async def test_a_lone_create_reads_its_entities_once_unless_the_store_is_shared(memory):
    counting = CountingSQL(memory.sql)
    memory.sql = counting
    try:
        await memory.create_entity(note("lone", "a lone write"))
    finally:
        memory.sql = counting.sql
    # The plan's read; a shared store's other instances may write meanwhile, so the write
    # reads again there.
    assert counting.reads == (2 if memory.store.shared else 1)
