"""Group commit of entity writes (issue #21), on every backend: concurrent creators share
transactions, and each still gets its own outcome (``memory`` is ``backend_memory``)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio

from caxton.memory import MemoryLimitExceeded, NewEntity
from caxton.memory import service as service_module
from caxton.memory.transfer import ImportData

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

pytestmark = pytest.mark.trio


@pytest.fixture
def memory(backend_memory):
    return backend_memory


def note(name: str, text: str) -> NewEntity:
    return NewEntity(name=name, entity_type="note", observations=[text])


async def create_held_after_planning(
    memory, entity: NewEntity, meanwhile: Callable[[], Awaitable[None]]
) -> None:
    """Create ``entity``, holding its write between the plan and the embedding until
    ``meanwhile()`` has run."""
    planned = trio.Event()
    release = trio.Event()
    embed = memory.embedder.embed
    text = entity.observations[0]

    async def held_embed(texts, **kwargs):
        if any(text in t for t in texts) and not release.is_set():
            planned.set()
            await release.wait()
        return await embed(texts, **kwargs)

    memory.embedder.embed = held_embed
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(memory.create_entity, entity)
                await planned.wait()
                await meanwhile()
                release.set()
    finally:
        del memory.embedder.embed


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

    async def meanwhile() -> None:  # the create planned a merge into the old entity
        await memory.delete_entity("fragile")

    await create_held_after_planning(memory, note("fragile", "new observation"), meanwhile)
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


async def test_a_create_reads_its_entities_only_where_the_mirror_cannot_answer(memory):
    counting = CountingSQL(memory.sql)
    memory.sql = counting
    try:
        await memory.create_entity(note("lone", "a lone write"))
        reads_new = counting.reads
        await memory.create_entity(note("lone", "a merge"))
        reads_merge = counting.reads - reads_new
    finally:
        memory.sql = counting.sql
    assert (await memory.get_entity("lone")).observations == ("a lone write", "a merge")
    if memory.store.shared:
        # Other instances may write meanwhile: the plan's read, and again in the write.
        assert (reads_new, reads_merge) == (2, 2)
    elif memory.accelerator:
        # The mirror holds every stored name: a new one needs no read; a merge's old state is
        # what the first write put in the entity cache.
        assert (reads_new, reads_merge) == (0, 0)
    else:
        assert (reads_new, reads_merge) == (1, 0)


async def test_a_name_created_elsewhere_while_a_create_plans_is_merged_into(memory):
    """The plan found no entity (through the mirror where there is one); an import created it
    before the write: the write sees that, plans again and merges."""

    async def meanwhile() -> None:  # the create planned a new entity
        data = ImportData(entities=(note("contested", "from the import"),), relations=())
        await memory.import_data(data)

    await create_held_after_planning(memory, note("contested", "from the create"), meanwhile)
    stored = await memory.get_entity("contested")
    assert stored.observations == ("from the import", "from the create")
    assert memory.statistics().entity_count == 1


async def test_a_committed_entity_is_found_before_the_mirror_has_followed(memory):
    """Between a commit and the accelerator following it the mirror lacks the new name: a
    read then goes to the store."""
    committed = trio.Event()
    release = trio.Event()
    accelerator = memory._accelerator
    follow = accelerator.follow

    async def held_follow(**kwargs):
        committed.set()
        await release.wait()
        await follow(**kwargs)

    accelerator.follow = held_follow
    try:
        with trio.fail_after(60):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(memory.create_entity, note("early", "committed, not followed"))
                await committed.wait()
                found = await memory.get_entity("early")
                release.set()
    finally:
        del accelerator.follow
    assert found.observations == ("committed, not followed",)
    assert (await memory.search("committed, not followed", limit=1))[0].entity.name == "early"


async def test_the_change_log_forgets_by_treating_every_older_plan_as_stale(memory, monkeypatch):
    monkeypatch.setattr(service_module, "CHANGE_LOG_NAMES", 3)
    epoch = memory._entity_epoch
    memory._entity_epoch += 1
    memory._note_changed(["a", "b"])
    assert memory._changed_since(["a"], epoch)
    assert not memory._changed_since(["c"], epoch)
    memory._entity_epoch += 1
    memory._note_changed(["c", "d"])  # past the log's size: forgotten, all count as changed
    assert memory._changed_since(["z"], epoch + 1)
    assert not memory._changed_since(["z"], memory._entity_epoch)
    memory._entity_epoch += 1
    memory._note_changed(None)  # any entity
    assert memory._changed_since(["y"], memory._entity_epoch - 1)
