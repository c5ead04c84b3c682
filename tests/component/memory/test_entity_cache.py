"""The entity cache in front of reads by name: bounded, least recently used out, and never
holding rows older than the last write that touched them."""

from __future__ import annotations

import datetime as dt
import functools
import threading

import attrs
import pytest
import trio

from caxton.memory import MemoryService, NewEntity, queries
from caxton.memory.entity_cache import EntityCache, entity_bytes
from caxton.memory.sql_shared import as_read
from caxton.memory.types import Entity, Scope

STAMP = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def entity(name: str, text: str = "an observation") -> Entity:
    return Entity(
        name=name,
        entity_type="note",
        observations=(text,),
        scope=Scope.GLOBAL,
        agent=None,
        metadata={},
        created_at=STAMP,
        updated_at=STAMP,
    )


def test_lookup_splits_hits_from_misses_and_counts_them():
    cache = EntityCache()
    cache.put({"a": entity("a"), "b": entity("b")}, read_at=cache.generation)
    found, missing = cache.lookup(["a", "x", "b"])
    assert sorted(found) == ["a", "b"]
    assert missing == ["x"]
    assert (cache.hits, cache.misses) == (2, 1)


def test_the_byte_bound_evicts_the_least_recently_used():
    one = entity_bytes(entity("e0", "x" * 100))
    cache = EntityCache(max_bytes=3 * one)
    for i in range(3):
        cache.put({f"e{i}": entity(f"e{i}", "x" * 100)}, read_at=cache.generation)
    cache.lookup(["e0"])  # e0 is now the most recent; e1 is the oldest
    cache.put({"e3": entity("e3", "x" * 100)}, read_at=cache.generation)
    assert len(cache) == 3
    assert cache.nbytes <= cache.max_bytes
    _, missing = cache.lookup(["e0", "e1", "e2", "e3"])
    assert missing == ["e1"]
    # An entity bigger than the whole cache is not kept (and evicts nothing).
    cache.put({"huge": entity("huge", "y" * 10 * one)}, read_at=cache.generation)
    assert "huge" not in cache.lookup(["huge"])[0]
    assert len(cache) == 3


def test_a_read_that_straddles_a_write_keeps_nothing():
    cache = EntityCache()
    cache.put({"a": entity("a", "old")}, read_at=cache.generation)
    read_at = cache.generation  # a read of "b" begins...
    cache.invalidate(["a"])  # ...a write commits meanwhile...
    cache.put({"b": entity("b", "maybe old")}, read_at=read_at)  # ...and the read ends
    found, missing = cache.lookup(["a", "b"])
    assert found == {}
    assert missing == ["a", "b"]
    cache.put({"a": entity("a", "new")}, read_at=cache.generation)
    cache.invalidate()
    assert cache.lookup(["a"])[1] == ["a"]
    assert cache.nbytes == 0


def test_a_zero_byte_cache_keeps_nothing():
    cache = EntityCache(max_bytes=0)
    cache.put({"a": entity("a")}, read_at=cache.generation)
    assert len(cache) == 0
    with pytest.raises(ValueError, match="negative"):
        EntityCache(max_bytes=-1)


@pytest.mark.trio
async def test_searches_and_reads_see_every_write_at_once(memory):
    # Read twice (the second from the cache), then change the entity every way a write can:
    # each read afterwards must show the change, never the cached row.
    await memory.create_entity(NewEntity(name="Rex", entity_type="pet", observations=["a dog"]))
    for _ in range(2):
        assert (await memory.get_entity("Rex")).observations == ("a dog",)
        hits = await memory.search("a dog", limit=1)
        assert hits[0].entity.observations == ("a dog",)
    await memory.add_observations("Rex", ["barks at the postman"])
    assert (await memory.get_entity("Rex")).observations == ("a dog", "barks at the postman")
    hits = await memory.search("a dog", limit=1)
    assert hits[0].entity.observations == ("a dog", "barks at the postman")
    await memory.create_entity(
        NewEntity(name="Rex", entity_type="pet", observations=["sleeps all day"])
    )
    assert "sleeps all day" in (await memory.get_entity("Rex")).observations
    await memory.delete_entity("Rex")
    assert await memory.search("a dog", limit=1) == []
    with pytest.raises(Exception, match="does not exist"):
        await memory.get_entity("Rex")


def test_a_fill_goes_behind_what_reads_put_and_stops_at_the_bound():
    one = entity_bytes(entity("read"))  # the largest of them
    cache = EntityCache(max_bytes=4 * one)
    cache.put({"read": entity("read")}, read_at=cache.generation)
    cache.start_fill()
    # best first: f0 is the most recently updated; "read" is held already (kept as read);
    # f3 is the first that does not fit, and nothing after it is taken
    assert not cache.fill([entity(n) for n in ("f0", "read", "f1", "f2", "f3", "f4")])
    cache.end_fill()
    assert len(cache) == 4
    assert cache.nbytes <= cache.max_bytes
    # What a read puts evicts the fill's entries first, the least recently updated first.
    cache.put({"new": entity("new")}, read_at=cache.generation)
    found, missing = cache.lookup(["new", "read", "f0", "f1", "f2", "f3", "f4"])
    assert missing == ["f2", "f3", "f4"]
    assert found["read"].observations == ("an observation",)
    # Outside a fill, fill() adds nothing.
    assert not cache.fill([entity("late")])
    assert cache.lookup(["late"])[1] == ["late"]


def test_a_fill_skips_what_was_written_since_it_began():
    cache = EntityCache()
    cache.start_fill()
    # the fill's read begins; meanwhile a write commits "a" and invalidates it
    cache.invalidate(["a"])
    assert cache.fill([entity("a", "as read before the write"), entity("b")])
    assert cache.lookup(["a", "b"]) == ({"b": entity("b")}, ["a"])
    # A full invalidation (a rebuild) spoils the fill: it stops and adds nothing more.
    cache.invalidate()
    assert not cache.fill([entity("c")])
    cache.end_fill()
    assert len(cache) == 0


def counting_reads(store):
    """Count the store calls a read makes (patched onto ``store``; ``del`` them to undo)."""
    calls = []
    real_execute_fn, real_read_statements = store.execute_fn, store.read_statements

    async def execute_fn(fn):
        calls.append(fn)
        return await real_execute_fn(fn)

    async def read_statements(fns):
        calls.append(fns)
        return await real_read_statements(fns)

    store.execute_fn, store.read_statements = execute_fn, read_statements
    return calls


@pytest.mark.trio
async def test_a_restarted_service_fills_the_cache_with_the_most_recent_entities(store, embedder):
    async with trio.open_nursery() as first:
        memory = await first.start(MemoryService(store, embedder).run)
        for i in range(12):  # one at a time: each later one updated later
            await memory.create_entity(
                NewEntity(name=f"e{i:02d}", entity_type="note", observations=[f"note {i}"])
            )
        await memory.add_observations("e00", ["updated last"])
        first.cancel_scope.cancel()
    one = entity_bytes(entity("e00", "note 00"))
    async with trio.open_nursery() as second:
        bound = 5 * one + one // 2  # room for five
        memory = await second.start(MemoryService(store, embedder, entity_cache_bytes=bound).run)
        await memory.wait_entity_cache()
        figures = memory.statistics()
        assert figures.entity_cache_entries == 5
        assert not figures.entity_cache_filling
        assert 0 < figures.entity_cache_bytes <= bound
        calls = counting_reads(store)
        try:
            for name in ("e00", "e11", "e10", "e09", "e08"):  # the five updated last
                await memory.get_entity(name)
            assert calls == []
            assert (await memory.get_entity("e00")).observations == ("note 0", "updated last")
            await memory.get_entity("e07")
            assert len(calls) == 1
        finally:
            del store.execute_fn, store.read_statements
        second.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_write_while_the_cache_fills_is_not_hidden_by_it(store, embedder):
    read_done, release = threading.Event(), threading.Event()

    class HeldFill:
        """The DuckDB memory SQL, but the fill's read waits, once it has read, for a
        write to commit before the fill takes what it read."""

        def __getattr__(self, name):
            return getattr(queries, name)

        @staticmethod
        def recent_entities(conn, max_bytes):
            found = queries.recent_entities(conn, max_bytes)
            read_done.set()
            release.wait(timeout=30)
            return found

    async with trio.open_nursery() as first:
        memory = await first.start(MemoryService(store, embedder).run)
        await memory.create_entity(NewEntity(name="Rex", entity_type="pet", observations=["a dog"]))
        first.cancel_scope.cancel()
    async with trio.open_nursery() as second:
        memory = await second.start(MemoryService(store, embedder, sql=HeldFill()).run)
        await trio.to_thread.run_sync(read_done.wait, 30)
        assert memory.statistics().entity_cache_filling
        await memory.add_observations("Rex", ["barks"])  # commits while the fill holds "a dog"
        release.set()
        await memory.wait_entity_cache()
        assert (await memory.get_entity("Rex")).observations == ("a dog", "barks")
        hits = await memory.search("a dog", limit=1)
        assert hits[0].entity.observations == ("a dog", "barks")
        second.cancel_scope.cancel()


@pytest.mark.trio
async def test_a_cache_of_no_bytes_is_not_filled(store, embedder):
    memory = MemoryService(store, embedder, entity_cache_bytes=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(memory.run)
        await memory.create_entity(NewEntity(name="Rex", entity_type="pet", observations=["a dog"]))
        await memory.rebuild_index()
        with trio.fail_after(5):
            await memory.wait_entity_cache()
        assert memory.statistics().entity_cache_entries == 0
        nursery.cancel_scope.cancel()


def as_json(found):
    """Entities as the API would render them (times with their offsets)."""
    return {
        name: {**attrs.asdict(e), "created_at": e.created_at.isoformat(),
               "updated_at": e.updated_at.isoformat()}
        for name, e in found.items()
    }  # fmt: skip


def test_an_entity_as_read_has_utc_times_and_its_metadata_as_json_reads():
    east = dt.timezone(dt.timedelta(hours=2))
    written = attrs.evolve(
        entity("a"),
        observations=["one", "two"],
        metadata={"t": (1, 2), "n": 1.0},
        created_at=dt.datetime(2026, 12, 1, 14, 0, tzinfo=east),
    )
    read = as_read(written)
    assert read.observations == ("one", "two")
    assert read.metadata == {"t": [1, 2], "n": 1.0}
    assert read.created_at.isoformat() == "2026-12-01T12:00:00+00:00"


@pytest.mark.trio
async def test_what_a_write_commits_is_cached_as_a_read_gives_it(memory):
    await memory.create_entities(
        [
            NewEntity(
                name="Rex",
                entity_type="pet",
                observations=["a dog", "ünïcödé 🐕"],
                metadata={"age": 3, "weight": 12.5, "tags": ["x", {"deep": None}], "é": "ß"},
            ),
            NewEntity(name="Tom", entity_type="pet", observations=["a cat"]),
        ]
    )
    await memory.add_observations("Tom", ["purrs"])
    calls = counting_reads(memory.store)
    try:
        cached = {name: await memory.get_entity(name) for name in ("Rex", "Tom")}
        assert calls == []  # both from the cache: the writes put them there
    finally:
        del memory.store.execute_fn, memory.store.read_statements
    stored = await memory.store.execute_fn(
        functools.partial(memory.sql.fetch_entities, names=["Rex", "Tom"])
    )
    assert as_json(cached) == as_json(stored)
    assert cached["Tom"].observations == ("a cat", "purrs")
