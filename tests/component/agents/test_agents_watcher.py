"""The agents_dir watcher with real files and a real server in this process."""

from __future__ import annotations

import functools
import itertools
import os
import shutil
from typing import TYPE_CHECKING

import trio
from servers import loopback_config

from caxton.server import serve

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.server import ServerInfo

ECHO_V2 = """name = "echo"
version = "2.0.0"
capabilities = ["echo"]

[wasm]
module = "echo.wat"
"""


async def wait_until(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


def view(server: ServerInfo, name: str) -> dict:
    return server.services.registry.agent_view(name)


def names(server: ServerInfo) -> list[str]:
    return [v["name"] for v in server.services.registry.list_view()]


async def test_create_modify_and_delete_follow_the_files(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    (agents_dir / "echo.toml").write_text(ECHO_V2)
    await wait_until(lambda: view(agents_server, "echo")["version"] == "2.0.0")
    shutil.copy(agents_dir / "echo.toml", agents_dir / "echo2.toml.tmp")
    text = ECHO_V2.replace('name = "echo"', 'name = "echo-two"')
    (agents_dir / "echo-two.toml").write_text(text)
    await wait_until(lambda: "echo-two" in names(agents_server))
    await wait_until(lambda: view(agents_server, "echo-two")["status"] == "running")
    (agents_dir / "echo-two.toml").unlink()
    await wait_until(lambda: "echo-two" not in names(agents_server))


async def test_rename_keeps_the_agent_under_its_new_file(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    os.rename(agents_dir / "counter.toml", agents_dir / "tally.toml")
    await wait_until(lambda: view(agents_server, "counter")["source"].endswith("tally.toml"))
    await wait_until(lambda: view(agents_server, "counter")["status"] == "running")
    assert view(agents_server, "counter")["last_reload"]["ok"] is True


async def test_a_broken_edit_never_replaces_the_running_version(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    table = agents_server.services.table
    (agents_dir / "echo.toml").write_text('name = "echo"\nversion = "3.0.0"\n[wasm]\nmodule = 5\n')
    await wait_until(lambda: not view(agents_server, "echo")["last_reload"]["ok"])
    echo = view(agents_server, "echo")
    assert (echo["version"], echo["status"]) == ("1.0.0", "running")
    assert echo["pending_errors"][0]["field"] == "wasm.module"
    assert echo["pending_errors"][0]["line"] == 4
    logs = agents_server.services.agent_logs.tail("echo", 5, "error")
    assert any("not loaded" in line.message for line in logs)
    metrics = agents_server.services.metrics.exposition().decode()
    assert "caxton_agent_reload_failed_total 1.0" in metrics
    # the module vanishing is an error of the manifest too; the old version still serves
    (agents_dir / "echo.toml").write_text(ECHO_V2.replace("echo.wat", "missing.wat"))
    await wait_until(lambda: "missing.wat" in view(agents_server, "echo")["last_reload"]["error"])
    assert view(agents_server, "echo")["version"] == "1.0.0"
    from caxton.messages import Message

    reply, _ = await table.send("echo", Message(content="still here"))
    assert reply.content["content"] == "still here"


async def test_editing_the_module_alone_is_a_new_version(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    table = agents_server.services.table
    before = len(table.versions_view("counter"))
    wat = agents_dir / "counter.wat"
    wat.write_text(wat.read_text() + "\n;; touched\n")
    await wait_until(lambda: len(table.versions_view("counter")) == before + 1)
    await wait_until(lambda: view(agents_server, "counter")["status"] == "running")


async def test_bad_files_are_reported_and_named(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    (agents_dir / "garbage.toml").write_bytes(os.urandom(2048))
    (agents_dir / "huge.toml").write_bytes(b"# " + b"x" * (50 * 1024 * 1024))
    (agents_dir / "twin.toml").write_text((agents_dir / "counter.toml").read_text())
    await wait_until(lambda: {"garbage", "huge"} <= set(names(agents_server)))
    listing = {v["name"]: v for v in agents_server.services.registry.list_view()}
    assert listing["garbage"]["status"] == "failed"
    assert "huge.toml" in listing["huge"]["source"]
    assert (
        "MiB" in listing["huge"]["last_reload"]["error"]
        or "bytes" in (listing["huge"]["last_reload"]["error"])
    )
    await wait_until(lambda: not view(agents_server, "counter")["last_reload"]["ok"])
    error = view(agents_server, "counter")["last_reload"]["error"]
    assert "counter.toml" in error
    assert "twin.toml" in error
    assert view(agents_server, "counter")["status"] == "running"
    assert listing["echo"]["status"] == "running"


async def test_quick_successive_writes_are_debounced(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    table = agents_server.services.table
    before = len(table.versions_view("echo"))
    for minor in range(1, 6):
        (agents_dir / "echo.toml").write_text(ECHO_V2.replace("2.0.0", f"2.{minor}.0"))
    await wait_until(lambda: view(agents_server, "echo")["version"] == "2.5.0")
    added = len(table.versions_view("echo")) - before
    assert added <= 2, table.versions_view("echo")


async def test_sighup_style_rescan_picks_up_missed_changes(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    for hook in agents_server.services.lifecycle.reload_hooks:
        await hook()
    assert sorted(names(agents_server)) == ["counter", "echo"]


async def test_editing_counter_wat_under_traffic_fails_no_request(
    agents_server: ServerInfo, agents_dir: Path
) -> None:
    import httpx

    statuses: list[int] = []
    wat = agents_dir / "counter.wat"
    original = wat.read_text()
    registry = agents_server.services.registry

    async def client_loop(client: httpx.AsyncClient, stop: trio.Event) -> None:
        while not stop.is_set():
            response = await client.post("/api/v1/agents/counter/messages", json={"content": "x"})
            statuses.append(response.status_code)

    async with httpx.AsyncClient(base_url=agents_server.api_urls[0], timeout=30) as client:
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            for _ in range(4):
                nursery.start_soon(client_loop, client, stop)
            for edit in range(8):
                active = registry.state.get("counter").active or 0
                wat.write_text(original + f"\n;; edit {edit}\n")
                # each edit is a new version that takes over (the active revision moves on)
                await wait_until(lambda a=active: (registry.state.get("counter").active or 0) > a)
                await trio.sleep(0.05)
            stop.set()
    assert statuses
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}


async def test_force_polling_follows_the_files_through_watchfiles(
    nursery: trio.Nursery, tmp_path: Path, agents_dir: Path
) -> None:
    """``agents.force_polling`` (network filesystems) keeps watchfiles' polling; the default is
    inotify (tests/component/agents/test_dir_events.py)."""
    loaded = loopback_config(
        tmp_path / "polled", server__agents_dir=str(agents_dir), agents__force_polling=True
    )
    server: ServerInfo = await nursery.start(functools.partial(serve, loaded, handle_signals=False))
    # watchfiles' polling thread takes its first look at the directory only after the server
    # reports started: a write before that look is part of it, not a change. Write a new
    # version each second until one is seen.
    with trio.fail_after(20):
        for minor in itertools.count():
            version = f"2.0.{minor}"
            (agents_dir / "echo.toml").write_text(ECHO_V2.replace("2.0.0", version))
            with trio.move_on_after(1):
                await wait_until(lambda v=version: view(server, "echo")["version"] == v)
                break
    (agents_dir / "echo.toml").unlink()
    await wait_until(lambda: "echo" not in names(server))
