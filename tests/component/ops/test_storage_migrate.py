"""``caxton storage migrate``: an embedded data_dir, filled through the real services, moves into
a real PostgreSQL, and the PostgreSQL services read back the same memory (embeddings as stored,
the same similarities), conversations (messages in order, with their ids) and deployed agents
(active and canary), with the safe-mode flag; twice is once; an interrupted run is completed.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import psycopg
import pytest
import trio
from migrate_sources import (
    ENTITIES,
    RELATIONS,
    check_memory,
    fill_memory,
    interrupted,
    open_data_dir,
    source_of,
)

from caxton.agents.deployments import CanaryState, FileDeployments, PostgresDeployments
from caxton.datadir import hold_offline
from caxton.memory import Embedder, MemoryService, postgres_sql
from caxton.messages import Message
from caxton.messaging import CLOSED, Conversations
from caxton.messaging.conversation_sql_postgres import POSTGRES_CONVERSATION_SQL
from caxton.ops.errors import MigrationRefused
from caxton.ops.migrate import KINDS, migrate
from caxton.ops.safe_mode import PostgresSafeModeFlag, enabled_now, write_flag
from caxton.ops.schema import embedded_migrations, postgres_migrations
from caxton.store import open_store
from caxton.store.errors import PostgresAuthFailed, StoreOpenError
from caxton.store.postgres import open_postgres_store
from caxton.usage import UsageFilter, UsageLedger, UsageRecord

if TYPE_CHECKING:
    from pathlib import Path

QUERIES = ["a kitten on a rug", "shares and markets", "who has pets"]
#: LLM usage records (issue #18): they move too, once.
USAGE = [
    UsageRecord(
        at=1_796_000_000.0 + index,
        agent="assistant",
        key=f"key-{index % 2}",
        model="gpt-4o-mini",
        provider="openai",
        input_tokens=10 * index,
        output_tokens=5,
        cache_read_tokens=100,
        cost=0.001 * index,
    )
    for index in range(3)
]
AGENT_V1 = b'name = "probe"\nversion = "1.0.0"\n'
AGENT_V2 = b'name = "probe"\nversion = "2.0.0"\n'
PLAIN = b'name = "plain"\nversion = "0.1.0"\n'


async def _fill(data_dir: Path, embedder: Embedder) -> dict[str, object]:
    """An embedded data_dir as a server leaves it; what the tests compare against."""
    conversations: list[list[Message]] = []
    async with open_data_dir(data_dir) as store, trio.open_nursery() as nursery:
        searches = await fill_memory(store, embedder, QUERIES)
        talk: Conversations = await nursery.start(Conversations(store).run)
        for index in range(7):
            first = Message(sender="client", receiver="assistant", content=f"hello {index}")
            talk.mark_new(first.conversation_id)
            turns = [first]
            for turn in range(index % 3 + 1):
                turns.append(turns[-1].reply({"turn": turn, "text": "é ✓"}, sender="assistant"))
            for message in turns:
                talk.record(message)
            conversations.append(turns)
        await talk.flush()
        await talk.close(conversations[2][0].conversation_id)
        ledger = UsageLedger(store)
        for index in range(3):
            await ledger.record(USAGE[index])
        summaries = {
            turns[0].conversation_id: await talk.summary(turns[0].conversation_id)
            for turns in conversations
        }
        nursery.cancel_scope.cancel()
    files = FileDeployments(data_dir / "deployed")
    await files.save("probe", "v1", AGENT_V1, b"\0asm-1")
    await files.save("probe", "v2", AGENT_V2, None)
    await files.set_active(
        "probe", "v1", canary=CanaryState(content_hash="v2", traffic_percentage=25)
    )
    await files.save("plain", "p1", PLAIN, None)
    await files.set_active("plain", "p1")
    await trio.to_thread.run_sync(write_flag, data_dir, enabled_now("moving to PostgreSQL"))
    return {
        "searches": searches,
        "conversations": conversations,
        "summaries": summaries,
        "agents": await files.load_all(),
    }


def _table_counts(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        return {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
            for table in (
                "memory_entities",
                "memory_observations",
                "memory_relations",
                "memory_embeddings",
                "conversations",
                "conversation_messages",
                "deployed_agents",
                "deployed_agent_versions",
                "llm_usage",
            )
        }


def _memory_totals(url: str) -> tuple[int, int]:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT entities, relations FROM memory_totals").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _check_target(url: str, embedder: Embedder, expected: dict[str, object]) -> None:
    async with (
        open_postgres_store(url, migrations=postgres_migrations()) as store,
        trio.open_nursery() as nursery,
    ):
        memory: MemoryService = await nursery.start(
            MemoryService(store, embedder, sql=postgres_sql).run
        )
        before = expected["searches"]
        assert isinstance(before, dict)
        await check_memory(memory, before)

        talk: Conversations = await nursery.start(
            Conversations(store, sql=POSTGRES_CONVERSATION_SQL).run
        )
        conversations = expected["conversations"]
        summaries = expected["summaries"]
        assert isinstance(conversations, list)
        assert isinstance(summaries, dict)
        for turns in conversations:
            cid = turns[0].conversation_id
            got = await talk.get(cid)
            assert list(got.messages) == turns  # in order, with their ids, times and content
            want = summaries[cid]
            assert got.summary.status == want.status
            assert got.summary.created_at == want.created_at
            assert got.summary.last_activity == want.last_activity
            assert got.summary.message_count == len(turns)
            assert sorted(got.summary.participants) == sorted(want.participants)
        assert await talk.status(conversations[2][0].conversation_id) == CLOSED

        agents = await PostgresDeployments(store).load_all()
        files = expected["agents"]
        assert isinstance(files, list)
        assert [a.name for a in agents] == ["plain", "probe"]
        for mine, theirs in zip(agents, files, strict=True):
            assert mine.content == theirs.content
            assert mine.module == theirs.module
            assert mine.content_hash == theirs.content_hash
            assert mine.canary == theirs.canary
        assert agents[1].canary is not None
        assert agents[1].canary.traffic_percentage == 25
        by_key, totals = await UsageLedger(store).report(UsageFilter(), "key")
        assert totals.calls == 3
        assert totals.input_tokens == sum(r.input_tokens for r in USAGE)
        assert totals.cache_read_tokens == 300
        assert [name for name, _ in by_key] == ["key-0", "key-1"]
        flag = await PostgresSafeModeFlag(store).read()
        assert flag.enabled
        assert flag.reason == "moving to PostgreSQL"
        nursery.cancel_scope.cancel()


async def test_migrate_copies_everything_once_and_resumes(
    tmp_path: Path, postgres_url: str, embedder: Embedder
) -> None:
    with trio.fail_after(240):
        await _copies_everything_once_and_resumes(tmp_path, postgres_url, embedder)


async def _copies_everything_once_and_resumes(
    tmp_path: Path, postgres_url: str, embedder: Embedder
) -> None:
    data_dir = tmp_path / "data"
    expected = await _fill(data_dir, embedder)
    source = source_of(data_dir)

    # interrupted after its first committed batch of entities
    steps = await interrupted(
        lambda progress: migrate(source, postgres_url, batch_size=2, progress=progress)
    )
    partial = _table_counts(postgres_url)
    assert 2 <= partial["memory_entities"] < len(ENTITIES)
    assert partial["memory_embeddings"] == partial["memory_entities"]
    assert partial["conversations"] == 0

    # run again: completed
    report = await migrate(source, postgres_url, batch_size=2, progress=steps.append)
    assert report.verified, report.mismatches
    counts = {c.kind: c for c in report.counts}
    assert [c.kind for c in report.counts] == list(KINDS)
    assert counts["entities"].source == counts["entities"].target == len(ENTITIES)
    assert counts["embeddings"].target == len(ENTITIES)
    assert counts["observations"].target == sum(len(e.observations) for e in ENTITIES)
    assert counts["relations"].target == len(RELATIONS)
    assert counts["conversations"].target == 7
    assert counts["messages"].target == sum(len(t) for t in expected["conversations"])  # type: ignore[attr-defined]
    assert counts["agents"].source == counts["agents"].target == 2
    assert counts["usage"].source == counts["usage"].target == 3
    assert report.safe_mode
    # the last step of each kind reports everything done
    last = {step.kind: step for step in steps}
    assert {k: (s.done, s.total) for k, s in last.items()} == {
        "entities": (5, 5),
        "relations": (3, 3),
        "conversations": (7, 7),
        "agents": (2, 2),
        "usage": (3, 3),
    }
    json_report = report.to_json()
    assert json_report["verified"] is True
    assert json_report["counts"]["entities"]["target"] == len(ENTITIES)
    password = str(psycopg.conninfo.conninfo_to_dict(postgres_url)["password"])
    assert password not in str(json_report)
    full = _table_counts(postgres_url)
    # the totals the triggers keep follow the copy (every memory write reads them)
    assert _memory_totals(postgres_url) == (full["memory_entities"], full["memory_relations"])

    await _check_target(postgres_url, embedder, expected)

    # a third run: nothing doubles; conversations and agents already there are skipped
    again = await migrate(source, postgres_url)
    assert again.verified, again.mismatches
    assert _table_counts(postgres_url) == full
    assert _memory_totals(postgres_url) == (full["memory_entities"], full["memory_relations"])
    again_counts = {c.kind: c for c in again.counts}
    assert again_counts["conversations"].copied == 0
    assert again_counts["conversations"].skipped == 7
    assert again_counts["agents"].skipped == 2
    assert again_counts["usage"].skipped == 3
    await _check_target(postgres_url, embedder, expected)


async def test_a_changed_target_conversation_is_written_again_and_counts_are_checked(
    tmp_path: Path, postgres_url: str, embedder: Embedder
) -> None:
    with trio.fail_after(120):
        await _changed_target(tmp_path, postgres_url, embedder)


async def _changed_target(tmp_path: Path, postgres_url: str, embedder: Embedder) -> None:
    data_dir = tmp_path / "data"
    expected = await _fill(data_dir, embedder)
    source = source_of(data_dir)
    assert (await migrate(source, postgres_url)).verified
    conversations = expected["conversations"]
    assert isinstance(conversations, list)
    cid = conversations[1][0].conversation_id
    with psycopg.connect(postgres_url) as conn:
        # half a conversation (an interruption between its transactions), and a stranger
        conn.execute(
            "DELETE FROM conversation_messages WHERE seq = (SELECT max(seq) FROM "
            "conversation_messages WHERE conversation_id = %s)",
            [cid],
        )
        conn.execute("INSERT INTO memory_relations VALUES ('X', 'Y', 'knows', 1, 1, now())")
    report = await migrate(source, postgres_url)
    counts = {c.kind: c for c in report.counts}
    assert counts["conversations"].copied == 1
    assert counts["conversations"].skipped == 6
    assert not report.verified
    assert report.mismatches == [f"relations: 3 in the source, 4 in {report.target}"]
    await _check_target(postgres_url, embedder, expected)


async def test_a_running_server_and_a_missing_data_dir_are_refused(
    tmp_path: Path, postgres_url: str
) -> None:
    with pytest.raises(MigrationRefused, match="does not exist"):
        await migrate(source_of(tmp_path / "nowhere"), postgres_url)
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    with hold_offline(data_dir), pytest.raises(MigrationRefused) as refused:
        await migrate(source_of(data_dir), postgres_url)
    assert f"(pid {os.getpid()}) is running on data_dir {data_dir}; stop it first" in str(
        refused.value
    )
    # no DuckDB file: named, with where to look
    with pytest.raises(StoreOpenError, match="does not exist"):
        await migrate(source_of(data_dir), postgres_url)


async def test_a_wrong_password_is_named_without_it(tmp_path: Path, postgres_url: str) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    async with open_store(data_dir / "memory.duckdb", migrations=embedded_migrations()):
        pass
    parts = psycopg.conninfo.conninfo_to_dict(postgres_url)
    wrong = postgres_url.replace(str(parts["password"]), "not-the-password-xyz")
    with pytest.raises(PostgresAuthFailed) as failed:
        await migrate(source_of(data_dir), wrong)
    assert "not-the-password-xyz" not in str(failed.value)
    assert "refused the password" in str(failed.value)
