"""What the PostgreSQL and Qdrant stores share around their calls: the down probe (on a clock
the test moves) and the bounded close that waits for running calls (on trio's autojump clock:
no threads here)."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from caxton.store.calls import (
    DOWN_PROBE_INTERVAL_S,
    DownProbe,
    close_within,
    holding_every_token,
)
from caxton.store.errors import MemoryUnavailable, StorageUnavailable

WHERE = "http://127.0.0.1:6333"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def probe(clock: Clock) -> DownProbe:
    return DownProbe(
        server="Qdrant",
        where=WHERE,
        logger=logging.getLogger("caxton.store.qdrant"),
        unavailable=MemoryUnavailable,
        down_reason=lambda exc: exc.reason if isinstance(exc, MemoryUnavailable) else None,
        clock=clock,
    )


def call(guard: DownProbe, clock: Clock, *, took_s: float = 0.0, raises: Exception) -> None:
    """A call to the server that takes ``took_s`` and ends in ``raises``."""
    with guard.call():
        clock.now += took_s
        raise raises


def down(reason: str = "ConnectError: refused") -> MemoryUnavailable:
    return MemoryUnavailable(WHERE, reason)


def test_a_server_that_stops_answering_fails_calls_at_once_but_one_probe_a_second(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="caxton.store.qdrant")
    clock = Clock()
    guard = probe(clock)
    with guard.call():
        pass
    assert guard.down_since is None
    assert not caplog.records

    with pytest.raises(MemoryUnavailable):  # the outage began when this call started
        call(guard, clock, took_s=0.5, raises=down())
    assert guard.down_since == 100.0
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "caxton.store.qdrant",
            "WARNING",
            f"Qdrant {WHERE} stopped answering: ConnectError: refused",
        )
    ]

    clock.now += 0.5  # before the next probe: at once, no call
    for _ in range(3):
        with pytest.raises(MemoryUnavailable) as caught, guard.call():
            raise AssertionError("a refused call does not reach the server")
    assert caught.value.reason == "ConnectError: refused (1 s ago; trying again every 1 s)"
    assert caught.value.code == "MEMORY_UNAVAILABLE"
    assert guard.refused_total == 3

    clock.now += DOWN_PROBE_INTERVAL_S  # the probe goes through, fails again: no new warning
    with pytest.raises(MemoryUnavailable), guard.call():
        raise down("ConnectError: reset")
    assert guard.down_since == 100.0
    assert len(caplog.records) == 1
    with pytest.raises(MemoryUnavailable, match=r"ConnectError: reset \(2 s ago"), guard.call():
        pass

    clock.now += DOWN_PROBE_INTERVAL_S  # the next probe is answered: it ends the outage
    with guard.call():
        pass
    assert guard.down_since is None
    assert caplog.records[-1].levelname == "INFO"
    assert caplog.records[-1].getMessage() == f"Qdrant {WHERE} answers again after 3.0 s"
    with guard.call():  # and calls go through again
        pass
    assert guard.refused_total == 4
    assert len(caplog.records) == 2


def test_errors_that_do_not_say_the_server_is_down_leave_the_probe_as_it_was() -> None:
    clock = Clock()
    guard = DownProbe(
        server="PostgreSQL",
        where="postgresql://caxton@db:5432/caxton",
        logger=logging.getLogger("caxton.store.postgres"),
        unavailable=StorageUnavailable,
        down_reason=lambda exc: None,  # say, a statement over its timeout
        clock=clock,
    )
    with pytest.raises(StorageUnavailable), guard.call():
        raise StorageUnavailable(guard.where, "canceling statement due to statement timeout")
    with pytest.raises(KeyError), guard.call():
        raise KeyError("the call's own error")
    assert guard.down_since is None
    with guard.call():
        pass
    assert guard.refused_total == 0


async def test_close_waits_for_the_running_calls_and_is_bounded(
    autojump_clock: trio.testing.MockClock,
) -> None:
    limiter = trio.CapacityLimiter(2)
    closed_at: list[float] = []

    async def call(duration_s: float) -> None:
        async with limiter:
            await trio.sleep(duration_s)

    async def close() -> None:
        async with holding_every_token(limiter):
            closed_at.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 3.0)
        nursery.start_soon(call, 5.0)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        assert await close_within(10.0, close)
    assert closed_at == [start + 5.0]
    assert limiter.borrowed_tokens == 0  # the close gave the tokens back

    async with trio.open_nursery() as nursery:
        nursery.start_soon(call, 60.0)
        await trio.testing.wait_all_tasks_blocked()
        start = trio.current_time()
        with trio.CancelScope() as outer:
            outer.cancel()  # the store's run is being cancelled: the close is shielded
            assert not await close_within(10.0, close)
        assert trio.current_time() == start + 10.0
        assert limiter.borrowed_tokens == 1  # the call's own, none left by the close
        nursery.cancel_scope.cancel()
    assert len(closed_at) == 1  # the second close never got the tokens
