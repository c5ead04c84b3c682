"""Two instances on one PostgreSQL database share their conversations (issue #15)."""

from __future__ import annotations

import trio

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
