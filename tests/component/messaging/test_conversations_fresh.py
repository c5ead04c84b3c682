"""Conversations minted here are inserted, not upserted, by the batch writer: same rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from caxton.messages import Message
from caxton.messaging import CONVERSATION_MIGRATIONS, Conversations
from caxton.store import open_store

if TYPE_CHECKING:
    from pathlib import Path


async def test_a_minted_conversation_spanning_batches_is_counted_once(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path / "db.duckdb", migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(Conversations(store).run)
        first = Message(sender="client", receiver="echo", content="hi")
        conversations.mark_new(first.conversation_id)
        conversations.record(first)
        await conversations.flush()  # the insert
        reply = first.reply("hi", sender="echo")
        conversations.record(reply)
        await conversations.flush()  # the upsert of the same conversation
        summary = await conversations.summary(first.conversation_id)
        assert summary.message_count == 2
        assert summary.created_at == first.created_at
        assert summary.last_activity == max(first.created_at, reply.created_at)
        assert await conversations.recent(first.conversation_id, 10) == [first, reply]
        nursery.cancel_scope.cancel()


async def test_a_fresh_id_already_stored_falls_back_to_the_upsert(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path / "db.duckdb", migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(Conversations(store).run)
        first = Message(conversation_id="c", sender="a", receiver="b", content="one")
        conversations.record(first)
        await conversations.flush()
        conversations.mark_new("c")  # wrongly: "c" is stored already
        second = Message(conversation_id="c", sender="a", receiver="b", content="two")
        conversations.record(second)
        await conversations.flush()
        assert (await conversations.summary("c")).message_count == 2
        assert await conversations.recent("c", 10) == [first, second]
        nursery.cancel_scope.cancel()


async def test_recorded_messages_survive_a_restart(tmp_path: Path) -> None:
    message = Message(sender="client", receiver="echo", content={"k": [1, 2]})
    async with (
        open_store(tmp_path / "db.duckdb", migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(
            Conversations(store, flush_interval_s=60).run
        )
        conversations.mark_new(message.conversation_id)
        conversations.record(message)
        nursery.cancel_scope.cancel()  # written at shutdown, not 60 s later
    async with (
        open_store(tmp_path / "db.duckdb", migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        conversations = await nursery.start(Conversations(store).run)
        assert await conversations.recent(message.conversation_id, 10) == [message]
        assert (await conversations.summary(message.conversation_id)).message_count == 1
        nursery.cancel_scope.cancel()


async def test_status_answers_without_writing_what_is_queued(tmp_path: Path) -> None:
    async with (
        open_store(tmp_path / "db.duckdb", migrations=CONVERSATION_MIGRATIONS) as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(
            Conversations(store, flush_interval_s=60, status_cache=1).run
        )
        queued = Message(sender="client", receiver="echo", content="hi")
        conversations.record(queued)
        conversations.record(Message(sender="client", receiver="echo", content="evicts"))
        # the cache forgot the first conversation: its queued message still says it exists
        assert await conversations.status(queued.conversation_id) == "active"
        assert await conversations.status("never-seen") is None
        assert conversations.statistics()["queued"] == 2  # neither answer wrote the queue
        await conversations.flush()
        assert await conversations.status("never-seen") is None
        await conversations.close(queued.conversation_id)
        assert await conversations.status(queued.conversation_id) == "closed"
        nursery.cancel_scope.cancel()
