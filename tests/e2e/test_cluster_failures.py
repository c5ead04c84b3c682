"""Issue #15's failures with real processes: an instance killed (SIGKILL) behind nginx under
load, PostgreSQL stopped for ten seconds under load, and a ``storage.postgres.url`` (or a
``--workers`` count) that cannot work, refused at start with a message that says what to do.

Thread-backed servers in other processes: real clock, generous caps (STYLE 16).
"""

from __future__ import annotations

import functools
import json
import random
import shutil
import signal
import time
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import psycopg
import pytest
import trio
from nginx import start_nginx
from postgres import load_postgres_tool
from processes import REPO, run_cli_async, start_server, wait_exit, write_config
from psycopg import sql

from caxton.config import load_config
from caxton.server import serve
from caxton.store.errors import PostgresUnreachable

if TYPE_CHECKING:
    from pathlib import Path

    from processes import ServerProcess

#: The heartbeat interval (caxton.cluster.Heartbeat's default): a dead instance is dropped
#: from the list after three missed beats.
HEARTBEAT_S = 2.0
#: After this long past the killed process's exit, no request may fail (nginx needs a moment to
#: see it gone).
KILL_GRACE_S = 0.3
#: No request that needs the database may take longer while it is down.
UNAVAILABLE_BOUND_S = 2.0


def _agents(tmp_path: Path) -> Path:
    """The echo WASM agent, in one agents_dir every instance reads."""
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO / "agents" / name, agents / name)
    return agents


def _config(folder: Path, url: str, agents: Path | None = None, extra: str = "") -> Path:
    """A postgres-backend config in ``folder`` (its own data_dir)."""
    folder.mkdir(exist_ok=True)
    config = write_config(
        folder / "caxton.yaml",
        folder / "data",
        f"storage:\n  backend: postgres\n  postgres:\n    url: '{url}'\n" + extra,
    )
    if agents is not None:
        config.write_text(
            config.read_text().replace("server:\n", f"server:\n  agents_dir: {agents}\n", 1)
        )
    return config


@attrs.frozen(kw_only=True)
class Call:
    """One request of the load, as its client saw it."""

    client: int
    kind: str
    request_id: str
    begun: float
    ended: float
    status: int | None  # None: no answer (the connection failed)
    code: str | None = None  # the error envelope's code
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


async def _call(
    client: httpx.AsyncClient,
    index: int,
    kind: str,
    request_id: str,
    method: str,
    path: str,
    body: dict[str, Any] | None = None,
) -> tuple[Call, dict[str, Any] | None]:
    """One request, timed: the record and the JSON body (None unless 2xx)."""
    begun = trio.current_time()
    try:
        response = await client.request(
            method, path, json=body, headers={"X-Request-ID": request_id}
        )
    except httpx.TransportError as exc:
        call = Call(
            client=index,
            kind=kind,
            request_id=request_id,
            begun=begun,
            ended=trio.current_time(),
            status=None,
            detail=repr(exc),
        )
        return call, None
    ended = trio.current_time()
    try:
        data = response.json()
    except ValueError:
        data = None
    code = None
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        code = data["error"].get("code")
    call = Call(
        client=index,
        kind=kind,
        request_id=request_id,
        begun=begun,
        ended=ended,
        status=response.status_code,
        code=code,
        detail=response.text[:300],
    )
    return call, (data if call.ok and isinstance(data, dict) else None)


def _served_ids(server: ServerProcess) -> set[str]:
    return {str(r["request_id"]) for r in server.records if "request_id" in r}


async def _cluster(client: httpx.AsyncClient, base: str) -> dict[str, Any]:
    response = await client.get(f"{base}/api/v1/cluster")
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data


# ------------------------------------------------------------------ 1. kill -9 behind nginx


@pytest.mark.slow
async def test_an_instance_killed_behind_nginx_loses_no_acknowledged_write(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    agents = _agents(tmp_path)
    configs = [_config(tmp_path / f"caxton-{i}", postgres_url, agents) for i in (1, 2)]
    started: dict[int, ServerProcess] = {}

    async def start(index: int) -> None:
        started[index] = await start_server(nursery, "--config", str(configs[index]), timeout=60)

    async with trio.open_nursery() as starting:
        for index in (0, 1):
            starting.start_soon(start, index)
    first, second = started[0], started[1]
    upstreams = [s.api_url.removeprefix("http://").rstrip("/") for s in (first, second)]
    proxy, base = await start_nginx(nursery, tmp_path / "nginx", upstreams)

    async with httpx.AsyncClient(timeout=15) as direct:
        killed_id = (await _cluster(direct, first.api_url.rstrip("/")))["instance"]
        survivor_id = (await _cluster(direct, second.api_url.rstrip("/")))["instance"]
        with trio.fail_after(10):  # each has beaten at least once: both are listed
            while {i["id"] for i in (await _cluster(direct, base))["instances"]} != {
                killed_id,
                survivor_id,
            }:
                await trio.sleep(0.1)

    # From the kill on, the survivor's list is read every 0.1 s: when does the dead one leave?
    gone = trio.Event()
    gone_at = 0.0
    listed_after_kill = 0

    async def watch_until_gone() -> None:
        nonlocal gone_at, listed_after_kill
        async with httpx.AsyncClient(timeout=15) as watcher:
            while True:
                data = await _cluster(watcher, second.api_url.rstrip("/"))
                if killed_id not in {i["id"] for i in data["instances"]}:
                    gone_at = trio.current_time()
                    gone.set()
                    return
                listed_after_kill += 1
                await trio.sleep(0.1)

    # 16 clients through nginx: even ones talk to echo, odd ones write unique entities.
    calls: list[Call] = []
    acknowledged: list[str] = []
    stop = trio.Event()

    async def client_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=15) as client:
            number = 0
            while not stop.is_set():
                number += 1
                request_id = f"load-{index}-{number}"
                if index % 2:
                    name = f"probe-{index}-{number}"
                    body = {"name": name, "entity_type": "probe", "observations": [request_id]}
                    call, _ = await _call(
                        client, index, "write", request_id, "POST", "/api/v1/memory/entities", body
                    )
                    if call.ok:
                        assert call.status == 201, call
                        acknowledged.append(name)
                else:
                    body = {"content": f"hello from {request_id}"}
                    call, data = await _call(
                        client,
                        index,
                        "echo",
                        request_id,
                        "POST",
                        "/api/v1/agents/echo/messages",
                        body,
                    )
                    if data is not None:
                        assert request_id in json.dumps(data["content"]), data
                calls.append(call)

    async with trio.open_nursery() as load:
        for index in range(16):
            load.start_soon(client_loop, index)
        await trio.sleep(2.0)
        # Both instances have answered calls that ended (their request lines, written a
        # moment after the answer, name them): only then is there something to fail over from.
        with trio.fail_after(30):
            while not all(_served_ids(s) & {c.request_id for c in calls} for s in (first, second)):
                await trio.sleep(0.05)
        kill_at = trio.current_time()
        first.process.send_signal(signal.SIGKILL)
        await wait_exit(first.process)
        exited_at = trio.current_time()
        nursery.start_soon(watch_until_gone)
        await trio.sleep(2.5)
        stop.set()

    before = [c for c in calls if c.ended < kill_at]
    # After the process was gone (a SIGKILL of a big process takes a while to land on a busy
    # machine: counting from the kill, a request sent while it was still dying looked late).
    after = [c for c in calls if c.begun > exited_at + KILL_GRACE_S]
    failed = [c for c in calls if not c.ok]
    # Both instances served load before the kill, or there was nothing to fail over from.
    served_before = {c.request_id for c in before}
    assert served_before & _served_ids(first), "nginx sent nothing to the instance killed"
    assert served_before & _served_ids(second)
    assert all(c.ok for c in before), [c for c in before if not c.ok]
    # Only a request on the killed instance while it died may fail: in flight at the kill, or
    # passed on by nginx before the kernel had closed the dead process's listening socket
    # (until then a connection is still accepted into its backlog, and a client whose first
    # request failed can have its next one sent there too). Each is counted.
    for call in failed:
        assert call.begun <= exited_at + KILL_GRACE_S, call
        assert call.ended >= kill_at, call
        assert call.status in (None, 502), call  # nginx does not resend a POST it passed on
    assert len(failed) <= 2 * 16, failed
    print(f"{len(failed)} of {len(calls)} requests failed, all on the killed instance")
    # After the kill every request is answered, by the survivor.
    assert {c.client for c in after} == set(range(16)), "a client made no request after"
    assert all(c.ok for c in after), [c for c in after if not c.ok][:5]
    with trio.fail_after(5):
        while not {c.request_id for c in after} <= _served_ids(second):
            await trio.sleep(0.05)
    assert len(acknowledged) >= 16

    # Every write the clients were told about (201) is in the database, read through the
    # survivor.
    limiter = trio.CapacityLimiter(8)
    missing: list[tuple[str, int]] = []
    async with httpx.AsyncClient(base_url=second.api_url, timeout=15) as reader:

        async def check(name: str) -> None:
            async with limiter:
                response = await reader.get(f"/api/v1/memory/entities/{name}")
            if response.status_code != 200:
                missing.append((name, response.status_code))
            else:
                assert response.json()["name"] == name

        async with trio.open_nursery() as checking:
            for name in acknowledged:
                checking.start_soon(check, name)
    assert not missing, missing

    # A again, with the same config: the cluster lists the two live instances, and the killed
    # one's id has gone after three missed beats.
    restarted = await start_server(nursery, "--config", str(configs[0]), timeout=60)
    with trio.fail_after(max(1.0, kill_at + 4 * HEARTBEAT_S + 5 - trio.current_time())):
        await gone.wait()
    # three missed beats after the last one (which came at most one interval before the kill);
    # not at once: nothing tells the others of a kill but the missing beats
    assert 2 * HEARTBEAT_S - 0.5 <= gone_at - kill_at <= 4 * HEARTBEAT_S + 1.0, gone_at - kill_at
    assert listed_after_kill > 0
    async with httpx.AsyncClient(timeout=15) as direct:
        restarted_id = (await _cluster(direct, restarted.api_url.rstrip("/")))["instance"]
        assert restarted_id != killed_id
        with trio.fail_after(2 * HEARTBEAT_S + 2):  # the new one has beaten
            while {
                i["id"] for i in (await _cluster(direct, second.api_url.rstrip("/")))["instances"]
            } != {restarted_id, survivor_id}:
                await trio.sleep(0.1)
    status = await run_cli_async("--url", second.api_url, "cluster", "status", "--output", "json")
    assert status.returncode == 0, status.stderr.decode()
    listed = json.loads(status.stdout)
    assert listed["backend"] == "postgres"
    assert listed["instance"] == survivor_id
    assert sorted(i["id"] for i in listed["instances"]) == sorted([restarted_id, survivor_id])
    assert {i["address"].rstrip("/") for i in listed["instances"]} == {
        restarted.api_url.rstrip("/"),
        second.api_url.rstrip("/"),
    }

    for server in (restarted, second):
        server.process.send_signal(signal.SIGTERM)
    for server in (restarted, second):
        assert await wait_exit(server.process, timeout=20) == 0
    proxy.send_signal(signal.SIGQUIT)
    assert await wait_exit(proxy) == 0


# ------------------------------------------------- 2. PostgreSQL stopped for 10 s under load


@pytest.mark.slow
async def test_postgres_stopped_under_load_is_503_then_recovers_without_a_restart(
    nursery: trio.Nursery, tmp_path: Path, own_postgres: object
) -> None:
    tool = load_postgres_tool()
    directory = own_postgres.directory  # type: ignore[attr-defined]
    url: str = own_postgres.url  # type: ignore[attr-defined]
    config = _config(tmp_path / "caxton", url, _agents(tmp_path))
    server = await start_server(nursery, "--config", str(config), timeout=60)
    base = server.api_url

    calls: list[Call] = []
    acknowledged: list[str] = []
    # echo replies: (begun, ended, conversation id, reply's message id)
    replies: list[tuple[float, float, str, str]] = []
    stop = trio.Event()

    async def memory_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            number = 0
            while not stop.is_set():
                number += 1
                name = f"probe-{index}-{number}"
                body = {"name": name, "entity_type": "probe", "observations": [f"n{number}"]}
                call, _ = await _call(
                    client, index, "write", name, "POST", "/api/v1/memory/entities", body
                )
                calls.append(call)
                if call.ok:
                    acknowledged.append(name)
                if not (call.ok or acknowledged):
                    continue  # nothing written yet to read back
                read = name if call.ok else random.choice(acknowledged)
                call, _ = await _call(
                    client, index, "read", f"read-{name}", "GET", f"/api/v1/memory/entities/{read}"
                )
                calls.append(call)
                await trio.sleep(0.05)

    async def echo_loop(index: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            number = 0
            while not stop.is_set():
                number += 1
                request_id = f"echo-{index}-{number}"
                call, data = await _call(
                    client,
                    index,
                    "echo",
                    request_id,
                    "POST",
                    "/api/v1/agents/echo/messages",
                    {"content": f"hello from {request_id}"},
                )
                calls.append(call)
                if data is not None:
                    replies.append(
                        (call.begun, call.ended, data["conversation_id"], data["message_id"])
                    )
                await trio.sleep(0.05)

    async def ready_loop() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            number = 0
            while not stop.is_set():
                number += 1
                call, _ = await _call(client, 99, "ready", f"ready-{number}", "GET", "/ready")
                calls.append(call)
                await trio.sleep(0.1)

    with trio.fail_after(80):
        async with trio.open_nursery() as load:
            for index in range(3):
                load.start_soon(memory_loop, index)
                load.start_soon(echo_loop, 10 + index)
            load.start_soon(ready_loop)
            await trio.sleep(2.0)
            stopping_at = trio.current_time()
            await trio.to_thread.run_sync(tool.stop, directory)
            down_at = trio.current_time()
            await trio.sleep(10.0)
            starting_at = trio.current_time()
            await trio.to_thread.run_sync(functools.partial(tool.start, directory, fsync=False))
            up_at = trio.current_time()
            # load until every kind has answered again, then a little more
            kinds = ("write", "read", "echo", "ready")
            while not all(
                any(c.kind == kind and c.ok and c.begun > up_at for c in calls) for kind in kinds
            ):
                assert trio.current_time() - up_at < 15, "not answering 15 s after the restart"
                await trio.sleep(0.1)
            recovered_at = trio.current_time()
            await trio.sleep(2.0)
            stop.set()

    assert server.process.returncode is None, "Caxton exited"
    assert all(c.status is not None for c in calls), [c for c in calls if c.status is None]
    assert not [c for c in calls if c.status == 500], [c for c in calls if c.status == 500]
    assert all(c.ok for c in calls if c.ended < stopping_at), [
        c for c in calls if c.ended < stopping_at and not c.ok
    ]
    # While it is down: what needs the database is 503 STORAGE_UNAVAILABLE, quickly.
    refused = [c for c in calls if not c.ok]
    for call in refused:
        assert call.kind in ("write", "read", "ready"), call
        assert call.status == 503, call
        if call.kind == "ready":  # a public route: the cause, not the server's address
            assert call.code == "SERVICE_UNAVAILABLE", call
            assert "postgresql://" not in call.detail, call
        else:
            assert call.code == "STORAGE_UNAVAILABLE", call
        assert stopping_at <= call.ended, call
        assert call.begun <= recovered_at, call
    for call in calls:
        # every refusal is quick, and so is every call begun while the database was down
        if not call.ok or stopping_at <= call.begun <= starting_at - 0.5:
            assert call.ended - call.begun < UNAVAILABLE_BOUND_S, call
        assert call.ended - call.begun < 5, call  # none hangs, not even while it comes back
    outage = [c for c in calls if down_at + 1.0 <= c.begun and c.ended <= starting_at]
    for kind in ("write", "read", "ready"):
        during = [c for c in outage if c.kind == kind]
        assert len(during) >= 3, (kind, len(during))
        assert all(c.status == 503 for c in during), [c for c in during if c.status != 503]
    # ... and the echo agent keeps answering.
    echoes = [c for c in outage if c.kind == "echo"]
    assert len(echoes) >= 10
    assert all(c.status == 200 for c in echoes)
    # Back without a restart: everything answers (within 15 s, checked in the loop).
    assert all(c.ok for c in calls if c.begun > recovered_at), [
        c for c in calls if c.begun > recovered_at and not c.ok
    ]

    async with httpx.AsyncClient(base_url=base, timeout=15) as client:
        # Every acknowledged write, before, during or after the outage, is there.
        for name in acknowledged:
            response = await client.get(f"/api/v1/memory/entities/{name}")
            assert response.status_code == 200, (name, response.text)
        # The conversations answered while the database was down were held, then written.
        held = [
            (c, m) for begun, ended, c, m in replies if begun >= down_at and ended <= starting_at
        ]
        assert held
        with trio.fail_after(15):
            for conversation_id, message_id in held:
                while True:
                    response = await client.get(f"/api/v1/conversations/{conversation_id}")
                    if response.status_code == 200:
                        ids = {m["message_id"] for m in response.json()["messages"]}
                        if message_id in ids:
                            assert len(ids) == 2  # the request and the reply
                            break
                    else:
                        assert response.status_code == 404, response.text
                    await trio.sleep(0.2)
    # and in the database itself, not only in the instance's memory
    with psycopg.connect(url) as conn:
        stored = {
            row[0]
            for row in conn.execute(
                "SELECT conversation_id FROM conversation_messages WHERE conversation_id = ANY(%s)",
                [[c for c, _ in held]],
            )
        }
    assert stored == {c for c, _ in held}

    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process, timeout=20) == 0


# ---------------------------------------------------------- 3. a start that cannot work


def _with_credentials(url: str, *, user: str | None = None, password: str | None = None) -> str:
    """``url`` (a postgresql:// URL, as storage.postgres.url wants) as another user or with
    another password."""
    parts = psycopg.conninfo.conninfo_to_dict(url)
    user = user or str(parts["user"])
    password = password or str(parts["password"])
    return f"postgresql://{user}:{password}@{parts['host']}:{parts['port']}/{parts['dbname']}"


CONNECT_TIMEOUT_S = 2


async def _refused_start(tmp_path: Path, url: str) -> str:
    """``caxton start`` with ``url``: it must exit 1 within the connect timeout and a few
    seconds, without a traceback; its stderr."""
    config = _config(tmp_path / "caxton", url, extra=f"    connect_timeout: {CONNECT_TIMEOUT_S}s\n")
    started = time.monotonic()
    with trio.fail_after(CONNECT_TIMEOUT_S + 30):
        result = await run_cli_async("start", "--config", str(config))
    elapsed = time.monotonic() - started
    stderr = result.stderr.decode()
    assert result.returncode == 1, stderr
    assert "Traceback" not in stderr, stderr
    # the interpreter and the imports take a few seconds of their own
    assert elapsed < CONNECT_TIMEOUT_S + 8, (elapsed, stderr)
    return stderr


async def test_an_unreachable_postgres_is_named_at_start(tmp_path: Path) -> None:
    port = load_postgres_tool().free_port()
    stderr = await _refused_start(
        tmp_path, f"postgresql://caxton:secret-password@127.0.0.1:{port}/caxton"
    )
    assert f"127.0.0.1:{port}" in stderr
    assert "no PostgreSQL answered" in stderr  # the problem
    assert "Check that PostgreSQL is running" in stderr  # and the fix
    assert "storage.postgres.url" in stderr
    assert "secret-password" not in stderr


async def test_a_wrong_password_is_named_at_start(tmp_path: Path, postgres_url: str) -> None:
    stderr = await _refused_start(tmp_path, _with_credentials(postgres_url, password="wrong-pw"))
    assert "password authentication failed" in stderr
    assert "Put the right user and password in storage.postgres.url" in stderr
    assert "wrong-pw" not in stderr


async def test_a_database_without_vector_is_named_at_start(
    tmp_path: Path, postgres_url: str
) -> None:
    role = f"plain_{random.randrange(10**9)}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP EXTENSION vector")
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'plain-password'").format(sql.Identifier(role))
        )
    url = _with_credentials(postgres_url, user=role, password="plain-password")
    stderr = await _refused_start(tmp_path, url)
    assert "has no vector extension" in stderr
    assert "Have a superuser run CREATE EXTENSION vector" in stderr
    assert role in stderr
    assert "plain-password" not in stderr


async def test_serve_raises_the_startup_error_itself(tmp_path: Path) -> None:
    """What a component that cannot start raises reaches serve's caller unwrapped from the
    nurseries' groups (the CLI prints it as one line)."""
    port = load_postgres_tool().free_port()
    config = _config(
        tmp_path / "caxton",
        f"postgresql://caxton:pw@127.0.0.1:{port}/caxton",
        extra=f"    connect_timeout: {CONNECT_TIMEOUT_S}s\n",
    )
    with trio.fail_after(CONNECT_TIMEOUT_S + 20), pytest.raises(PostgresUnreachable):
        await serve(load_config(config, environ={}), handle_signals=False)


@pytest.mark.parametrize("how", ["config", "flag"])
async def test_workers_on_the_embedded_store_are_refused(tmp_path: Path, how: str) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    args = ["start", "--config", str(config)]
    if how == "flag":
        args += ["--workers", "2"]
    else:
        config.write_text(config.read_text().replace("server:\n", "server:\n  workers: 2\n", 1))
    started = time.monotonic()
    with trio.fail_after(30):
        refused = await run_cli_async(*args)
    stderr = refused.stderr.decode()
    assert refused.returncode == 1, stderr
    assert time.monotonic() - started < 10
    assert "2 processes cannot share the embedded store" in stderr
    assert "set storage.backend: postgres" in stderr
    assert "Traceback" not in stderr
    assert not (tmp_path / "data" / "workers").exists()
