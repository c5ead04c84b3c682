"""``caxton memory migrate --to qdrant``: the memory of a stopped server, filled through the real
services, moves into a Qdrant collection (qdrant-client's local mode: no Qdrant server can be
installed here; the first test runs against a real one too when ``QDRANT_URL`` is set), and a
memory service on Qdrant reads back the same entities, relations and graph, with the same
similarities (embeddings as stored); twice is once, an interrupted run is completed, a target
that differs is reported; ``storage verify``'s Qdrant check reads it.
"""

from __future__ import annotations

import os
import uuid
from typing import TYPE_CHECKING

import attrs
import pytest
import trio
from migrate_sources import (
    ENTITIES,
    OBSERVATIONS,
    RELATIONS,
    check_memory,
    fill_data_dir,
    fill_memory,
    interrupted,
    source_of,
)

from caxton.components import running
from caxton.config.model import (
    CaxtonConfig,
    MemoryConfig,
    PostgresConfig,
    QdrantConfig,
    ServerConfig,
)
from caxton.datadir import hold_offline
from caxton.memory import MemoryService, NewEntity, qdrant_memory
from caxton.memory.model import EMBEDDING_DIM
from caxton.ops.errors import MigrationRefused
from caxton.ops.memory_migrate import (
    KINDS,
    MemoryMigrationReport,
    migrate_to_qdrant,
    qdrant_store,
)
from caxton.ops.schema import postgres_migrations
from caxton.ops.verify import check_qdrant, verify_qdrant_offline
from caxton.store.postgres import open_postgres_store, redact
from caxton.store.qdrant import RELATIONS_SUFFIX

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from caxton.memory import Embedder
    from caxton.memory.types import SearchHit
    from caxton.store.qdrant import QdrantConnection

#: A real Qdrant server, when there is one (none can be installed where these tests were
#: written: the tests that need it are skipped without it).
QDRANT_URL = os.environ.get("QDRANT_URL")
needs_server = pytest.mark.skipif(
    not QDRANT_URL, reason="no Qdrant server: set QDRANT_URL to run this test against one"
)
QUERIES = ["a kitten on a rug", "shares and markets", "who has pets", "France"]


def _target(tmp_path: Path, collection: str = "caxton-memory") -> QdrantConfig:
    return QdrantConfig(path=str(tmp_path / "qdrant"), collection=collection)


async def _check_target(
    settings: QdrantConfig, embedder: Embedder, before: dict[str, list[SearchHit]]
) -> None:
    """A memory service on the collection answers as the source's did."""
    store = qdrant_store(settings)
    async with running(store.run), trio.open_nursery() as nursery:
        memory: MemoryService = await nursery.start(
            MemoryService(store, embedder, sql=qdrant_memory).run
        )
        await check_memory(memory, before)
        stats = await memory.stats()
        assert (stats.entity_count, stats.relation_count, stats.observation_count) == (
            len(ENTITIES),
            len(RELATIONS),
            OBSERVATIONS,
        )
        nursery.cancel_scope.cancel()


def _counts(report: MemoryMigrationReport) -> dict[str, tuple[int, int, int, int]]:
    return {c.kind: (c.source, c.target, c.copied, c.skipped) for c in report.counts}


@pytest.fixture(params=["local", pytest.param("server", marks=needs_server)])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QdrantConfig]:
    """Local mode in tmp_path, or a new collection on the Qdrant server at ``QDRANT_URL``
    (dropped after the test)."""
    if request.param == "local":
        yield _target(tmp_path)
        return
    from qdrant_client import QdrantClient

    assert QDRANT_URL is not None
    name = f"caxton-test-{uuid.uuid4().hex[:12]}"
    api_key = os.environ.get("QDRANT_API_KEY")
    yield QdrantConfig(url=QDRANT_URL, api_key=api_key, collection=name)
    client = QdrantClient(url=QDRANT_URL, api_key=api_key)
    for collection in (name, name + RELATIONS_SUFFIX):
        client.delete_collection(collection)
    client.close()


async def test_migrate_copies_the_memory_once_and_resumes(
    tmp_path: Path, embedder: Embedder, target: QdrantConfig
) -> None:
    with trio.fail_after(240):
        data_dir = tmp_path / "data"
        before = await fill_data_dir(data_dir, embedder, QUERIES)
        source, settings = source_of(data_dir), target

        # interrupted after its first batch of entities
        steps = await interrupted(
            lambda progress: migrate_to_qdrant(source, settings, batch_size=2, progress=progress)
        )

        # run again: completed; what the first run wrote is skipped
        report = await migrate_to_qdrant(source, settings, batch_size=2, progress=steps.append)
        assert report.verified, report.mismatches
        assert [c.kind for c in report.counts] == list(KINDS)
        counts = _counts(report)
        assert counts["entities"][:2] == (len(ENTITIES), len(ENTITIES))
        assert counts["entities"][2] + counts["entities"][3] == len(ENTITIES)
        assert counts["entities"][3] >= 2
        assert counts["relations"] == (len(RELATIONS), len(RELATIONS), len(RELATIONS), 0)
        assert counts["observations"][:2] == (OBSERVATIONS, OBSERVATIONS)
        last = {step.kind: (step.done, step.total) for step in steps}
        assert last == {"entities": (5, 5), "relations": (3, 3)}
        assert report.source == f"duckdb {data_dir / 'memory.duckdb'}"
        where = f'path: "{target.path}"' if target.path else f'url: "{target.url}"'
        place = f"(local mode) {target.path}" if target.path else target.url
        assert report.target == f"{place}, collection {target.collection}"
        assert report.config_block.startswith(
            "memory:\n"
            '  backend: "qdrant"\n'
            "  qdrant_config:\n"
            f"    {where}\n"
            f'    collection: "{target.collection}"\n'
            f"    vector_size: {EMBEDDING_DIM}\n"
        )
        document = report.to_json()
        assert document["verified"] is True
        assert document["counts"]["relations"]["target"] == len(RELATIONS)
        assert document["config"] == report.config_block

        await _check_target(settings, embedder, before)

        # a third run writes nothing
        again = await migrate_to_qdrant(source, settings)
        assert again.verified, again.mismatches
        assert _counts(again) == {
            "entities": (len(ENTITIES), len(ENTITIES), 0, len(ENTITIES)),
            "relations": (len(RELATIONS), len(RELATIONS), 0, len(RELATIONS)),
            "observations": (OBSERVATIONS, OBSERVATIONS, 0, OBSERVATIONS),
        }
        await _check_target(settings, embedder, before)


async def test_a_target_holding_more_is_reported_and_checked_by_verify(
    tmp_path: Path, embedder: Embedder
) -> None:
    with trio.fail_after(120):
        data_dir = tmp_path / "data"
        await fill_data_dir(data_dir, embedder, QUERIES)
        settings = _target(tmp_path)
        assert (await migrate_to_qdrant(source_of(data_dir), settings)).verified

        # the collections as storage verify sees them
        store = qdrant_store(settings)
        async with running(store.run):

            async def check(
                count: int, relations: int = len(RELATIONS), size: int = 384, **where: str
            ) -> list[tuple[str, str]]:
                def run(conn: QdrantConnection) -> list[tuple[str, str]]:
                    findings = check_qdrant(
                        conn._replace(**where),
                        vector_size=size,
                        entity_count=count,
                        relation_count=relations,
                        where="here",
                    )
                    return [(f.severity, f.message) for f in findings]

                return await store.execute_fn(run)

            assert await check(len(ENTITIES)) == [
                (
                    "info",
                    "collection 'caxton-memory' at here: 5 points for 5 entities, vector size 384",
                ),
                ("info", "collection 'caxton-memory-relations' at here: 3 points for 3 relations"),
            ]
            wrong = await check(4, 2, 512)
            assert [severity for severity, _ in wrong] == ["error", "error", "error"]
            assert wrong[0][1] == (
                "collection 'caxton-memory' takes vectors of size 384, "
                "memory.qdrant_config.vector_size is 512"
            )
            assert "5 points for 4 entities" in wrong[1][1]
            assert "3 points for 2 relations" in wrong[2][1]
            missing = await check(0, entities="elsewhere")
            assert missing == [
                (
                    "error",
                    "here has no collection 'elsewhere' (a server on memory.backend: qdrant "
                    "creates it at start; caxton memory migrate --to qdrant fills it)",
                )
            ]

        # and as storage verify sees them with the server stopped (relative to data_dir)
        stopped = CaxtonConfig(
            server=ServerConfig(data_dir=str(tmp_path)),
            memory=MemoryConfig(backend="qdrant", qdrant_config=QdrantConfig(path="qdrant")),
        )
        offline = await trio.to_thread.run_sync(verify_qdrant_offline, stopped)
        assert [(f.severity, f.message) for f in offline] == [
            (
                "info",
                f"collection 'caxton-memory' at (local mode) {tmp_path / 'qdrant'}: 5 points "
                "for 5 entities, vector size 384",
            ),
            (
                "info",
                f"collection 'caxton-memory-relations' at (local mode) {tmp_path / 'qdrant'}: "
                "3 points for 3 relations",
            ),
        ]
        elsewhere = attrs.evolve(
            stopped,
            memory=attrs.evolve(
                stopped.memory, qdrant_config=QdrantConfig(path="qdrant", collection="other")
            ),
        )
        absent = await trio.to_thread.run_sync(verify_qdrant_offline, elsewhere)
        assert [f.severity for f in absent] == ["error", "error"]
        assert "has no collection 'other'" in absent[0].message
        nowhere = attrs.evolve(
            stopped, memory=attrs.evolve(stopped.memory, qdrant_config=QdrantConfig(path="none"))
        )
        missing_folder = await trio.to_thread.run_sync(verify_qdrant_offline, nowhere)
        assert [(f.severity, f.message.split(" (")[0]) for f in missing_folder] == [
            ("error", f"{tmp_path / 'none'} does not exist")
        ]
        assert not (tmp_path / "none").exists()

        # a stranger in the collection (another server wrote there)
        store = qdrant_store(settings)
        async with running(store.run), trio.open_nursery() as nursery:
            memory: MemoryService = await nursery.start(
                MemoryService(store, embedder, sql=qdrant_memory).run
            )
            await memory.create_entity(
                NewEntity(name="Stranger", entity_type="person", observations=["not ours"])
            )
            nursery.cancel_scope.cancel()
        report = await migrate_to_qdrant(source_of(data_dir), settings)
        assert not report.verified
        assert report.mismatches == [
            f"entities: 5 in the source, 6 in {report.target}",
            f"observations: {OBSERVATIONS} in the source, {OBSERVATIONS + 1} in {report.target}",
        ]


async def test_a_running_server_a_missing_data_dir_and_another_vector_size_are_refused(
    tmp_path: Path, embedder: Embedder
) -> None:
    settings = _target(tmp_path)
    with pytest.raises(MigrationRefused, match="does not exist"):
        await migrate_to_qdrant(source_of(tmp_path / "nowhere"), settings)
    data_dir = tmp_path / "data"
    await fill_data_dir(data_dir, embedder, QUERIES)
    with hold_offline(data_dir), pytest.raises(MigrationRefused, match="is running on data_dir"):
        await migrate_to_qdrant(source_of(data_dir), settings)
    with pytest.raises(MigrationRefused, match="vector_size is 512, but the memory's embeddings"):
        await migrate_to_qdrant(source_of(data_dir), attrs.evolve(settings, vector_size=512))
    assert not (tmp_path / "qdrant").exists()


@pytest.mark.postgres
async def test_the_memory_of_a_server_on_postgresql_moves_too(
    tmp_path: Path, embedder: Embedder, postgres_url: str
) -> None:
    with trio.fail_after(180):
        async with open_postgres_store(postgres_url, migrations=postgres_migrations()) as store:
            before = await fill_memory(store, embedder, QUERIES)
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        settings = _target(tmp_path)
        postgres = PostgresConfig(url=postgres_url)
        report = await migrate_to_qdrant(source_of(data_dir), settings, postgres=postgres)
        assert report.verified, report.mismatches
        assert report.source == redact(postgres_url)
        assert _counts(report)["entities"] == (len(ENTITIES), len(ENTITIES), len(ENTITIES), 0)
        await _check_target(settings, embedder, before)
