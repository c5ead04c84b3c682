"""The entity and relation totals PostgreSQL keeps in ``memory_totals`` (memory migration v2,
issue #21): every write reads them under the write lock, where a count scanned both tables.
Against a real PostgreSQL and the real model."""

from __future__ import annotations

import psycopg
import pytest
import trio
from psycopg import sql

from caxton.memory import (
    MEMORY_POSTGRES_MIGRATIONS,
    MemoryService,
    NewEntity,
    NewRelation,
    postgres_sql,
)
from caxton.ops.verify import TOTALS_FIX, Finding, inspect_postgres
from caxton.store.postgres import PostgresStore

pytestmark = pytest.mark.trio


async def start_instance(nursery, url, embedder, migrations=MEMORY_POSTGRES_MIGRATIONS):
    store = await nursery.start(PostgresStore(url, migrations=migrations).run)
    memory = await nursery.start(MemoryService(store, embedder, sql=postgres_sql).run)
    return store, memory


def kept_and_counted(url: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(what memory_totals holds, what a count of the tables finds)."""
    with psycopg.connect(url, autocommit=True) as conn:
        kept = conn.execute("SELECT entities, relations FROM memory_totals").fetchone()
        counted = conn.execute(
            "SELECT (SELECT count(*) FROM memory_entities), (SELECT count(*) FROM memory_relations)"
        ).fetchone()
    assert kept is not None
    assert counted is not None
    return (int(kept[0]), int(kept[1])), (int(counted[0]), int(counted[1]))


def note(name: str, *observations: str) -> NewEntity:
    return NewEntity(name=name, entity_type="note", observations=list(observations or [name]))


async def test_the_totals_follow_every_kind_of_write(nursery, postgres_url, embedder):
    _, memory = await start_instance(nursery, postgres_url, embedder)
    assert kept_and_counted(postgres_url) == ((0, 0), (0, 0))

    await memory.create_entities([note(f"n{i}") for i in range(5)])
    await memory.create_entity(note("n1", "merged into an existing one"))
    await memory.add_observations("n2", ["one more"])
    assert kept_and_counted(postgres_url) == ((5, 0), (5, 0))

    await memory.create_relation(NewRelation(source="n0", target="n1", relation_type="knows"))
    await memory.create_relation(NewRelation(source="n0", target="n2", relation_type="knows"))
    # the same relation again updates the row: no new one
    await memory.create_relation(
        NewRelation(source="n0", target="n1", relation_type="knows", strength=0.5)
    )
    assert kept_and_counted(postgres_url) == ((5, 2), (5, 2))

    await memory.import_document(
        {
            "metadata": {"version": "1.0", "entity_count": 2, "relation_count": 1},
            "entities": [
                {"name": "n4", "entity_type": "note", "observations": ["imported over"]},
                {"name": "i1", "entity_type": "note", "observations": ["imported"]},
            ],
            "relations": [{"from": "i1", "to": "n4", "relation_type": "cites"}],
        }
    )
    assert kept_and_counted(postgres_url) == ((6, 3), (6, 3))

    assert await memory.delete_entity("n0") == 2  # its two relations go with it
    assert kept_and_counted(postgres_url) == ((5, 1), (5, 1))
    stats = memory.statistics()
    assert (stats.entity_count, stats.relation_count) == (5, 1)

    # statements from outside Caxton are followed too, and a truncate empties the totals
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memory_entities SELECT 'by-hand-' || i, 'note', 'global', NULL, '{}', "
            "now(), now() FROM generate_series(1, 3) AS i"
        )
        conn.execute("DELETE FROM memory_entities WHERE name = 'no such name'")
        assert kept_and_counted(postgres_url) == ((8, 1), (8, 1))
        conn.execute("TRUNCATE memory_relations")
        assert kept_and_counted(postgres_url) == ((8, 0), (8, 0))


async def test_writes_read_the_totals_without_counting_the_tables(nursery, postgres_url, embedder):
    """A role that may not read memory_relations still writes entities: the totals the write
    checks ``max_entities`` against and reports are read from memory_totals (a count of the
    relations, 5 ms at 100k rows, would fail here)."""
    async with trio.open_nursery() as setup:  # the tables
        await setup.start(PostgresStore(postgres_url, migrations=MEMORY_POSTGRES_MIGRATIONS).run)
        setup.cancel_scope.cancel()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        row = conn.execute("SELECT current_database() || '_writer'").fetchone()
        assert row is not None
        role = sql.Identifier(row[0])  # roles are the server's: one per test database
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'writer-secret'").format(role))
        conn.execute(
            sql.SQL(
                "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}"
            ).format(role)
        )
        conn.execute(sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(role))
        conn.execute(sql.SQL("REVOKE SELECT ON memory_relations FROM {}").format(role))
    info = psycopg.conninfo.conninfo_to_dict(postgres_url)
    info.update(user=row[0], password="writer-secret")
    writer_url = psycopg.conninfo.make_conninfo(**info)

    _, memory = await start_instance(nursery, writer_url, embedder)
    await memory.create_entities([note(f"w{i}") for i in range(3)])
    await memory.create_entity(note("w1", "merged"))
    assert (memory.statistics().entity_count, memory.statistics().relation_count) == (3, 0)
    assert kept_and_counted(postgres_url) == ((3, 0), (3, 0))


async def test_the_migration_counts_what_the_tables_already_hold(nursery, postgres_url, embedder):
    first = MEMORY_POSTGRES_MIGRATIONS[:1]
    assert [m.version for m in first] == [1]
    async with trio.open_nursery() as before:  # the tables as an older Caxton left them
        await before.start(PostgresStore(postgres_url, migrations=first).run)
        before.cancel_scope.cancel()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memory_entities SELECT 'old-' || i, 'note', 'global', NULL, '{}', "
            "now(), now() FROM generate_series(1, 4) AS i"
        )
        conn.execute("INSERT INTO memory_relations VALUES ('old-1', 'old-2', 'knows', 1, 1, now())")
        assert conn.execute("SELECT to_regclass('memory_totals') IS NULL").fetchone() == (True,)

    store, memory = await start_instance(nursery, postgres_url, embedder)
    assert store.statistics().schema_versions["memory"] == 2
    assert kept_and_counted(postgres_url) == ((4, 1), (4, 1))
    assert memory.statistics().entity_count == 4
    await memory.create_entity(note("new"))
    assert kept_and_counted(postgres_url) == ((5, 1), (5, 1))


async def test_concurrent_writers_on_two_instances_keep_the_totals_exact(
    nursery, postgres_url, embedder
):
    _, a = await start_instance(nursery, postgres_url, embedder)
    _, b = await start_instance(nursery, postgres_url, embedder)

    async def write(memory: MemoryService, i: int) -> None:
        # half of them new names, half merges into names the other instance also writes
        await memory.create_entity(note(f"shared-{i % 8}" if i % 2 else f"own-{id(memory)}-{i}"))

    async with trio.open_nursery() as writers:
        for i in range(24):
            writers.start_soon(write, a, i)
            writers.start_soon(write, b, i)
    kept, counted = kept_and_counted(postgres_url)
    assert kept == counted == (24 + 4, 0)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM memory_entities")
    assert kept_and_counted(postgres_url) == ((0, 0), (0, 0))


async def test_storage_verify_compares_the_totals_and_names_the_fix(
    nursery, postgres_url, embedder
):
    _, memory = await start_instance(nursery, postgres_url, embedder)
    await memory.create_entities([note(f"v{i}") for i in range(3)])

    def totals_findings() -> list[Finding]:
        with psycopg.connect(postgres_url) as conn:
            report = inspect_postgres(
                conn,
                comprehensive=False,
                migrations=MEMORY_POSTGRES_MIGRATIONS,
                database="test",
            )
        return [f for f in report.findings if f.check == "totals"]

    [found] = totals_findings()
    assert (found.severity, found.message) == (
        "info",
        "memory_totals: 3 entities, 0 relations, as counted",
    )

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # a trigger turned off
        conn.execute("ALTER TABLE memory_entities DISABLE TRIGGER memory_entities_added")
        conn.execute(
            "INSERT INTO memory_entities VALUES ('unseen', 'note', 'global', NULL, '{}', "
            "now(), now())"
        )
    disabled, wrong = totals_findings()
    assert disabled.severity == wrong.severity == "error"
    assert disabled.message.startswith("trigger memory_entities_added on memory_entities is ")
    assert "ALTER TABLE memory_entities ENABLE TRIGGER memory_entities_added;" in disabled.message
    assert "it holds 3 entities and 0 relations, the tables 4 and 0" in wrong.message
    assert TOTALS_FIX in wrong.message

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # as the findings say
        conn.execute("ALTER TABLE memory_entities ENABLE TRIGGER memory_entities_added")
    with psycopg.connect(postgres_url) as conn:  # the fix it names, in one transaction
        conn.execute(TOTALS_FIX)
    [found] = totals_findings()
    assert found.severity == "info"
    assert "4 entities" in found.message

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM memory_totals")
        conn.execute("DROP TRIGGER memory_relations_truncated ON memory_relations")
    missing, wrong = totals_findings()
    assert missing.message.startswith(
        "trigger memory_relations_truncated on memory_relations is missing"
    )
    assert "it has 0 rows instead of one" in wrong.message
    recreate = missing.message.split("In psql: ", 1)[1]
    assert recreate.startswith("CREATE TRIGGER memory_relations_truncated ")
    # writes go on meanwhile: without the row they count the tables
    await memory.create_entity(note("still-written"))
    assert memory.statistics().entity_count == 5

    with psycopg.connect(postgres_url) as conn:  # as the findings say
        conn.execute(recreate)
        conn.execute(TOTALS_FIX)
    [found] = totals_findings()
    assert found.severity == "info"
    assert "5 entities" in found.message

    with psycopg.connect(postgres_url, autocommit=True) as conn:  # the function and triggers
        conn.execute("DROP FUNCTION memory_relations_counted() CASCADE")
    *missing, right = totals_findings()
    assert right.severity == "info"
    assert [f.message.split(":")[0] for f in missing] == [
        "function memory_relations_counted is missing",
        "trigger memory_relations_added on memory_relations is missing",
        "trigger memory_relations_removed on memory_relations is missing",
        "trigger memory_relations_truncated on memory_relations is missing",
    ]
    with psycopg.connect(postgres_url) as conn:  # each statement they print, in their order
        for finding in missing:
            conn.execute(finding.message.split("psql: ", 1)[1])
    [found] = totals_findings()
    assert found.severity == "info"
    await memory.create_relation(
        NewRelation(source="still-written", target="unseen", relation_type="knows")
    )
    [found] = totals_findings()
    assert found.message == "memory_totals: 5 entities, 1 relations, as counted"
