"""Export and import: formats, merge strategies, and refusing bad files whole (both backends:
``memory`` here is ``backend_memory``)."""

from __future__ import annotations

import json

import pytest
import trio

from caxton.errors import Conflict, ValidationFailed
from caxton.memory import (
    EXPORT_VERSION,
    MemoryLimitExceeded,
    NewEntity,
    NewRelation,
)

pytestmark = pytest.mark.trio


@pytest.fixture
def memory(backend_memory):
    return backend_memory


async def fill(memory):
    await memory.create_entities(
        [
            NewEntity(
                name="Ada",
                entity_type="person",
                observations=["wrote the first program", "worked with Babbage"],
                metadata={"born": 1815},
            ),
            NewEntity(name="Babbage", entity_type="person", observations=["designed engines"]),
            NewEntity(
                name="engine-notes",
                entity_type="note",
                observations=["the analytical engine had a mill and a store"],
                scope="agent",
                agent="historian",
            ),
        ]
    )
    await memory.create_relation(
        NewRelation(source="Ada", target="Babbage", relation_type="worked_with", strength=0.8)
    )
    await memory.create_relation(
        NewRelation(source="engine-notes", target="Babbage", relation_type="about")
    )


async def second_memory(backend, nursery, embedder, **kwargs):
    """A service on another database of the same backend."""
    return await backend.start_memory(nursery, embedder, "other", **kwargs)


async def snapshot(memory):
    document = await memory.export_document()
    entities = {
        e["name"]: {k: v for k, v in e.items() if k != "updated_at"} for e in document["entities"]
    }
    relations = {(r["from"], r["to"], r["relation_type"]): r for r in document["relations"]}
    return entities, relations


async def test_json_export_round_trips(memory, backend, nursery, embedder):
    with trio.fail_after(30):
        await fill(memory)
        document = await memory.export_document()
        assert document["metadata"]["version"] == EXPORT_VERSION
        assert document["metadata"]["entity_count"] == 3
        assert document["metadata"]["relation_count"] == 2
        assert set(document) == {"entities", "relations", "metadata"}
        copy = await second_memory(backend, nursery, embedder)
        # Through real JSON text, as a file or a request body would carry it.
        report = await copy.import_document(json.loads(json.dumps(document)))
        assert (report.entities_created, report.relations_created) == (3, 2)
        assert await snapshot(copy) == await snapshot(memory)
        hits = await copy.search("analytical engine", agent="historian", limit=1)
        assert hits[0].entity.name == "engine-notes"


async def test_jsonl_export_streams_and_round_trips(memory, backend, nursery, embedder):
    with trio.fail_after(30):
        await fill(memory)
        lines = [line async for line in memory.export_jsonl()]
        assert all(line.endswith("\n") for line in lines)
        records = [json.loads(line) for line in lines]
        assert records[0]["kind"] == "metadata"
        assert records[0]["entity_count"] == 3
        assert [r["kind"] for r in records[1:]] == ["entity"] * 3 + ["relation"] * 2
        copy = await second_memory(backend, nursery, embedder)
        report = await copy.import_bytes("".join(lines).encode())
        assert (report.entities_created, report.relations_created) == (3, 2)
        assert await snapshot(copy) == await snapshot(memory)


async def test_merge_strategies(memory):
    with trio.fail_after(30):
        await fill(memory)
        document = await memory.export_document()
        ada = next(e for e in document["entities"] if e["name"] == "Ada")
        ada["observations"] = ["counted Bernoulli numbers"]
        ada["metadata"] = {"born": 1815, "died": 1852}
        document["entities"].append(
            {"name": "Lovelace-paper", "entity_type": "document", "observations": ["notes G"]}
        )
        document["relations"][0]["strength"] = 0.1
        document["metadata"]["entity_count"] = 4

        # error_on_conflict: refused whole, nothing written.
        with pytest.raises(Conflict, match="'Ada'") as info:
            await memory.import_document(document, merge_strategy="error_on_conflict")
        assert info.value.http_status == 409
        assert (await memory.stats()).entity_count == 3

        # skip_existing: only the new entity arrives; Ada keeps her observations.
        report = await memory.import_document(document, merge_strategy="skip_existing")
        assert (report.entities_created, report.entities_skipped) == (1, 3)
        assert report.relations_skipped == 2
        assert (await memory.get_entity("Ada")).metadata == {"born": 1815}

        # update_existing (the default): the file wins, observations are merged.
        report = await memory.import_document(document)
        assert (report.entities_created, report.entities_updated) == (0, 4)
        assert report.relations_updated == 2
        ada_now = await memory.get_entity("Ada")
        assert ada_now.observations == (
            "wrote the first program",
            "worked with Babbage",
            "counted Bernoulli numbers",
        )
        assert ada_now.metadata == {"born": 1815, "died": 1852}
        graph = await memory.graph("Ada", max_depth=1)
        assert [e.strength for e in graph.edges if e.target == "Babbage"] == [0.1]
        hits = await memory.search("Bernoulli numbers", limit=1)
        assert hits[0].entity.name == "Ada"
        with pytest.raises(ValidationFailed, match="merge_strategy"):
            await memory.import_document(document, merge_strategy="overwrite")


async def test_bad_files_are_refused_whole(memory):
    with trio.fail_after(30):
        await fill(memory)
        lines = [line async for line in memory.export_jsonl()]
        document = await memory.export_document()
        await memory.delete_entity("Babbage")
        await memory.delete_entity("Ada")
        before = await memory.export_document()

        async def refused(data: bytes, pattern: str, **kwargs) -> None:
            with pytest.raises(ValidationFailed, match=pattern) as info:
                await memory.import_bytes(data, **kwargs)
            assert info.value.http_status == 422

        await refused("".join(lines[:-2]).encode(), "truncated")
        await refused("".join(lines)[:-25].encode(), "line 6.*truncated")
        text = json.dumps(document).encode()
        await refused(text[: len(text) // 2], "not valid JSON.*truncated")
        await refused(b"\xff\xfe not utf-8", "not UTF-8")
        await refused(b"", "not valid JSON")
        await refused(b'{"kind": "entity", "name": "x"}\n', "first line must be")
        wrong = dict(document, metadata=dict(document["metadata"], version="9.9"))
        await refused(json.dumps(wrong).encode(), "unsupported export version '9.9'")
        bad_entity = json.loads(json.dumps(document))
        bad_entity["entities"][2]["observations"] = ["fine", ""]
        await refused(json.dumps(bad_entity).encode(), r"entities\[2\].*must not be empty")
        dangling = json.loads(json.dumps(document))
        dangling["entities"] = [e for e in dangling["entities"] if e["name"] != "Babbage"]
        dangling["metadata"]["entity_count"] = 2
        await refused(json.dumps(dangling).encode(), "'Babbage' is neither in the file")
        twice = json.loads(json.dumps(document))
        twice["entities"].append(twice["entities"][0])
        twice["metadata"]["entity_count"] = 4
        await refused(json.dumps(twice).encode(), "appears twice")
        after = await memory.export_document()
        assert (after["entities"], after["relations"]) == (before["entities"], before["relations"])
        assert (await memory.stats()).entity_count == 1


async def test_import_over_the_limit_writes_nothing(memory, backend, nursery, embedder):
    with trio.fail_after(30):
        await fill(memory)
        document = await memory.export_document()
        small = await second_memory(backend, nursery, embedder, max_entities=2)
        with pytest.raises(MemoryLimitExceeded):
            await small.import_document(document)
        stats = await small.stats()
        assert (stats.entity_count, stats.relation_count) == (0, 0)
        assert await small.search("engine", agent="historian") == []
