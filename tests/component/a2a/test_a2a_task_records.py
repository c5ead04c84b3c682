"""The bounds of ``a2a_tasks`` on a real DuckDB store (issue #19): at most ``a2a.max_tasks``
rows (the oldest finished go first; a new task is refused while that many run), finished
rows deleted ``a2a.task_ttl`` after they ended, and ListTasks' pages read from the rows."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING

import pytest
import trio
from servers import loopback_config

from caxton.a2a import service as a2a_service
from caxton.a2a.records import TaskRecords
from caxton.a2a.schema import A2A_TASK_MIGRATIONS
from caxton.a2a.tasks import COMPLETED, WORKING, A2ATask
from caxton.a2a.wire import RpcError
from caxton.cluster import NullNotifier
from caxton.server import ServerInfo, serve
from caxton.store import open_store

if TYPE_CHECKING:
    from pathlib import Path


def task(number: int, at: float, *, state: str = COMPLETED) -> A2ATask:
    made = A2ATask(
        id=f"t{number}",
        context_id="ctx",
        agent="echo",
        owner="client",
        created_at=at,
        updated_at=at,
        state=state,
    )
    made.history.append({"messageId": f"m{number}", "parts": [{"text": "x" * 100}]})
    return made


async def test_rows_are_bounded_by_count_and_age(tmp_path: Path) -> None:
    now = [1000.0]
    async with open_store(tmp_path / "tasks.duckdb", migrations=A2A_TASK_MIGRATIONS) as store:
        records = TaskRecords(
            store,
            notices=NullNotifier("here"),
            instance_id="here",
            max_tasks=3,
            ttl_s=60,
            clock=lambda: now[0],
        )
        for number in range(3):
            await records.insert(task(number, 1000.0 + number))
        # a fourth row: the oldest finished one makes room
        await records.insert(task(3, 1003.0, state=WORKING))
        listed, total = await records.page(agent="echo", owner="client", size=10)
        assert ([t.id for t in listed], total) == (["t3", "t2", "t1"], 3)
        assert await records.get("t0") is None
        # pages: most recently updated first, then the rest
        first, _ = await records.page(agent="echo", owner="client", size=2)
        rest, _ = await records.page(agent="echo", owner="client", offset=2, size=2)
        assert [t.id for t in first + rest] == ["t3", "t2", "t1"]
        assert (await records.page(agent="echo", owner="someone", size=10))[1] == 0
        # while max_tasks run, a new one is refused with a message that says why
        for number in (4, 5):
            await records.insert(task(number, 1004.0, state=WORKING))
        with pytest.raises(RpcError, match=r"a2a\.max_tasks"):
            await records.insert(task(6, 1005.0, state=WORKING))
        # the row of a task that ended keeps what it said; past the ttl it is gone
        ended = task(3, 1010.0)
        assert await records.save(ended)
        row = await records.get("t3")
        assert row is not None
        assert (row.task.state, row.instance) == (COMPLETED, "here")
        assert len(row.task.history) == 1
        now[0] = 1100.0
        assert await records.get("t3") is None  # expired, though not swept yet
        assert await records.expire() == 1
        listed, total = await records.page(agent="echo", owner="client", size=10)
        assert sorted(t.id for t in listed) == ["t4", "t5"]
        # a task another run of this server left working is an orphan; its own are not
        assert [r.task.id for r in await records.orphans()] == []
        later = TaskRecords(
            store, notices=NullNotifier("next"), instance_id="next", max_tasks=3, ttl_s=60
        )
        assert sorted(r.task.id for r in await later.orphans()) == ["t4", "t5"]


async def test_an_idle_one_node_server_leaves_the_store_alone(
    monkeypatch: pytest.MonkeyPatch, nursery: trio.Nursery, tmp_path: Path
) -> None:
    """On a store this process alone writes, the A2A sweep only expires finished rows, every
    EXPIRE_INTERVAL_S: nothing else can fail its tasks or ask to cancel them (it used to write
    and read the store every SWEEP_INTERVAL_S, idle or not)."""
    monkeypatch.setattr(a2a_service, "SWEEP_INTERVAL_S", 0.05)
    monkeypatch.setattr(a2a_service, "EXPIRE_INTERVAL_S", 1.5)
    loaded = loopback_config(tmp_path / "data")
    info: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    store = info.services.store
    assert not store.shared
    await info.services.memory.wait_entity_cache()
    await trio.sleep(0.2)  # what the start left running is done
    before = store.statistics()
    await trio.sleep(0.5)  # ten cluster sweeps' time
    idle = store.statistics()
    assert (idle.writes_total, idle.reads_total) == (before.writes_total, before.reads_total)
    with trio.fail_after(10):  # the expiry still comes
        while store.statistics().writes_total == idle.writes_total:
            await trio.sleep(0.05)
