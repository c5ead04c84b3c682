"""Moving to PostgreSQL with real processes, as the README's "Moving to PostgreSQL" says:
``caxton storage migrate`` from a stopped embedded server, then a server on PostgreSQL serving
the same memory, agents, conversations and safe mode; and the memory-only path, ``caxton memory
export`` from an embedded server and ``caxton memory import`` into one on PostgreSQL.
"""

from __future__ import annotations

import json
import signal
from typing import TYPE_CHECKING, Any

import httpx
import psycopg
import trio
from processes import caxton_env, probe, run_cli_async, start_server, wait_exit, write_config

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

    from processes import ServerProcess

ENTITIES = [
    {
        "name": "Whiskers",
        "entity_type": "pet",
        "observations": ["a small cat that sleeps on the sofa", "likes chasing mice"],
    },
    {
        "name": "NASDAQ",
        "entity_type": "market",
        "observations": ["stock exchange where shares are traded", "prices fell sharply"],
    },
]
QUERY = "a kitten on a rug"
POSTGRES = "storage:\n  backend: postgres\n  postgres:\n    url: ${CAXTON_DATABASE_URL}\n"


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout.decode()


async def stop(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0


async def search(client: httpx.AsyncClient) -> list[tuple[str, float]]:
    found = await client.get("/api/v1/memory/search", params={"q": QUERY})
    assert found.status_code == 200, found.text
    return [(hit["name"], hit["similarity"]) for hit in found.json()["results"]]


def same_hits(before: list[tuple[str, float]], after: list[tuple[str, float]]) -> None:
    assert [name for name, _ in after] == [name for name, _ in before]
    for (_, old), (_, new) in zip(before, after, strict=True):
        assert abs(old - new) < 1e-4


async def test_storage_migrate_moves_a_stopped_server_to_postgresql(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    password = str(psycopg.conninfo.conninfo_to_dict(postgres_url)["password"])
    with trio.fail_after(240):
        config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
        embedded = await start_server(nursery, "--config", str(config))
        async with httpx.AsyncClient(base_url=embedded.api_url, timeout=30) as client:
            for entity in ENTITIES:
                created = await client.post("/api/v1/memory/entities", json=entity)
                assert created.status_code == 201, created.text
            before = await search(client)
            for version in ("1.0.0", "1.1.0"):
                deployed = await (
                    client.post("/api/v1/agents", json=probe(version))
                    if version == "1.0.0"
                    else client.put("/api/v1/agents/probe", json=probe(version))
                )
                assert deployed.status_code in (200, 201), deployed.text
            canary = await client.post(
                "/api/v1/agents/probe/canary", json={"version": "1.0.0", "traffic_percentage": 25}
            )
            assert canary.status_code == 200, canary.text
            reply = await client.post(
                "/api/v1/agents/probe/messages", json={"content": "hi", "conversation_id": "c-1"}
            )
            assert reply.status_code == 200, reply.text
            enabled = await client.post(
                "/api/v1/admin/safe-mode", json={"enabled": True, "reason": "moving"}
            )
            assert enabled.status_code == 200, enabled.text

        env = caxton_env(CAXTON_DATABASE_URL=postgres_url)
        # refused while the server runs, naming it
        refused = await run_cli_async("--config", str(config), "storage", "migrate", env=env)
        assert refused.returncode == 1
        assert f"(pid {embedded.process.pid}) is running on data_dir".encode() in refused.stderr
        await stop(embedded)

        migrated = await run_cli_async("--config", str(config), "storage", "migrate", env=env)
        out = ok(migrated)
        stderr = migrated.stderr.decode()
        for kind in ("entities", "relations", "conversations", "agents"):
            assert f"copying {kind}" in stderr
        assert "every count matches" in out
        assert "safe mode is on in the source, and now in the target too" in out
        assert password not in out + stderr

        # again, naming the data_dir alone, with the report as JSON (and no progress bar):
        # nothing doubles
        again = await run_cli_async(
            "storage", "migrate", "--data-dir", str(tmp_path / "data"), "-o", "json", env=env
        )
        report: dict[str, Any] = json.loads(ok(again))
        assert "copying" not in again.stderr.decode()
        assert report["verified"] is True
        assert report["mismatches"] == []
        assert report["safe_mode"] is True
        assert report["seconds"] >= 0
        counts = report["counts"]
        assert counts["entities"] == {"source": 2, "target": 2, "copied": 2, "skipped": 0}
        assert counts["conversations"]["target"] == 1
        assert counts["conversations"]["skipped"] == 1
        assert counts["messages"]["target"] == counts["messages"]["source"] >= 2
        assert counts["agents"] == {"source": 1, "target": 1, "copied": 0, "skipped": 1}
        assert password not in report["target"]

        # a server on PostgreSQL serves what the embedded one did
        folder = tmp_path / "on-postgres"
        folder.mkdir()
        pg_config = write_config(folder / "caxton.yaml", folder / "data", POSTGRES)
        server = await start_server(nursery, "--config", str(pg_config), env=env, timeout=60)
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            same_hits(before, await search(client))
            view = (await client.get("/api/v1/agents/probe")).json()
            assert view["version"] == "1.1.0"
            assert (view["canary"]["version"], view["canary"]["traffic_percentage"]) == (
                "1.0.0",
                25.0,
            )
            history = (await client.get("/api/v1/conversations/c-1")).json()
            assert history["messages"][0]["content"] == "hi"
            assert history["message_count"] == len(history["messages"]) >= 2
            flag = (await client.get("/api/v1/admin/safe-mode")).json()
            assert flag["enabled"] is True
            assert flag["reason"] == "moving"
        await stop(server)

        # an unreachable target: one line that names it, without its password or a traceback
        nowhere = await run_cli_async(
            "--config",
            str(config),
            "storage",
            "migrate",
            "--to",
            "postgresql://caxton:hunter2@127.0.0.1:9/caxton",
            env=caxton_env(),
        )
        assert nowhere.returncode == 1
        message = nowhere.stderr.decode()
        assert message.startswith("error: cannot use the PostgreSQL database ")
        assert "postgresql://caxton@127.0.0.1:9/caxton" in message
        assert "hunter2" not in message
        assert "Traceback" not in message
        not_a_url = await run_cli_async(
            "--config", str(config), "storage", "migrate", "--to", "mysql://x", env=caxton_env()
        )
        assert not_a_url.returncode == 1
        assert b"must be a postgresql:// URL" in not_a_url.stderr


async def test_memory_export_then_import_into_a_server_on_postgresql(
    nursery: trio.Nursery, tmp_path: Path, postgres_url: str
) -> None:
    with trio.fail_after(180):
        config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
        embedded = await start_server(nursery, "--config", str(config))
        async with httpx.AsyncClient(base_url=embedded.api_url, timeout=30) as client:
            for entity in ENTITIES:
                created = await client.post("/api/v1/memory/entities", json=entity)
                assert created.status_code == 201, created.text
            before = await search(client)
        export = tmp_path / "memory-export.json"
        ok(
            await run_cli_async(
                "--url",
                embedded.api_url,
                "memory",
                "export",
                "--format",
                "json",
                "--output",
                str(export),
            )
        )
        await stop(embedded)

        folder = tmp_path / "on-postgres"
        folder.mkdir()
        pg_config = write_config(folder / "caxton.yaml", folder / "data", POSTGRES)
        env = caxton_env(CAXTON_DATABASE_URL=postgres_url)
        server = await start_server(nursery, "--config", str(pg_config), env=env, timeout=60)
        imported = ok(await run_cli_async("--url", server.api_url, "memory", "import", str(export)))
        assert "entities 2 created, 0 updated, 0 skipped" in imported
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            same_hits(before, await search(client))
        await stop(server)
