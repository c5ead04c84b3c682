"""Two instances on one PostgreSQL database share their conversations (issue #15)."""

from __future__ import annotations

import functools

import trio
from postgres import load_postgres_tool

from caxton.messages import Message
from caxton.messaging import CLOSED, Conversations
from caxton.messaging.conversation_sql_postgres import POSTGRES_CONVERSATION_SQL
from caxton.messaging.schema import CONVERSATION_POSTGRES_MIGRATIONS
from caxton.store.postgres import open_postgres_store


def _open(url: str):
    return open_postgres_store(url, migrations=CONVERSATION_POSTGRES_MIGRATIONS)


async def test_a_conversation_begun_on_one_instance_continues_on_another(
    postgres_url: str,
) -> None:
    async with (
        _open(postgres_url) as store_a,
        _open(postgres_url) as store_b,
        trio.open_nursery() as nursery,
    ):
        a: Conversations = await nursery.start(
            Conversations(store_a, sql=POSTGRES_CONVERSATION_SQL).run
        )
        b: Conversations = await nursery.start(
            Conversations(store_b, sql=POSTGRES_CONVERSATION_SQL).run
        )
        first = Message(sender="client", receiver="assistant", content="hello")
        a.mark_new(first.conversation_id)
        a.record(first)
        a.record(first.reply("hi, what next?", sender="assistant"))
        await a.flush()
        cid = first.conversation_id
        assert await a.status(cid) == "active"
        # B never saw it: it reads the database, and learns who began it
        assert await b.status(cid) == "active"
        assert b.initiator(cid) == "client"
        follow_up = Message(
            conversation_id=cid, sender="client", receiver="assistant", content="more"
        )
        b.record(follow_up)
        assert [m.content for m in await b.recent(cid, 10)] == ["hello", "hi, what next?", "more"]
        assert (await a.summary(cid)).message_count == 3
        # B closes it; A, whose memory said active, sees it closed
        await b.close(cid)
        assert await a.status(cid) == CLOSED
        nursery.cancel_scope.cancel()


async def test_a_conversation_swept_elsewhere_is_written_again(postgres_url: str) -> None:
    now = [1_000_000.0]
    async with (
        _open(postgres_url) as store_a,
        _open(postgres_url) as store_b,
        trio.open_nursery() as nursery,
    ):
        a: Conversations = await nursery.start(
            Conversations(store_a, sql=POSTGRES_CONVERSATION_SQL, clock=lambda: now[0]).run
        )
        b: Conversations = await nursery.start(
            Conversations(
                store_b, sql=POSTGRES_CONVERSATION_SQL, ttl_s=10, clock=lambda: now[0]
            ).run
        )
        a.record(Message(conversation_id="c", sender="x", receiver="y", created_at=now[0]))
        await a.flush()  # A wrote the row
        now[0] += 60
        assert await b.sweep() == 1  # B removed it
        assert await a.status("c") is None
        again = Message(conversation_id="c", sender="x", receiver="y", created_at=now[0])
        a.record(again)
        await a.flush()  # not a plain update of a row that is gone
        summary = await b.summary("c")
        assert (summary.message_count, summary.created_at) == (1, now[0])
        assert await b.recent("c", 10) == [again]
        nursery.cancel_scope.cancel()


async def test_messages_recorded_while_postgresql_is_down_are_written_when_it_is_back(
    own_postgres: object,
) -> None:
    tool = load_postgres_tool()
    directory = own_postgres.directory  # type: ignore[attr-defined]
    url: str = own_postgres.url  # type: ignore[attr-defined]
    with trio.fail_after(60):
        async with (
            open_postgres_store(
                url, migrations=CONVERSATION_POSTGRES_MIGRATIONS, connect_timeout_s=1
            ) as store,
            trio.open_nursery() as nursery,
        ):
            conversations = Conversations(
                store, sql=POSTGRES_CONVERSATION_SQL, flush_interval_s=0.05, max_held=50
            )
            await nursery.start(conversations.run)
            first = Message(sender="client", receiver="assistant", content="before")
            conversations.mark_new(first.conversation_id)
            conversations.record(first)
            await conversations.flush()
            await trio.to_thread.run_sync(tool.stop, directory)
            cid = first.conversation_id
            later = [
                Message(conversation_id=cid, sender="client", receiver="assistant", content=str(i))
                for i in range(60)
            ]
            for message in later:
                conversations.record(message)
            while not conversations.statistics()["dropped"]:
                await trio.sleep(0.05)  # the writer tried, failed, and holds them
            stats = conversations.statistics()
            assert stats["queued"] == 50  # bounded: the oldest ten were dropped, and counted
            assert stats["dropped"] == 10
            await trio.to_thread.run_sync(functools.partial(tool.start, directory, fsync=False))
            while conversations.statistics()["queued"]:
                await trio.sleep(0.1)  # written by the writer's own retries
            contents = [m.content for m in await conversations.recent(cid, 100)]
            assert contents == ["before", *(str(i) for i in range(10, 60))]
            nursery.cancel_scope.cancel()
