"""Notices between instances over a real PostgreSQL (tests/postgres.py).

Thread-backed (psycopg runs in worker threads), so these run on the real clock with generous
caps (STYLE 16).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from typing import TYPE_CHECKING, Any

import pytest
import trio
from postgres import load_postgres_tool

from caxton.cluster import RESYNC, Notifier
from caxton.store.errors import PostgresUnreachable, StorageUnavailable
from caxton.store.postgres import PostgresStore, open_postgres_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    import psycopg


class Inbox:
    """Records what a handler received, with when."""

    def __init__(self) -> None:
        self.received: list[tuple[str, dict[str, Any], float]] = []
        self._changed = trio.Event()

    async def __call__(self, kind: str, payload: dict[str, Any]) -> None:
        self.received.append((kind, payload, time.monotonic()))
        self._changed.set()
        self._changed = trio.Event()

    def kinds(self) -> list[str]:
        return [kind for kind, _, _ in self.received]

    async def wait_for(self, count: int) -> None:
        while len(self.received) < count:
            await self._changed.wait()


@contextlib.asynccontextmanager
async def instance(
    url: str, instance_id: str, **options: Any
) -> AsyncIterator[tuple[PostgresStore, Notifier]]:
    """One instance's store and Notifier on ``url``."""
    async with open_postgres_store(url, connect_timeout_s=1) as store, trio.open_nursery() as n:
        notifier = Notifier(url, instance_id=instance_id, store=store, **options)
        await n.start(notifier.run)
        yield store, notifier
        n.cancel_scope.cancel()


async def test_a_notice_reaches_the_other_instance_within_a_second_and_not_its_own(
    postgres_url: str,
) -> None:
    a_inbox, b_inbox = Inbox(), Inbox()
    with trio.fail_after(30):
        async with (
            instance(postgres_url, "a") as (_, a),
            instance(postgres_url, "b") as (_, b),
        ):
            a.subscribe("agent", a_inbox)
            b.subscribe("agent", b_inbox)
            sent = time.monotonic()
            await a.publish("agent", {"name": "echo"})
            with trio.fail_after(1):
                await b_inbox.wait_for(1)
            kind, payload, at = b_inbox.received[0]
            assert (kind, payload) == ("agent", {"name": "echo"})
            assert at - sent < 1
            await trio.sleep(0.6)  # a reads its own notice and ignores it
            assert a_inbox.received == []
            assert a.statistics().own_total == 1
            assert a.statistics().published_total == 1
            assert b.statistics().delivered_total == 1


async def test_an_idle_notifier_waits_on_its_socket_and_still_pings(postgres_url: str) -> None:
    # issue #21: reading every poll_s woke an idle server twice a second
    inbox = Inbox()
    with trio.fail_after(30):
        async with (
            instance(postgres_url, "a") as (_, a),
            instance(postgres_url, "b", ping_interval_s=1.0) as (_, b),
        ):
            b.subscribe("agent", inbox)
            while (reads := b.statistics().reads_total) < 1:  # the first, at start
                await trio.sleep(0.01)
            await trio.sleep(1.6)
            # no traffic: one read only, the ping after 1 s (polling read every 0.5 s)
            assert b.statistics().reads_total - reads == 1
            sent = time.monotonic()
            await a.publish("agent", {"name": "echo"})
            with trio.fail_after(1):
                await inbox.wait_for(1)
            assert inbox.received[0][2] - sent < 0.5  # woken by the notice, not a ping


async def test_a_notice_sent_in_a_transaction_arrives_only_if_it_commits(
    postgres_url: str,
) -> None:
    inbox = Inbox()
    with trio.fail_after(30):
        async with (
            instance(postgres_url, "a") as (store, a),
            instance(postgres_url, "b") as (_, b),
        ):
            b.subscribe("safe_mode", inbox)

            def rolled_back(conn: psycopg.Connection) -> None:
                a.notify(conn, "safe_mode", {"enabled": True, "attempt": 1})
                raise ValueError("the change failed")

            with pytest.raises(ValueError, match="the change failed"):
                await store.execute_write_fn(rolled_back)
            await store.execute_write_fn(
                lambda conn: a.notify(conn, "safe_mode", {"enabled": True, "attempt": 2})
            )
            with trio.fail_after(1):
                await inbox.wait_for(1)
            await trio.sleep(0.6)
            assert [p for _, p, _ in inbox.received] == [{"enabled": True, "attempt": 2}]
            # kinds nobody subscribed to are read and dropped
            await a.publish("agent", {"name": "echo"})
            while b.statistics().unsubscribed_total < 1:
                await trio.sleep(0.05)


async def test_a_slow_handler_does_not_stall_others_and_repeats_coalesce(
    postgres_url: str,
) -> None:
    release = trio.Event()
    slow_calls: list[dict[str, Any]] = []

    async def slow(kind: str, payload: dict[str, Any]) -> None:
        slow_calls.append(payload)
        await release.wait()

    fast = Inbox()
    with trio.fail_after(30):
        async with (
            instance(postgres_url, "a") as (_, a),
            instance(postgres_url, "b", workers=2) as (_, b),
        ):
            b.subscribe("agent", slow)
            b.subscribe("safe_mode", fast)
            await a.publish("agent", {"name": "echo"})
            # The first one is in the slow handler before the repeats come (on a busy machine
            # they could otherwise all arrive before the handler starts, and coalesce into it).
            with trio.fail_after(5):
                while not slow_calls:
                    await trio.sleep(0.01)
            for _ in range(9):
                await a.publish("agent", {"name": "echo"})
            await a.publish("safe_mode", {"enabled": True})
            with trio.fail_after(2):
                await fast.wait_for(1)  # while the slow handler still runs
            assert slow_calls == [{"name": "echo"}]
            assert b.statistics().pending == 1  # the ten repeats, waiting as one
            release.set()
            while b.statistics().pending or len(slow_calls) < 2:
                await trio.sleep(0.05)
            await trio.sleep(0.3)
            assert slow_calls == [{"name": "echo"}] * 2
            assert b.statistics().coalesced_total == 8


async def test_a_failing_handler_is_logged_and_the_next_notice_still_delivered(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    inbox = Inbox()

    async def broken(kind: str, payload: dict[str, Any]) -> None:
        if payload["name"] == "bad":
            raise RuntimeError("handler bug")
        await inbox(kind, payload)

    with trio.fail_after(30):
        async with (
            instance(postgres_url, "a") as (_, a),
            instance(postgres_url, "b", workers=1) as (_, b),
        ):
            b.subscribe("agent", broken)
            await a.publish("agent", {"name": "bad"})
            await a.publish("agent", {"name": "good"})
            with trio.fail_after(2):
                await inbox.wait_for(1)
            assert b.statistics().handler_errors_total == 1
    assert any("handler bug" in (r.exc_text or "") for r in caplog.records)


async def test_cancelling_a_notifier_takes_effect_within_its_poll(postgres_url: str) -> None:
    with trio.fail_after(30):
        async with open_postgres_store(postgres_url) as store:
            async with trio.open_nursery() as nursery:
                notifier = Notifier(postgres_url, instance_id="a", store=store, poll_s=0.5)
                await nursery.start(notifier.run)
                await trio.sleep(0.1)  # a read is waiting in its thread
                started = time.monotonic()
                nursery.cancel_scope.cancel()
            assert time.monotonic() - started < 0.8
            assert not notifier.statistics().listening

            def listeners(conn: psycopg.Connection) -> int:
                row = conn.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'caxton-notify'"
                ).fetchone()
                assert row is not None
                return int(row[0])

            while await store.execute_fn(listeners):  # the connection was closed
                await trio.sleep(0.05)


async def test_a_notifier_that_cannot_connect_at_start_says_so() -> None:
    async with open_postgres_store_stub() as store:
        notifier = Notifier("postgresql://caxton@127.0.0.1:9/none", instance_id="a", store=store)
        with trio.fail_after(10), pytest.raises(PostgresUnreachable, match="notices"):
            await notifier.run()


@contextlib.asynccontextmanager
async def open_postgres_store_stub() -> AsyncIterator[PostgresStore]:
    """A store never started: the Notifier fails before it would publish through it."""
    yield PostgresStore("postgresql://caxton@127.0.0.1:9/none")


async def publish_when_back(notifier: Notifier, kind: str, payload: dict[str, Any]) -> None:
    while True:
        try:
            await notifier.publish(kind, payload)
            return
        except StorageUnavailable:
            await trio.sleep(0.1)


@pytest.mark.postgres
@pytest.mark.slow
async def test_a_notifier_survives_postgres_restarting_and_resyncs(
    own_postgres: object, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="caxton.cluster.notify")
    tool = load_postgres_tool()
    directory = own_postgres.directory  # type: ignore[attr-defined]
    url: str = own_postgres.url  # type: ignore[attr-defined]
    inbox = Inbox()
    with trio.fail_after(90):
        async with (
            instance(url, "a", max_backoff_s=0.5) as (_, a),
            instance(url, "b", max_backoff_s=0.5) as (_, b),
        ):
            b.subscribe("agent", inbox)
            await a.publish("agent", {"name": "before"})
            with trio.fail_after(1):
                await inbox.wait_for(1)
            await trio.to_thread.run_sync(tool.stop, directory)
            await trio.sleep(1.5)  # several reconnection attempts fail meanwhile
            await trio.to_thread.run_sync(functools.partial(tool.start, directory, fsync=False))
            with trio.fail_after(10):
                await inbox.wait_for(2)
            assert inbox.received[1][:2] == (RESYNC, {"reason": "reconnected"})
            assert b.statistics().reconnects_total == 1
            assert b.statistics().listening
            while not a.statistics().listening:  # a must listen again too, for a fair test
                await trio.sleep(0.05)
            await publish_when_back(a, "agent", {"name": "after"})
            with trio.fail_after(1):
                await inbox.wait_for(3)
            assert inbox.kinds() == ["agent", RESYNC, "agent"]
            assert inbox.received[2][1] == {"name": "after"}
    lost = [r for r in caplog.records if "was lost" in r.getMessage()]
    back = [r for r in caplog.records if "again after" in r.getMessage()]
    assert len(lost) == 2  # once per instance, not once per attempt
    assert len(back) == 2
