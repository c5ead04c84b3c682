"""Backup, restore, safe mode and storage verify as an operator types them, against real
``caxton start`` processes; and the packaged backup/restore scripts."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import httpx
import trio
from processes import CAXTON_CMD, caxton_env, start_server, wait_exit

from caxton.datadir import holder_pid

if TYPE_CHECKING:
    import subprocess

    from processes import ServerProcess

REPO = Path(__file__).parents[2]
SCRIPTS = REPO / "packaging" / "scripts"
CAT = {"name": "Whiskers", "entity_type": "pet", "observations": ["a small cat on the sofa"]}
STOCKS = {"name": "NASDAQ", "entity_type": "market", "observations": ["a stock exchange"]}


def prepare(tmp_path: Path, port: int = 0) -> Path:
    """agents_dir with the echo agent, a counter manifest to deploy, and the config file."""
    agents = tmp_path / "agents"
    agents.mkdir()
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO / "agents" / name, agents / name)
    deploy = tmp_path / "deploy"
    deploy.mkdir()
    for name in ("counter.toml", "counter.wat"):
        shutil.copy(REPO / "agents" / name, deploy / name)
    config = tmp_path / "caxton.yaml"
    config.write_text(
        "server:\n"
        "  host: 127.0.0.1\n"
        f"  port: {port}\n"
        f"  data_dir: {tmp_path / 'data'}\n"
        f"  agents_dir: {agents}\n"
        "  shutdown_timeout: 10s\n"
        "observability:\n"
        "  metrics_port: 0\n"
    )
    return config


async def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*CAXTON_CMD, *args],
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        stdin=b"",
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    assert b"Traceback" not in result.stderr
    return result.stdout.decode()


def failed(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 1, (result.args, result.stdout, result.stderr)
    assert b"Traceback" not in result.stderr
    return result.stderr.decode()


async def stop(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0


def conversation_rows(database: Path) -> dict[str, int]:
    """Rows of the conversation tables, when this build has them."""
    conn = duckdb.connect(str(database), read_only=True)
    try:
        tables = [
            str(r[0])
            for r in conn.execute(
                "SELECT table_name FROM duckdb_tables() WHERE table_name LIKE 'conversation%'"
            ).fetchall()
        ]
        counts = {}
        for table in tables:
            row = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts
    finally:
        conn.close()


async def test_backup_wipe_restore_safe_mode_and_verify(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = prepare(tmp_path)
    data_dir = tmp_path / "data"
    archive = tmp_path / "saved" / "caxton-backup.tar.gz"
    with trio.fail_after(240):
        server = await start_server(nursery, "--config", str(config))
        env = caxton_env(CAXTON_URL=server.api_url, CAXTON_CONFIG_PATH=str(config))
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            for entity in (CAT, STOCKS):
                assert (
                    await client.post("/api/v1/memory/entities", json=entity)
                ).status_code == 201
            ok(await cli(env, "agents", "deploy", str(tmp_path / "deploy" / "counter.toml")))
            for _ in range(2):
                reply = await client.post("/api/v1/agents/echo/messages", json={"content": "hi"})
                assert reply.status_code == 200, reply.text

        out = ok(await cli(env, "backup", "create", "--output", str(archive)))
        assert out.startswith(f"backup written to {archive} (")
        server_side = json.loads(ok(await cli(env, "backup", "create", "--report", "json")))
        assert Path(server_side["path"]).parent == data_dir / "backups"
        assert await trio.Path(server_side["path"]).is_file()
        verified = json.loads(ok(await cli(env, "backup", "verify", str(archive), "-o", "json")))
        assert verified["ok"] is True
        assert verified["files_by_area"]["agents"] == 2
        assert verified["files_by_area"]["config"] == 1
        assert verified["files_by_area"]["deployed"] >= 2

        refused = failed(await cli(env, "backup", "restore", str(archive)))
        assert "is running on data_dir" in refused
        assert "stop it first" in refused

        await stop(server)
        conversations_before = conversation_rows(data_dir / "memory.duckdb")
        if "conversation_messages" in conversations_before:  # this build stores conversations
            assert conversations_before["conversation_messages"] >= 2
        shutil.rmtree(data_dir)
        restored = json.loads(ok(await cli(env, "backup", "restore", str(archive), "-o", "json")))
        assert restored["agents_dir_action"] == "unchanged"
        assert conversation_rows(data_dir / "memory.duckdb") == conversations_before

        server = await start_server(nursery, "--config", str(config))
        env["CAXTON_URL"] = server.api_url
        export = json.loads(
            ok(
                await cli(
                    env,
                    "memory",
                    "export",
                    "--output",
                    str(tmp_path / "m.json"),
                    "--report",
                    "json",
                )
            )
        )
        assert export["entities"] == 2
        listing = json.loads(ok(await cli(env, "agents", "list", "-o", "json")))
        assert {a["name"]: a["status"] for a in listing["agents"]} == {
            "counter": "running",
            "echo": "running",
        }

        # safe mode: writes refused, agents still answer, survives a restart, lifts cleanly
        ok(await cli(env, "safe-mode", "--enable", "--reason", "drill"))
        refused = failed(await cli(env, "memory", "add", "Rex", "--type", "dog"))
        assert "SAFE_MODE" in refused
        assert "drill" in refused
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            reply = await client.post("/api/v1/agents/counter/messages", json={"content": "x"})
            assert reply.status_code == 200, reply.text
            assert (await client.get("/api/v1/health")).json()["safe_mode"] is True
        await stop(server)
        server = await start_server(nursery, "--config", str(config))
        env["CAXTON_URL"] = server.api_url
        status = json.loads(ok(await cli(env, "safe-mode", "-o", "json")))
        assert status["enabled"] is True
        assert status["reason"] == "drill"
        assert "safe mode: disabled" in ok(await cli(env, "safe-mode", "--disable"))
        ok(await cli(env, "memory", "add", "Rex", "--type", "dog"))

        report = json.loads(
            ok(await cli(env, "storage", "verify", "--comprehensive", "-o", "json"))
        )
        assert report["ok"] is True
        assert report["source"] == "server"
        await stop(server)

        # with the server stopped, verify reads the files; a corrupted file is reported
        env.pop("CAXTON_URL")
        offline = json.loads(
            ok(await cli(env, "storage", "verify", "--comprehensive", "-o", "json"))
        )
        assert offline["source"] == "files"
        assert offline["tables"]["memory_entities"] == 3
        cold = tmp_path / "saved" / "cold.tar.gz"
        made = await cli(env, "backup", "create", "--output", str(cold), "--report", "json")
        assert json.loads(ok(made))["source"] == "files"
        assert "backing up the files instead" in made.stderr.decode()
        ok(await cli(env, "backup", "verify", str(cold)))
        database = data_dir / "memory.duckdb"
        content = bytearray(database.read_bytes())
        for start in range(3 * 4096, len(content) - 256, 32 * 1024):
            content[start : start + 256] = os.urandom(256)
        database.write_bytes(bytes(content))
        result = await cli(env, "storage", "verify", "--comprehensive", "-o", "json")
        failed(result)
        damaged = json.loads(result.stdout)
        assert damaged["ok"] is False
        assert any(
            f["check"] == "database" and f["severity"] == "error" for f in damaged["findings"]
        )
        table = await cli(env, "storage", "verify", "--comprehensive")
        assert "PROBLEMS FOUND" in failed(table)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _wait_released(data_dir: Path) -> None:
    while holder_pid(data_dir) is not None:
        await trio.sleep(0.1)


async def test_backup_and_restore_scripts(nursery: trio.Nursery, tmp_path: Path) -> None:
    port = free_port()
    config = prepare(tmp_path, port)
    data_dir = tmp_path / "data"
    caxton = " ".join(CAXTON_CMD)
    env = caxton_env(
        CAXTON=CAXTON_CMD[0] if len(CAXTON_CMD) == 1 else caxton,
        CAXTON_CONFIG_PATH=str(config),
        BACKUP_DIR=str(tmp_path / "backups"),
    )
    with trio.fail_after(180):
        server = await start_server(nursery, "--config", str(config))
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            assert (await client.post("/api/v1/memory/entities", json=CAT)).status_code == 201
        backup = await trio.run_process(
            ["bash", str(SCRIPTS / "backup.sh"), "--test"],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
        out = ok(backup)
        assert "Backup created successfully" in out
        assert "Backup test completed successfully" in out
        (archive,) = (tmp_path / "backups").glob("caxton-backup-*.tar.gz")

        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            assert (
                await client.delete(f"/api/v1/memory/entities/{CAT['name']}")
            ).status_code == 200

        log = tmp_path / "restarted.log"
        env["CAXTON_STOP_CMD"] = f"kill -TERM {server.process.pid}"
        env["CAXTON_START_CMD"] = (
            f"setsid {caxton} start --config {config} >{log} 2>&1 </dev/null &"
        )
        try:
            restore = await trio.run_process(
                ["bash", str(SCRIPTS / "restore.sh"), "--yes", str(archive)],
                capture_stdout=True,
                capture_stderr=True,
                env=env,
                check=False,
            )
            out = ok(restore)
            assert "Recovery completed successfully" in out, out
            assert list(data_dir.glob("before-restore-*"))
            async with httpx.AsyncClient(base_url=base, timeout=30) as client:
                entity = await client.get(f"/api/v1/memory/entities/{CAT['name']}")
                assert entity.status_code == 200, entity.text
        finally:
            pid = holder_pid(data_dir)
            if pid:
                os.kill(pid, signal.SIGTERM)
                await _wait_released(data_dir)

        corrupted = tmp_path / "corrupted.tar.gz"
        corrupted.write_bytes(archive.read_bytes()[:-100])
        env["CAXTON_STOP_CMD"] = "echo must-not-stop && exit 3"
        refused = await trio.run_process(
            ["bash", str(SCRIPTS / "restore.sh"), "--yes", str(corrupted)],
            capture_stdout=True,
            capture_stderr=True,
            env=env,
            check=False,
        )
        assert refused.returncode == 1, refused
        assert b"must-not-stop" not in refused.stdout
        assert b"is not a sound Caxton backup" in refused.stderr


TRAPPING_WAT = """
(module (memory (export "memory") 1)
  (func (export "caxton_alloc") (param i32) (result i32) (i32.const 0))
  (func (export "handle_message") (param i32 i32) (result i32) (i32.const 0))
  (func (export "agent_init") (result i32) unreachable))
"""


async def test_restart_failing_only_and_performance_report(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = prepare(tmp_path)
    agents = tmp_path / "agents"
    (agents / "bad.wat").write_text(TRAPPING_WAT)
    (agents / "bad.toml").write_text('name = "bad"\n[wasm]\nmodule = "bad.wat"\n')
    (agents / "broken.toml").write_text('name = "broken"\nbogus_key = 1\n')
    with trio.fail_after(60):
        server = await start_server(nursery, "--config", str(config))
        env = caxton_env(CAXTON_URL=server.api_url)
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            reply = await client.post("/api/v1/agents/echo/messages", json={"content": "hi"})
            assert reply.status_code == 200
        restarted = json.loads(
            ok(await cli(env, "agents", "restart", "--failing-only", "-o", "json"))
        )
        by_name = {r["name"]: r for r in restarted["restarted"]}
        assert set(by_name) == {"bad", "broken"}
        assert by_name["bad"]["ok"] is True
        assert "status" in by_name["bad"]
        assert "broken.toml" in by_name["broken"]["skipped"]
        usage = await cli(env, "agents", "restart", "echo", "--failing-only")
        assert usage.returncode == 2
        report = json.loads(ok(await cli(env, "agents", "performance-report", "-o", "json")))
        echo = next(a for a in report["agents"] if a["name"] == "echo")
        assert echo["messages"] == 1
        assert echo["errors"] == 0
        assert echo["p99_ms"] >= echo["p50_ms"] > 0
        await stop(server)
