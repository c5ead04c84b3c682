"""The entity cache in front of reads by name: bounded, least recently used out, and never
holding rows older than the last write that touched them."""

from __future__ import annotations

import datetime as dt

import pytest

from caxton.memory import NewEntity
from caxton.memory.entity_cache import EntityCache, entity_bytes
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
