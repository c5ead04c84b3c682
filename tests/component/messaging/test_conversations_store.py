"""The conversations component over a real DuckDB store: batches, reads, TTL, shutdown."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
import trio
from conversation_backends import BACKENDS, make_backend

from caxton.messages import Message
from caxton.messaging.maintenance import ConversationSweeper

if TYPE_CHECKING:
    from conversation_backends import ConversationBackend

    from caxton.messaging import Conversations


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> ConversationBackend:
    return make_backend(request)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


async def test_recent_returns_the_last_messages_oldest_first(backend: ConversationBackend) -> None:
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations: Conversations = await nursery.start(backend.conversations(store).run)
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


async def test_ttl_sweeper_removes_idle_conversations(backend: ConversationBackend) -> None:
    clock = Clock()
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        conversations = backend.conversations(store, ttl_s=3600, clock=clock)
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


async def test_what_is_queued_is_written_at_shutdown(backend: ConversationBackend) -> None:
    message = Message(conversation_id="c", sender="a", receiver="b", content="kept")
    async with (
        backend.open() as store,
        trio.open_nursery() as nursery,
    ):
        # a long batching interval: only the shutdown flush can write the message
        conversations = backend.conversations(store, flush_interval_s=3600)
        await nursery.start(conversations.run)
        conversations.record(message)
        await trio.testing.wait_all_tasks_blocked()
        assert conversations.statistics()["queued"] == 1
        nursery.cancel_scope.cancel()
    async with backend.open() as store:
        assert await backend.conversations(store).recent("c", 5) == [message]
