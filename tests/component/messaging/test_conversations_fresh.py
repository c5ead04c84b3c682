"""Conversations minted here are inserted, not upserted, by the batch writer: same rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from conversation_backends import BACKENDS, make_backend

from caxton.messages import Message

if TYPE_CHECKING:
    from conversation_backends import ConversationBackend

    from caxton.messaging import Conversations


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> ConversationBackend:
    return make_backend(request)


async def test_a_minted_conversation_spanning_batches_is_counted_once(
    backend: ConversationBackend,
) -> None:
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(backend.conversations(store).run)
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


async def test_a_fresh_id_already_stored_falls_back_to_the_upsert(
    backend: ConversationBackend,
) -> None:
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(backend.conversations(store).run)
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


async def test_recorded_messages_survive_a_restart(backend: ConversationBackend) -> None:
    message = Message(sender="client", receiver="echo", content={"k": [1, 2]})
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(
            backend.conversations(store, flush_interval_s=60).run
        )
        conversations.mark_new(message.conversation_id)
        conversations.record(message)
        nursery.cancel_scope.cancel()  # written at shutdown, not 60 s later
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations = await nursery.start(backend.conversations(store).run)
        assert await conversations.recent(message.conversation_id, 10) == [message]
        assert (await conversations.summary(message.conversation_id)).message_count == 1
        nursery.cancel_scope.cancel()


async def test_status_answers_without_writing_what_is_queued(backend: ConversationBackend) -> None:
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(
            backend.conversations(store, flush_interval_s=60, status_cache=1).run
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


async def test_every_value_survives_the_batch_encoding(backend: ConversationBackend) -> None:
    odd = [
        Message(sender="a", receiver="b", content="it's 'quoted' -- ; COMMIT; \\ \u00e9 \u2603"),
        Message(sender=None, capability="c", content={"k": ["x'y", 1.5, None, {"n": True}]}),
        Message(
            performative="inform",
            sender="b",
            receiver="a",
            content="",
            reply_with="r'1",
            in_reply_to='m"2',
            created_at=1e-7,
            hop=8,
        ),
    ]
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(backend.conversations(store).run)
        for message in odd:
            conversations.record(message)
        await conversations.flush()
        for message in odd:
            assert await conversations.recent(message.conversation_id, 10) == [message]
        nursery.cancel_scope.cancel()


async def test_a_conversation_is_inserted_updated_and_after_a_sweep_inserted_again(
    backend: ConversationBackend,
) -> None:
    now = [1_000_000.0]
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(
            backend.conversations(store, ttl_s=10, clock=lambda: now[0]).run
        )
        first = Message(conversation_id="c", sender="a", receiver="b", created_at=now[0])
        conversations.mark_new("c")
        conversations.record(first)
        await conversations.flush()  # inserted
        second = Message(conversation_id="c", sender="b", receiver="a", created_at=now[0] + 1)
        conversations.record(second)
        await conversations.flush()  # updated: written here before
        summary = await conversations.summary("c")
        assert (summary.message_count, summary.last_activity) == (2, now[0] + 1)
        now[0] += 60
        assert await conversations.sweep() == 1
        again = Message(conversation_id="c", sender="a", receiver="b", created_at=now[0])
        conversations.record(again)
        await conversations.flush()  # the sweep removed it: written as new again
        summary = await conversations.summary("c")
        assert (summary.message_count, summary.created_at) == (1, now[0])
        assert await conversations.recent("c", 10) == [again]
        nursery.cancel_scope.cancel()
