"""The conversations component over a real DuckDB store: batches, reads, TTL, shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from caxton.messages import Message
from caxton.messaging import CONVERSATION_MIGRATIONS, Conversations
from caxton.messaging.maintenance import ConversationSweeper
from caxton.store import open_store

if TYPE_CHECKING:
    from pathlib import Path


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_recent_returns_the_last_messages_oldest_first(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path / "db.duckdb", migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(Conversations(store).run)
        sent = [
            Message(conversation_id="c", sender="a", receiver="b", content=f"m{i}")
            for i in range(5)
        ]
        sent.append(sent[0].reply({"n": 1, "nested": [1, "x"]}, sender="b"))
        for message in sent:
            conversations.record(message)
        conversations.record(Message(conversation_id="other", sender="z", capability="c"))
        recent = await conversations.recent("c", 3)
        assert recent == sent[-3:]
        assert await conversations.recent("c", 100) == sent
        assert await conversations.recent("missing", 5) == []
        summary = await conversations.summary("c")
        assert summary.message_count == 6
        assert summary.participants == ("a", "b")
        assert summary.last_activity == max(m.created_at for m in sent)
        rows, total = await conversations.list(participant="z")
        assert total == 1
        assert rows[0].conversation_id == "other"
        nursery.cancel_scope.cancel()


async def test_ttl_sweeper_removes_idle_conversations(tmp_path: Path) -> None:
    clock = Clock()
    async with (
        open_store(tmp_path / "db.duckdb", migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        conversations = Conversations(store, ttl_s=3600, clock=clock)
        await nursery.start(conversations.run)
        conversations.record(Message(conversation_id="old", sender="a", created_at=clock.now))
        conversations.record(
            Message(conversation_id="new", sender="a", created_at=clock.now + 3000)
        )
        clock.now += 3700
        sweeper: ConversationSweeper = await nursery.start(
            ConversationSweeper(conversations, interval_s=3600).run
        )
        assert sweeper.removed == 1
        assert await conversations.status("old") is None
        assert await conversations.recent("old", 10) == []
        assert await conversations.status("new") == "active"
        clock.now += 3000
        assert await conversations.sweep() == 1
        assert (await conversations.list())[1] == 0
        nursery.cancel_scope.cancel()


async def test_what_is_queued_is_written_at_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "db.duckdb"
    message = Message(conversation_id="c", sender="a", receiver="b", content="kept")
    async with (
        open_store(path, migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        # a long batching interval: only the shutdown flush can write the message
        conversations = Conversations(store, flush_interval_s=3600)
        await nursery.start(conversations.run)
        conversations.record(message)
        await trio.testing.wait_all_tasks_blocked()
        assert conversations.statistics()["queued"] == 1
        nursery.cancel_scope.cancel()
    async with open_store(path, migrations=CONVERSATION_MIGRATIONS) as store:
        assert await Conversations(store).recent("c", 5) == [message]
