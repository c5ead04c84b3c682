"""inotify on agents_dir (caxton.agents.dir_events) with real files and real worker threads."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

import pytest
import trio

from caxton.agents.dir_events import Changes, DirectoryEvents, open_directory_events

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

DEBOUNCE_S = 0.1


@pytest.fixture
def events(tmp_path: Path) -> Iterator[DirectoryEvents]:
    opened = open_directory_events(tmp_path)
    if opened is None:
        pytest.skip("no inotify on this system")
    yield opened
    opened.close()


async def waited(
    events: DirectoryEvents, *, debounce_s: float = DEBOUNCE_S, within_s: float = 10.0
) -> Changes | None:
    """``events.wait`` in a worker thread, stopped after ``within_s`` (None then), so that a
    failing test does not hang on a thread nothing wakes."""
    async with trio.open_nursery() as nursery:

        async def watchdog() -> None:
            await trio.sleep(within_s)
            events.stop()

        nursery.start_soon(watchdog)
        changes = await trio.to_thread.run_sync(events.wait, debounce_s)
        nursery.cancel_scope.cancel()
    return changes


def switches(native_id: int) -> int:
    """Times the thread went to sleep (voluntary context switches)."""
    with open(f"/proc/self/task/{native_id}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches line")


async def test_changes_are_reported_by_name_in_one_batch(
    events: DirectoryEvents, tmp_path: Path
) -> None:
    async def write_files() -> None:
        await trio.sleep(0.05)
        (tmp_path / "a.toml").write_text("one")
        (tmp_path / "b.wat").write_text("two")
        (tmp_path / "a.toml").write_text("three")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_files)
        changes = await waited(events)
    assert changes == Changes(names=frozenset({"a.toml", "b.wat"}))

    # a rename reports both names; a removal its name
    (tmp_path / "a.toml").rename(tmp_path / "c.toml")
    (tmp_path / "b.wat").unlink()
    changes = await waited(events)
    assert changes is not None
    assert changes.names == {"a.toml", "c.toml", "b.wat"}


async def test_changes_closer_than_the_debounce_are_one_batch(
    events: DirectoryEvents, tmp_path: Path
) -> None:
    """``agents.debounce``: five writes 0.1 s apart (0.4 s in all, longer than the 0.3 s
    debounce) come as one batch; one after a pause longer than the debounce comes alone."""
    debounce_s = 0.3

    async def write_files() -> None:
        for index in range(5):
            (tmp_path / f"{index}.toml").write_text("x")
            await trio.sleep(0.1)
        await trio.sleep(debounce_s * 3)
        (tmp_path / "late.toml").write_text("x")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(write_files)
        first = await waited(events, debounce_s=debounce_s)
        second = await waited(events, debounce_s=debounce_s)
    assert first is not None
    assert first.names == {f"{index}.toml" for index in range(5)}
    assert second == Changes(names=frozenset({"late.toml"}))


async def test_the_waiting_thread_sleeps_until_stopped(events: DirectoryEvents) -> None:
    """No periodic wake-ups while nothing changes (watchfiles' loop woke four times a second
    for its stop event), and stop() ends the wait at once."""
    thread_ids: list[int] = []

    def wait() -> Changes | None:
        thread_ids.append(threading.get_native_id())
        return events.wait(DEBOUNCE_S)

    result: list[Changes | None] = []

    async def waiting() -> None:
        result.append(await trio.to_thread.run_sync(wait))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiting)
        try:
            await trio.sleep(0.3)  # the thread is in poll(2) by now
            asleep = switches(thread_ids[0])
            await trio.sleep(1.0)
            slept = switches(thread_ids[0])
        finally:
            stopped_at = trio.current_time()
            events.stop()
    assert trio.current_time() - stopped_at < 1.0
    assert slept == asleep
    assert result == [None]


async def test_a_removed_directory_is_reported_gone(tmp_path: Path) -> None:
    watched = tmp_path / "agents"
    watched.mkdir()
    opened = open_directory_events(watched)
    if opened is None:
        pytest.skip("no inotify on this system")
    try:
        (watched / "x.toml").write_text("x")
        (watched / "x.toml").unlink()
        watched.rmdir()
        changes = await waited(opened)
        assert changes is not None
        assert changes.gone
        assert "x.toml" in changes.names
    finally:
        opened.close()


def test_a_missing_directory_gives_none(tmp_path: Path) -> None:
    """The caller then falls back to watchfiles (which names the problem)."""
    assert open_directory_events(tmp_path / "missing") is None
