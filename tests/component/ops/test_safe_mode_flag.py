"""The safe-mode flag kept as a file or a PostgreSQL row, and re-read on request (issue #15)."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import pytest

from caxton.ops.safe_mode import (
    OFF,
    SAFE_MODE_POSTGRES_MIGRATIONS,
    FileSafeModeFlag,
    PostgresSafeModeFlag,
    SafeMode,
    SafeModeFlag,
    enabled_now,
    read_flag,
    write_flag,
)
from caxton.store.postgres import open_postgres_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable
    from pathlib import Path


@pytest.fixture(params=["files", pytest.param("postgres", marks=pytest.mark.postgres)])
def open_flag(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], contextlib.AbstractAsyncContextManager[SafeModeFlag]]:
    """Opens one instance's flag; every instance of a test shares the same one."""

    @contextlib.asynccontextmanager
    async def files() -> AsyncIterator[SafeModeFlag]:
        yield FileSafeModeFlag(tmp_path)

    @contextlib.asynccontextmanager
    async def postgres() -> AsyncIterator[SafeModeFlag]:
        url = request.getfixturevalue("postgres_url")
        async with open_postgres_store(url, migrations=SAFE_MODE_POSTGRES_MIGRATIONS) as store:
            yield PostgresSafeModeFlag(store)

    return files if request.param == "files" else postgres


async def test_a_change_on_one_instance_reaches_another_on_refresh(
    open_flag: Callable[[], contextlib.AbstractAsyncContextManager[SafeModeFlag]],
) -> None:
    async with open_flag() as flag_a, open_flag() as flag_b:
        a, b = SafeMode(flag=flag_a), SafeMode(flag=flag_b)
        heard: list[bool] = []

        async def listener(enabled: bool) -> None:
            heard.append(enabled)

        b.on_change(listener)
        assert await b.refresh() == OFF
        status = await a.set(True, reason="upgrading")
        assert not b.enabled  # not until it re-reads
        assert await b.refresh() == status
        assert (b.enabled, b.status.reason, heard) == (True, "upgrading", [True])
        assert await b.refresh() == status  # unchanged: listeners not told again
        assert heard == [True]
        await a.set(False)
        await b.refresh()
        assert (b.enabled, heard) == (False, [True, False])


async def test_a_restart_starts_in_the_kept_state(
    open_flag: Callable[[], contextlib.AbstractAsyncContextManager[SafeModeFlag]],
) -> None:
    async with open_flag() as flag:
        await SafeMode(flag=flag).set(True, reason="restore")
    async with open_flag() as flag:
        restarted = SafeMode(flag=flag)
        await restarted.refresh()
        assert restarted.enabled
        assert restarted.status.reason == "restore"


async def test_the_cli_file_written_while_stopped_is_what_refresh_reads(tmp_path: Path) -> None:
    write_flag(tmp_path, enabled_now("maintenance"))  # `caxton safe-mode --enable`, stopped
    safe_mode = SafeMode(tmp_path)
    await safe_mode.refresh()
    assert (safe_mode.enabled, safe_mode.status.reason) == (True, "maintenance")
    await safe_mode.set(False)
    assert read_flag(tmp_path) == OFF


@pytest.mark.postgres
async def test_a_postgres_write_notifies_inside_its_transaction(postgres_url: str) -> None:
    seen: list[Any] = []

    def notify(conn: Any) -> None:
        row = conn.execute("SELECT enabled FROM safe_mode").fetchone()
        seen.append(row[0])  # the change is visible in the same transaction

    async with open_postgres_store(postgres_url, migrations=SAFE_MODE_POSTGRES_MIGRATIONS) as store:
        await SafeMode(flag=PostgresSafeModeFlag(store, notify=notify)).set(True)
    assert seen == [True]
