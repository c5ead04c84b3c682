"""``storage verify`` checks on real files: orphans, a corrupted DuckDB file, a damaged model
folder, a stale HNSW index, and the same checks through a running server."""

from __future__ import annotations

import json
import random
from typing import TYPE_CHECKING

import httpx
import trio
from ops_servers import running
from servers import loopback_config

from caxton.memory import MEMORY_MIGRATIONS, assemble_default_model, saved_index
from caxton.memory.hnsw import params_for
from caxton.messaging import CONVERSATION_MIGRATIONS
from caxton.ops.verify import verify_files
from caxton.store import open_store

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.config import LoadedConfig
    from caxton.store import Connection

MIGRATIONS = (*MEMORY_MIGRATIONS, *CONVERSATION_MIGRATIONS)
VECTOR = "[" + ",".join(["0.05"] * 384) + "]"


def _entity(conn: Connection, name: str, *, embedding: bool = True) -> None:
    conn.execute(
        "INSERT INTO memory_entities VALUES (?, 'pet', 'global', NULL, '{}', now(), now())",
        [name],
    )
    conn.execute("INSERT INTO memory_observations VALUES (?, 0, 'an observation')", [name])
    if embedding:
        conn.execute(
            "INSERT INTO memory_embeddings VALUES (?, 'pet', 'global', NULL, "
            f"{VECTOR}::FLOAT[384])",
            [name],
        )


async def _database(config: LoadedConfig, fill: object) -> None:
    config.config.data_dir.mkdir(parents=True, exist_ok=True)
    async with open_store(config.config.database_path, migrations=MIGRATIONS) as store:
        await store.execute_write_fn(fill)  # type: ignore[arg-type]


def _errors(report: dict[str, object]) -> list[str]:
    findings = report["findings"]
    assert isinstance(findings, list)
    return [f"{f['check']}: {f['message']}" for f in findings if f["severity"] == "error"]


async def test_orphans_and_missing_embeddings_are_errors(tmp_path: Path) -> None:
    config = loopback_config(tmp_path / "data")

    def fill(conn: Connection) -> None:
        _entity(conn, "Whiskers")
        _entity(conn, "Rex", embedding=False)
        _entity(conn, "Ghost")
        conn.execute(
            "INSERT INTO memory_relations VALUES ('Whiskers', 'Nobody', 'knows', 1, 1, now())"
        )
        conn.execute("DELETE FROM memory_entities WHERE name = 'Ghost'")
        conn.execute(
            "INSERT INTO conversation_messages (conversation_id, message_id, performative, "
            "content, created_at, hop) VALUES ('c-lost', 'm1', 'inform', '\"hi\"', 0, 0)"
        )

    await _database(config, fill)
    report = verify_files(config.config, comprehensive=True, migrations=MIGRATIONS).to_json()
    assert report["ok"] is False
    errors = _errors(report)
    assert "relations: 1 observations without their entity (entitys: Ghost)" in errors
    assert (
        "relations: 1 relations whose entity is missing (relations: Whiskers -> Nobody)" in errors
    )
    assert "relations: 1 embeddings without their entity (embeddings: Ghost)" in errors
    assert "relations: 1 entities without an embedding (entitys: Rex)" in errors
    assert any("conversation messages without their conversation" in e for e in errors)
    assert "embeddings: 2 embeddings for 2 entities" not in errors
    assert report["tables"] == {**report["tables"], "memory_entities": 2}


async def test_a_sound_database_passes_and_a_corrupted_one_is_reported(tmp_path: Path) -> None:
    config = loopback_config(tmp_path / "data")

    def fill(conn: Connection) -> None:
        conn.execute(
            "CREATE TABLE filler AS SELECT range AS x, md5(range::VARCHAR) AS s FROM range(100000)"
        )
        for i in range(20):
            _entity(conn, f"pet-{i}")

    await _database(config, fill)
    sound = verify_files(config.config, comprehensive=True, migrations=MIGRATIONS)
    assert sound.ok, sound.findings
    assert sound.tables["memory_entities"] == 20

    path = config.config.database_path
    data = bytearray(path.read_bytes())
    rng = random.Random(7)
    for start in range(3 * 4096, len(data) - 512, 64 * 1024):  # past the headers
        data[start : start + 512] = bytes(rng.randrange(256) for _ in range(512))
    path.write_bytes(bytes(data))
    damaged = verify_files(config.config, comprehensive=True, migrations=MIGRATIONS).to_json()
    assert damaged["ok"] is False
    assert any("database" in e for e in _errors(damaged)), damaged

    path.write_bytes(b"this is not a database" * 100)
    garbage = verify_files(config.config, comprehensive=False, migrations=MIGRATIONS).to_json()
    assert garbage["ok"] is False
    assert any("cannot be opened" in e for e in _errors(garbage))


async def test_model_and_hnsw_files_are_checked(tmp_path: Path) -> None:
    config = loopback_config(tmp_path / "data")
    await _database(config, lambda conn: _entity(conn, "Whiskers"))
    models = config.config.data_dir / "models"
    await trio.to_thread.run_sync(assemble_default_model, models)
    hnsw = config.config.database_path.with_name("memory.duckdb.hnsw")
    hnsw.write_bytes(b"graph")
    hnsw.with_name("memory.duckdb.hnsw.mirror").write_bytes(b"mirror")
    params = params_for(1)
    hnsw.with_name("memory.duckdb.hnsw.json").write_text(
        json.dumps(
            {
                "format": saved_index.FORMAT_VERSION,
                "rows": 1,
                "dtype": "f16",
                "connectivity": params.connectivity,
                "expansion_add": params.expansion_add,
                "graph": {"size": 5, "crc32": 0},
                "mirror": {"size": 6, "crc32": 0},
            }
        )
    )
    report = verify_files(config.config, comprehensive=False, migrations=MIGRATIONS)
    assert report.ok, report.findings
    assert any(f.check == "model" and "checksum ok" in f.message for f in report.findings)
    assert any(
        f.check == "hnsw" and f.severity == "warning" and "damaged" in f.message
        for f in report.findings
    )

    onnx = models / "model.onnx"
    data = bytearray(onnx.read_bytes())
    data[1000] ^= 0xFF
    onnx.write_bytes(bytes(data))
    damaged = verify_files(config.config, comprehensive=False, migrations=MIGRATIONS).to_json()
    assert damaged["ok"] is False
    assert any(e.startswith("model:") and "damaged" in e for e in _errors(damaged))


async def test_verify_through_a_running_server(ops_config: LoadedConfig) -> None:
    with trio.fail_after(60):
        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):
            entity = {"name": "Whiskers", "entity_type": "pet", "observations": ["a cat"]}
            assert (await client.post("/api/v1/memory/entities", json=entity)).status_code == 201
            quick = (await client.get("/api/v1/admin/storage/verify")).json()
            full = await client.get(
                "/api/v1/admin/storage/verify", params={"comprehensive": "true"}
            )
    assert quick["ok"] is True, quick
    assert quick["source"] == "server"
    assert quick["comprehensive"] is False
    assert quick["tables"]["memory_entities"] == 1
    report = full.json()
    assert report["ok"] is True, report
    assert report["comprehensive"] is True
    assert any(
        f["check"] == "embeddings" and f["message"] == "1 embeddings for 1 entities"
        for f in report["findings"]
    )
