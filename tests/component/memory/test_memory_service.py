"""The memory service over the real model, on both backends (a DuckDB file and PostgreSQL).

``memory`` here is ``backend_memory`` (conftest): each test that uses it runs on both, as the
contract of :class:`caxton.memory.MemoryService` whatever the store. The tests of a DuckDB file
itself (reopening it, verifying it) take the DuckDB store directly.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import trio

from caxton.errors import CaxtonError, Conflict, NotFound, ValidationFailed
from caxton.memory import (
    MEMORY_MIGRATIONS,
    Embedder,
    MemoryLimitExceeded,
    MemoryService,
    NewEntity,
    NewRelation,
    Scope,
)
from caxton.memory.entity_cache import entity_bytes
from caxton.memory.model import EMBEDDING_DIM
from caxton.memory.sql_shared import vector_literal
from caxton.memory.validation import MAX_OBSERVATION_BYTES
from caxton.ops.verify import check_database
from caxton.store import open_store

pytestmark = pytest.mark.trio


@pytest.fixture
def memory(backend_memory):
    return backend_memory


def cat() -> NewEntity:
    return NewEntity(
        name="Whiskers",
        entity_type="pet",
        observations=["a small cat that sleeps on the sofa", "likes chasing mice"],
    )


def stocks() -> NewEntity:
    return NewEntity(
        name="NASDAQ",
        entity_type="market",
        observations=["stock exchange where shares are traded", "prices fell sharply"],
    )


def private_note() -> NewEntity:
    return NewEntity(
        name="helper-note",
        entity_type="note",
        observations=["buy cat food on friday"],
        scope="agent",
        agent="helper",
    )


async def test_kitten_on_a_rug_finds_the_cat_first(memory):
    with trio.fail_after(30):
        await memory.create_entities([stocks(), cat()])
        for exact in (False, True):
            hits = await memory.search("a kitten on a rug", limit=2, exact=exact)
            assert [h.entity.name for h in hits] == ["Whiskers", "NASDAQ"]
            assert hits[0].similarity > hits[1].similarity
            assert hits[0].entity.observations == cat().observations


async def test_create_get_and_json_shape(memory):
    with trio.fail_after(30):
        [created] = await memory.create_entities(
            [
                NewEntity(
                    name="Ada",
                    entity_type="person",
                    observations=["wrote the first program"],
                    scope="workspace",
                    metadata={"source": "history"},
                )
            ]
        )
        fetched = await memory.get_entity("Ada")
    assert fetched == created
    body = fetched.to_json()
    assert body["observations"] == ["wrote the first program"]
    assert body["scope"] == "workspace"
    assert body["agent"] is None
    assert body["metadata"] == {"source": "history"}
    assert body["created_at"].endswith("+00:00")
    with pytest.raises(NotFound) as info:
        await memory.get_entity("Nobody")
    assert info.value.http_status == 404


async def test_same_name_same_type_merges_other_type_conflicts(memory):
    with trio.fail_after(30):
        await memory.create_entity(cat())
        merged = await memory.create_entity(
            NewEntity(
                name="Whiskers",
                entity_type="pet",
                observations=["likes chasing mice", "is ginger"],
                metadata={"colour": "ginger"},
            )
        )
        assert merged.observations == (
            "a small cat that sleeps on the sofa",
            "likes chasing mice",
            "is ginger",
        )
        assert merged.metadata == {"colour": "ginger"}
        assert merged.updated_at >= merged.created_at
        with pytest.raises(Conflict) as info:
            await memory.create_entity(NewEntity(name="Whiskers", entity_type="person"))
        assert info.value.http_status == 409
        assert "'pet'" in info.value.message
        with pytest.raises(Conflict):
            await memory.create_entity(
                NewEntity(name="Whiskers", entity_type="pet", scope="agent", agent="helper")
            )
        # Nothing of the refused calls was written.
        assert (await memory.get_entity("Whiskers")).observations == merged.observations


async def test_add_observations_changes_what_search_finds(memory):
    with trio.fail_after(30):
        await memory.create_entities(
            [
                NewEntity(name="Box", entity_type="thing", observations=["a cardboard box"]),
                NewEntity(name="Crate", entity_type="thing", observations=["a wooden crate"]),
            ]
        )
        entity = await memory.add_observations("Crate", ["filled with fresh oranges and lemons"])
        assert entity.observations[-1] == "filled with fresh oranges and lemons"
        for exact in (False, True):
            hits = await memory.search("citrus fruit", limit=1, exact=exact)
            assert hits[0].entity.name == "Crate"
        with pytest.raises(NotFound):
            await memory.add_observations("Nothing", ["x"])
        with pytest.raises(ValidationFailed):
            await memory.add_observations("Crate", [])


async def test_delete_removes_entity_relations_and_search_hits(memory):
    with trio.fail_after(30):
        await memory.create_entities([cat(), stocks()])
        await memory.create_relation(
            NewRelation(source="Whiskers", target="NASDAQ", relation_type="ignores")
        )
        assert await memory.delete_entity("Whiskers") == 1
        with pytest.raises(NotFound):
            await memory.delete_entity("Whiskers")
        for exact in (False, True):
            hits = await memory.search("a kitten on a rug", limit=5, exact=exact)
            assert [h.entity.name for h in hits] == ["NASDAQ"]
        graph = await memory.graph("NASDAQ")
        assert graph.edges == ()
        stats = await memory.stats()
        assert (stats.entity_count, stats.relation_count) == (1, 0)
        assert stats.observation_count == 2


async def test_relations_need_both_ends_and_update_in_place(memory):
    with trio.fail_after(30):
        await memory.create_entities([cat(), stocks()])
        with pytest.raises(NotFound, match="'Ghost'") as info:
            await memory.create_relation(
                NewRelation(source="Whiskers", target="Ghost", relation_type="knows")
            )
        assert info.value.details["end"] == "to"
        first = await memory.create_relation(
            NewRelation(source="Whiskers", target="NASDAQ", relation_type="knows", strength=0.2)
        )
        second = await memory.create_relation(
            NewRelation(source="Whiskers", target="NASDAQ", relation_type="knows", strength=0.9)
        )
        assert second.created_at == first.created_at
        assert second.to_json()["from"] == "Whiskers"
        assert second.to_json()["strength"] == 0.9
        assert (await memory.stats()).relation_count == 1
    with pytest.raises(ValidationFailed, match="strength"):
        NewRelation(source="a", target="b", relation_type="r", strength=1.5)


async def test_graph_walks_both_directions_to_max_depth(memory):
    with trio.fail_after(30):
        names = ["A", "B", "C", "D", "E"]
        await memory.create_entities(
            [NewEntity(name=n, entity_type="node", observations=[f"node {n}"]) for n in names]
        )
        # A -> B -> C <- D -> E
        for source, target in (("A", "B"), ("B", "C"), ("D", "C"), ("D", "E")):
            await memory.create_relation(
                NewRelation(source=source, target=target, relation_type="link", strength=0.5)
            )
        one = await memory.graph("B", max_depth=1)
        assert {(n.name, n.depth) for n in one.nodes} == {("B", 0), ("A", 1), ("C", 1)}
        assert {(e.source, e.target) for e in one.edges} == {("A", "B"), ("B", "C")}
        two = await memory.graph("B", max_depth=2)
        assert {(n.name, n.depth) for n in two.nodes} == {
            ("B", 0),
            ("A", 1),
            ("C", 1),
            ("D", 2),
        }
        full = await memory.graph("A", max_depth=10)
        assert [n.depth for n in full.nodes] == [0, 1, 2, 3, 4]
        assert full.to_json()["root"] == "A"
        assert full.to_json()["nodes"][0] == {
            "name": "A",
            "entity_type": "node",
            "depth": 0,
            "observations": ["node A"],
        }
        assert full.to_json()["edges"][0] == {
            "from": "A",
            "to": "B",
            "relation_type": "link",
            "strength": 0.5,
        }
        with pytest.raises(ValidationFailed, match="max_depth"):
            await memory.graph("A", max_depth=0)
        with pytest.raises(NotFound):
            await memory.graph("Z")


async def test_scopes_and_agent_visibility(memory):
    with trio.fail_after(30):
        await memory.create_entities(
            [
                NewEntity(
                    name="helper-secret",
                    entity_type="note",
                    observations=["the password for the cat flap is meow"],
                    scope=Scope.AGENT,
                    agent="helper",
                ),
                NewEntity(
                    name="team-note",
                    entity_type="note",
                    observations=["the cat flap is broken"],
                    scope="workspace",
                ),
                NewEntity(
                    name="world-fact",
                    entity_type="fact",
                    observations=["cats use cat flaps"],
                    scope="global",
                ),
            ]
        )
        for exact in (False, True):

            async def names(exact=exact, **filters):
                hits = await memory.search("cat flap", limit=10, exact=exact, **filters)
                return {h.entity.name for h in hits}

            assert await names() == {"team-note", "world-fact"}
            assert await names(agent="helper") == {"helper-secret", "team-note", "world-fact"}
            assert await names(agent="other") == {"team-note", "world-fact"}
            assert await names(agent="helper", scope="agent") == {"helper-secret"}
            assert await names(scope="workspace") == {"team-note"}
            assert await names(agent="helper", entity_types=["note"]) == {
                "helper-secret",
                "team-note",
            }
            assert await names(entity_types=["nothing"]) == set()
            assert await names(min_similarity=0.99) == set()
        with pytest.raises(ValidationFailed, match="agent"):
            NewEntity(name="x", entity_type="note", scope="agent")


async def test_bad_input_is_refused_with_the_field_named(memory):
    with pytest.raises(ValidationFailed, match=r"observations\[0\].*must not be empty"):
        NewEntity(name="x", entity_type="t", observations=["   "])
    huge = "x" * (10 * 1024 * 1024)
    with pytest.raises(ValidationFailed, match="32 KiB") as info:
        NewEntity(name="x", entity_type="t", observations=[huge])
    assert info.value.details["limit"] == MAX_OBSERVATION_BYTES
    assert info.value.http_status == 422
    with pytest.raises(ValidationFailed, match="lone surrogate"):
        NewEntity(name="x", entity_type="t", observations=["bad \ud800 text"])
    with pytest.raises(ValidationFailed, match="name: must not be empty"):
        NewEntity(name="", entity_type="t")
    with trio.fail_after(30):
        await memory.create_entity(NewEntity(name="x", entity_type="t", observations=["ok"]))
        with pytest.raises(ValidationFailed, match="not valid UTF-8"):
            await memory.add_observations("x", [b"caf\xe9"])
        with pytest.raises(ValidationFailed, match="32 KiB"):
            await memory.add_observations("x", [huge])
        with pytest.raises(ValidationFailed, match="limit"):
            await memory.search("x", limit=0)
        with pytest.raises(ValidationFailed, match="scope"):
            await memory.search("x", scope="team")
        with pytest.raises(ValidationFailed, match="q: the search text"):
            await memory.search("  ")
        assert (await memory.get_entity("x")).observations == ("ok",)


async def test_max_entities_is_enforced(backend, nursery, embedder):
    memory = await backend.start_memory(nursery, embedder, max_entities=10)
    with trio.fail_after(30):
        await memory.create_entities(
            [NewEntity(name=f"e{i}", entity_type="t", observations=[f"item {i}"]) for i in range(8)]
        )
        capacity = await memory.capacity()
        assert (capacity.entity_count, capacity.warning) == (8, False)
        with pytest.raises(MemoryLimitExceeded) as info:
            await memory.create_entities(
                [NewEntity(name=f"n{i}", entity_type="t", observations=["new"]) for i in range(3)]
            )
        error = info.value
        assert isinstance(error, CaxtonError)
        assert (error.code, error.http_status) == ("MEMORY_LIMIT_EXCEEDED", 507)
        assert error.details == {"current": 8, "adding": 3, "max_entities": 10}
        assert "memory.max_entities" in error.message
        # All or nothing: none of the three was written.
        assert (await memory.stats()).entity_count == 8
        await memory.create_entities(
            [NewEntity(name=f"n{i}", entity_type="t", observations=["new"]) for i in range(2)]
        )
        capacity = await memory.capacity()
        assert capacity.warning
        assert capacity.used_ratio == 1.0
        assert "over 90%" in capacity.message
        # Merging into an existing entity does not need room.
        merged = await memory.add_observations("e1", ["more about item 1"])
        assert len(merged.observations) == 2
        with pytest.raises(MemoryLimitExceeded):
            await memory.create_entity(NewEntity(name="one-more", entity_type="t"))
        assert memory.statistics().entity_count == 10


async def test_memory_survives_close_and_reopen(tmp_path, model_dir):
    path = tmp_path / "caxton.duckdb"
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            embedder = await nursery.start(Embedder(cache_dir=model_dir).run)
            async with open_store(path, migrations=MEMORY_MIGRATIONS) as store:
                memory = await nursery.start(MemoryService(store, embedder).run)
                await memory.create_entities([cat(), stocks(), private_note()])
                await memory.create_relation(
                    NewRelation(source="Whiskers", target="NASDAQ", relation_type="watches")
                )
                nursery.cancel_scope.cancel()
        async with trio.open_nursery() as nursery:
            embedder = await nursery.start(Embedder(cache_dir=model_dir).run)
            async with open_store(path, migrations=MEMORY_MIGRATIONS) as store:
                memory = await nursery.start(MemoryService(store, embedder).run)
                stats = memory.statistics()
                assert (stats.entity_count, stats.index_rows, stats.accelerator_ready) == (
                    3,
                    3,
                    True,
                )
                hits = await memory.search("a kitten on a rug", limit=1)
                assert hits[0].entity.name == "Whiskers"
                # The rebuilt accelerator still knows who owns what.
                for exact in (False, True):
                    mine = await memory.search("cat food", agent="helper", exact=exact)
                    assert "helper-note" in {h.entity.name for h in mine}
                    public = await memory.search("cat food", exact=exact)
                    assert {h.entity.name for h in public} <= {"Whiskers", "NASDAQ"}
                graph = await memory.graph("Whiskers", max_depth=1)
                assert [e.relation_type for e in graph.edges] == ["watches"]
                tables, findings = await store.execute_fn(
                    functools.partial(
                        check_database, comprehensive=True, migrations=MEMORY_MIGRATIONS
                    )
                )
                assert [f for f in findings if f.severity == "error"] == []
                assert set(tables) >= {
                    "memory_entities",
                    "memory_observations",
                    "memory_relations",
                    "memory_embeddings",
                }
                nursery.cancel_scope.cancel()


async def test_stats_optimize_and_latency_statistics(backend, memory, embedder):
    with trio.fail_after(30):
        await memory.create_entities([cat(), stocks()])
        for _ in range(5):
            await memory.search("kitten")
        stats = await memory.stats()
        assert stats.entities_by_type == {"market": 1, "pet": 1}
        assert stats.entities_by_scope == {"global": 2}
        # a Qdrant server's disk is its own to report
        assert stats.db_size_bytes > 0 or backend.name == "qdrant-server"
        report = await memory.optimize()
        # PostgreSQL checkpoints and vacuums by itself; ANALYZE is what optimize runs there.
        # Qdrant's optimizer does all three by itself: nothing runs.
        done = {"duckdb": (True, True, True), "postgres": (False, False, True)}.get(
            backend.name, (False, False, False)
        )
        assert (report.checkpointed, report.vacuumed, report.analyzed) == done
        assert report.size_after_bytes > 0 or backend.name == "qdrant-server"
        figures = memory.statistics()
        assert figures.searches_total == 5
        assert 0.0 < figures.search_p50_ms <= figures.search_p99_ms
        # The query text is embedded once, then served from the cache.
        assert embedder.statistics().cache_hits >= 4


async def test_concurrent_writes_and_searches_stay_consistent(memory):
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for i in range(12):
                nursery.start_soon(
                    memory.create_entity,
                    NewEntity(name=f"n{i}", entity_type="t", observations=[f"topic number {i}"]),
                )
                # The same name from several tasks merges instead of conflicting.
                nursery.start_soon(
                    memory.create_entity,
                    NewEntity(name="shared", entity_type="t", observations=[f"fact {i}"]),
                )
                nursery.start_soon(functools.partial(memory.search, "topic", limit=5))
        assert len((await memory.get_entity("shared")).observations) == 12
        stats = await memory.stats()
        assert stats.entity_count == memory.statistics().entity_count == 13
        assert memory.statistics().index_rows == (13 if memory.accelerator else 0)
        fast = await memory.search("topic number 7", limit=13)
        exact = await memory.search("topic number 7", limit=13, exact=True)
        assert [h.entity.name for h in fast] == [h.entity.name for h in exact]


async def test_cancelled_writes_leave_database_and_accelerator_in_step(memory):
    """Whatever point a write is cancelled at, the database and the accelerator agree."""
    with trio.fail_after(60):
        for step, delay in enumerate([0, 0.001, 0.003, 0.006, 0.01, 0.02, 0.04, 0.08]):
            with trio.move_on_after(delay):
                await memory.create_entities(
                    [
                        NewEntity(name=f"s{step}-{i}", entity_type="t", observations=[f"x {i}"])
                        for i in range(5)
                    ]
                )
            stored = (await memory.stats()).entity_count
            assert stored % 5 == 0  # all of a batch or none of it
            assert memory.statistics().index_rows == (stored if memory.accelerator else 0)
            assert memory.statistics().entity_count == stored
        everything = await memory.search("x", limit=1000, min_similarity=-1.0)
        exact = await memory.search("x", limit=1000, min_similarity=-1.0, exact=True)
        assert {h.entity.name for h in everything} == {h.entity.name for h in exact}
        assert len(exact) == (await memory.stats()).entity_count


async def test_the_mirror_reloads_in_chunks_to_the_same_rows(memory):
    # A reload reads the embeddings a chunk at a time (never 1M rows as float32 at once); the
    # chunks must add up to exactly the rows one read gives, deletions (rowid gaps) included.
    await memory.create_entities(
        [NewEntity(name=f"e{i}", entity_type="t", observations=[f"note {i}"]) for i in range(7)]
    )
    await memory.delete_entity("e2")
    await memory.delete_entity("e5")
    sql = memory.sql
    whole = await memory.store.execute_fn(lambda conn: list(sql.index_chunks(conn)))
    pieces = await memory.store.execute_fn(lambda conn: list(sql.index_chunks(conn, rows=2)))
    assert len(whole) == 1
    assert len(pieces) >= 3
    assert all(len(entries) <= 2 for entries, _ in pieces)

    def rows(chunks):
        return {
            e.name: v.tolist() for entries, m in chunks for e, v in zip(entries, m, strict=True)
        }

    assert rows(pieces) == rows(whole)
    assert sorted(rows(whole)) == ["e0", "e1", "e3", "e4", "e6"]
    assert await memory.rebuild_index() == 5
    hits = await memory.search("note 4", limit=1)
    assert hits[0].entity.name == "e4"


@pytest.mark.parametrize("count", [3, 70])  # up to 64 names one parameter each, more as a list
async def test_entities_read_side_by_side_match_the_one_statement_read(memory, count):
    """A search reads its hits' entity rows and observation rows as two statements side by
    side when the store is free: the entities must be exactly those of the one-statement
    read (observations in their order, missing names absent)."""
    await memory.create_entities(
        [
            NewEntity(name=f"e{i}", entity_type="note", observations=["zeta", "alpha", f"n{i}"])
            for i in range(count)
        ]
    )
    names = [f"e{i}" for i in range(count)] + ["nobody"]
    reads = memory.sql.entity_reads(names)
    apart = await memory.store.read_statements(reads.parts)
    if memory.store.dialect == "duckdb":
        assert apart is not None
    else:  # one round trip in one transaction costs less there: the parts are not run apart
        assert apart is None or len(reads.parts) == 1
        apart = await memory.store.execute_fn(lambda conn: [part(conn) for part in reads.parts])
    together = await memory.store.execute_fn(lambda conn: memory.sql.fetch_entities(conn, names))
    assert reads.combine(apart) == together
    assert sorted(together) == sorted(names[:-1])
    assert together["e1"].observations == ("zeta", "alpha", "n1")
    hits = await memory.search("zeta alpha n1", limit=count)
    assert {hit.entity.name: hit.entity for hit in hits} == together


async def test_a_search_in_sql_reads_its_hits_in_the_same_store_call(memory):
    """Without the in-process mirror (here: an exact search; on PostgreSQL every search) the
    SQL search and its hits' rows are one store call: one connection, no transaction."""
    await memory.create_entities(
        [
            NewEntity(name="Rex", entity_type="pet", observations=["a dog", "barks"]),
            NewEntity(name="Tom", entity_type="pet", observations=["a cat"]),
        ]
    )
    store = memory.store
    calls = []
    inside = []  # a store's read_statements may answer through its own execute_fn
    real_execute_fn, real_read_statements = store.execute_fn, store.read_statements

    async def counting_execute_fn(fn):
        if not inside:
            calls.append(fn)
        return await real_execute_fn(fn)

    async def counting_read_statements(fns):
        calls.append(fns)
        inside.append(True)
        try:
            return await real_read_statements(fns)
        finally:
            inside.pop()

    store.execute_fn, store.read_statements = counting_execute_fn, counting_read_statements
    try:
        hits = await memory.search("a dog that barks", limit=2, exact=True)
    finally:
        del store.execute_fn, store.read_statements
    assert len(calls) == 1
    assert [hit.entity.name for hit in hits] == ["Rex", "Tom"]
    assert hits[0].entity.observations == ("a dog", "barks")
    again = await memory.search("a dog that barks", limit=2)  # the mirror's way, if it has one
    assert [hit.entity for hit in again] == [hit.entity for hit in hits]
    assert [hit.similarity for hit in again] == pytest.approx([h.similarity for h in hits], 1e-5)


async def test_search_entities_answers_as_a_search_then_a_read_of_its_hits(memory):
    """The dialect's one-call search-and-read (on PostgreSQL one statement) gives what the
    search and the read of its hits give, whatever the filters."""
    await memory.create_entities(
        [
            NewEntity(name="Rex", entity_type="pet", observations=["a dog", "barks loudly"]),
            NewEntity(name="Tom", entity_type="pet", observations=["a cat"]),
            NewEntity(name="Kit", entity_type="toy", observations=["a ball the dog chases"]),
            NewEntity(
                name="Own",
                entity_type="pet",
                observations=["a dog of agent one"],
                scope=Scope.AGENT,
                agent="one",
            ),
        ]
    )
    vector = await memory.embedder.embed_one("a dog that barks")
    sql, store = memory.sql, memory.store
    for exact in (True, False):
        for narrowed in (
            {},
            {"entity_types": ["pet"]},
            {"agent": "one"},
            {"scope": Scope.AGENT, "agent": "one"},
            {"min_similarity": 0.3},
            {"limit": 1},
        ):
            search = {
                "limit": 3,
                "min_similarity": -1.0,
                "scope": None,
                "agent": None,
                "entity_types": None,
                "exact": exact,
                "ef_search": 40,
                **narrowed,
            }
            together = await store.execute_fn(
                functools.partial(sql.search_entities, query=vector, **search)
            )
            ranked = await store.execute_fn(functools.partial(sql.search, query=vector, **search))
            found = await store.execute_fn(
                functools.partial(sql.fetch_entities, names=[name for name, _ in ranked])
            )
            assert ranked, (exact, narrowed)
            assert [name for name, _ in together[0]] == [name for name, _ in ranked]
            # (Qdrant's local mode scores the same vectors a few 1e-8 apart from call to call)
            assert [s for _, s in together[0]] == pytest.approx([s for _, s in ranked], abs=1e-6)
            assert together[1] == found, (exact, narrowed)


async def test_recent_entities_come_most_recently_updated_first(memory):
    """What fills the entity cache: whole entities, the latest update first (on Qdrant among
    the points a scroll gives first, so here all of them)."""
    for name in ("Rex", "Tom", "Kit"):  # one at a time: each later one updated later
        await memory.create_entity(NewEntity(name=name, entity_type="pet", observations=["a"]))
    await memory.add_observations("Rex", ["b", "c"])
    recent = await memory.store.execute_fn(
        functools.partial(memory.sql.recent_entities, max_bytes=2**20)
    )
    assert [e.name for e in recent] == ["Rex", "Kit", "Tom"]
    assert recent[0] == await memory.get_entity("Rex")
    assert recent[0].observations == ("a", "b", "c")
    if memory.store.dialect != "qdrant":
        room_for_two = sum(entity_bytes(e) for e in recent[:2]) + 4  # metadata {} by its text
        fewer = await memory.store.execute_fn(
            functools.partial(memory.sql.recent_entities, max_bytes=room_for_two)
        )
        assert [e.name for e in fewer] == ["Rex", "Kit"]


async def test_recent_entities_read_no_more_than_the_room_given(memory):
    """The entity cache's fill asks for as much as it has room for: large entities are sized
    before their rows are read, so a bound of a few of them reads a few, not as many as
    the bound could hold at the smallest size."""
    pages = ["x" * 8000, "y" * 8000]
    await memory.create_entities(
        [NewEntity(name=f"big-{i:02d}", entity_type="doc", observations=pages) for i in range(40)]
    )
    everything = await memory.store.execute_fn(
        functools.partial(memory.sql.recent_entities, max_bytes=2**30)
    )
    assert len(everything) == 40
    one = entity_bytes(everything[0])
    assert 16_000 < one < 17_000
    bound = 3 * one + one // 2
    some = await memory.store.execute_fn(
        functools.partial(memory.sql.recent_entities, max_bytes=bound)
    )
    assert len(some) == 3
    assert sum(entity_bytes(e) for e in some) <= bound
    assert (
        await memory.store.execute_fn(
            functools.partial(memory.sql.recent_entities, max_bytes=one // 2)
        )
        == []
    )


@pytest.mark.parametrize("backend", ["duckdb", "postgres"], indirect=True)
async def test_vector_literals_read_back_bit_for_bit(nursery, backend):
    """Embeddings reach both SQL stores as text (``vector_literal``, nine significant digits):
    each float32 reads back as it went, the extremes, subnormals and negative zero among them."""
    store = await backend.start_store(nursery)
    info = np.finfo(np.float32)
    rng = np.random.default_rng(7)
    vector = rng.standard_normal(EMBEDDING_DIM).astype(np.float32)
    vector[:8] = [info.max, -info.max, info.tiny, info.smallest_subnormal, -0.0, 0.1, 1 / 3, 1e-7]
    vector[8:40] *= np.float32(10.0) ** rng.integers(-40, 38, 32).astype(np.float32)
    literal = vector_literal(vector)
    if backend.name == "duckdb":
        sql = f"SELECT CAST(? AS FLOAT[{EMBEDDING_DIM}])"
    else:
        sql = "SELECT %s::vector::real[]"
    row = await store.execute_fn(lambda c: c.execute(sql, [literal]).fetchone())
    back = np.asarray(row[0], dtype=np.float32)
    assert back.tobytes() == vector.tobytes()
