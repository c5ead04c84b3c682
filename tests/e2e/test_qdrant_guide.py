"""Moving memory to Qdrant with real processes (issue #16), against qdrant-client's local mode
(no Qdrant server can be installed here).

* The operator guide's "Horizontal Scaling" steps 1, 3 and 4, verbatim, in one working folder:
  ``caxton memory export --format json --output memory-export.json`` from a running embedded
  server, the guide's ``cat > caxton.yaml << 'EOF' ... EOF`` block, a server started on it, then
  ``caxton memory import memory-export.json``; every entity is then found by semantic search.
  The one change to the guide's text: the block names ``path: "qdrant-data"`` (local mode, a
  folder under data_dir) where the guide has ``url: "http://localhost:6333"``. The server's
  address and data_dir come from the environment (``CAXTON_PORT=0`` and so on), since the
  guide's block replaces the whole file. Step 2 starts a Qdrant container and step 5 more
  instances: neither exists in local mode.
* ``caxton memory migrate --to qdrant --path DIR`` from a stopped embedded server, twice, then
  a server on the configuration block it prints, serving the same searches.

Both end with ``caxton memory stats``, ``/metrics`` and ``caxton storage verify`` naming the
backend and checking the collection.
"""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import trio
from processes import CAXTON_CMD, caxton_env, start_server, wait_exit, write_config

if TYPE_CHECKING:
    import subprocess

    from processes import ServerProcess

#: Each entity, and a query that says the same in other words: its best match.
ENTITIES: list[tuple[dict[str, Any], str]] = [
    (
        {
            "name": "Whiskers",
            "entity_type": "pet",
            "observations": ["a small cat that sleeps on the sofa", "likes chasing mice"],
        },
        "a kitten napping on the couch",
    ),
    (
        {
            "name": "NASDAQ",
            "entity_type": "market",
            "observations": ["stock exchange where shares are traded"],
            "scope": "workspace",
        },
        "where stocks are bought and sold",
    ),
    (
        {
            "name": "Paris",
            "entity_type": "city",
            "observations": ["capital of France, home of the Eiffel Tower"],
        },
        "the French capital",
    ),
    (
        {
            "name": "Ada",
            "entity_type": "person",
            "observations": ["mathematician who wrote the first computer program"],
        },
        "an early programming pioneer",
    ),
    (
        {
            "name": "Rex",
            "entity_type": "pet",
            "observations": ["a dog that barks at the postman"],
            "scope": "agent",
            "agent": "keeper",
        },
        "a barking dog",
    ),
    (
        {
            "name": "Everest",
            "entity_type": "mountain",
            "observations": ["the highest mountain on Earth, in the Himalayas"],
        },
        "the tallest peak in the world",
    ),
]
RELATION = {"from": "Ada", "to": "Paris", "relation_type": "visited", "strength": 0.7}

#: The guide's step 1, as it is written.
GUIDE_STEP_1 = "caxton memory export --format json --output memory-export.json"
#: The guide's step 4, as it is written.
GUIDE_STEP_4 = "caxton memory import memory-export.json"
#: The guide's step 3, but for ``path`` in place of ``url`` (local mode).
GUIDE_STEP_3 = """\
cat > caxton.yaml << 'EOF'
memory:
  backend: "qdrant"
  qdrant_config:
    path: "qdrant-data"
    collection: "caxton-memory"
    vector_size: 384  # All-MiniLM-L6-v2
EOF
"""


async def run(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    """``caxton ARGS`` run in ``cwd``, as an operator types it there."""
    return await trio.run_process(
        [*CAXTON_CMD, *args],
        cwd=str(cwd),
        env=env or caxton_env(),
        capture_stdout=True,
        capture_stderr=True,
        stdin=b"",
        check=False,
    )


async def shell(line: str, *, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    """``line`` run by bash in ``cwd``, with this checkout's ``caxton`` first on PATH."""
    folder = str(Path(CAXTON_CMD[0]).parent) if len(CAXTON_CMD) == 1 else ""
    path = f"{folder}:{env.get('PATH', '')}" if folder else env.get("PATH", "")
    return await trio.run_process(
        ["bash", "-c", line],
        cwd=str(cwd),
        env={**env, "PATH": path},
        capture_stdout=True,
        capture_stderr=True,
        stdin=b"",
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout.decode()


async def stop(server: ServerProcess) -> None:
    server.process.send_signal(signal.SIGTERM)
    assert await wait_exit(server.process) == 0


async def fill(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/api/v1/memory/entities", json={"entities": [entity for entity, _ in ENTITIES]}
    )
    assert created.status_code == 201, created.text
    related = await client.post("/api/v1/memory/relations", json=RELATION)
    assert related.status_code == 201, related.text


async def searches(client: httpx.AsyncClient) -> dict[str, list[tuple[str, float]]]:
    """Each query's hits (as the agent keeper, who sees Rex), best first."""
    found = {}
    for _, query in ENTITIES:
        answer = await client.get(
            "/api/v1/memory/search", params={"q": query, "limit": 3, "agent": "keeper"}
        )
        assert answer.status_code == 200, answer.text
        found[query] = [(hit["name"], hit["similarity"]) for hit in answer.json()["results"]]
    return found


def every_entity_found(found: dict[str, list[tuple[str, float]]]) -> None:
    for entity, query in ENTITIES:
        assert found[query][0][0] == entity["name"], (query, found[query])


async def shows_qdrant(server: ServerProcess, cwd: Path, env: dict[str, str]) -> None:
    """memory stats, /metrics and storage verify name the backend and check the collection."""
    stats = ok(await run("memory", "stats", cwd=cwd, env=env))
    assert re.search(r"^Backend:\s+qdrant$", stats, re.MULTILINE), stats
    assert re.search(r"^Entities:\s+6 of ", stats, re.MULTILINE), stats
    detailed = ok(await run("memory", "stats", "--detailed", cwd=cwd, env=env))
    assert "Qdrant Performance:" in detailed
    as_json = json.loads(ok(await run("memory", "stats", "-o", "json", cwd=cwd, env=env)))
    assert as_json["backend"] == "qdrant"
    assert (as_json["entity_count"], as_json["relation_count"]) == (6, 1)
    assert server.metrics_url is not None
    async with httpx.AsyncClient(timeout=30) as client:
        metrics = (await client.get(server.metrics_url)).text
    assert 'caxton_memory_backend_info{backend="qdrant"} 1.0' in metrics
    assert "caxton_memory_entities_total 6.0" in metrics
    verified = json.loads(ok(await run("storage", "verify", "-o", "json", cwd=cwd, env=env)))
    assert verified["ok"] is True, verified
    qdrant = [f for f in verified["findings"] if f["check"] == "qdrant"]
    assert [f["severity"] for f in qdrant] == ["info", "info"]
    assert "'caxton-memory' at " in qdrant[0]["message"]
    assert "6 points for 6 entities, vector size 384" in qdrant[0]["message"]
    assert "1 points for 1 relations" in qdrant[1]["message"]
    table = ok(await run("storage", "verify", cwd=cwd, env=env))
    assert "6 points for 6 entities" in table


async def test_the_guides_horizontal_scaling_steps_in_local_mode(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    work = tmp_path / "ops"
    work.mkdir()
    data_dir = work / "data"
    # the server's address and data_dir: the guide's block replaces the whole caxton.yaml
    env = caxton_env(
        CAXTON_HOST="127.0.0.1",
        CAXTON_PORT="0",
        CAXTON_METRICS_PORT="0",
        CAXTON_DATA_DIR=str(data_dir),
    )
    with trio.fail_after(240):
        (work / "caxton.yaml").write_text("server:\n  shutdown_timeout: 10s\n")
        embedded = await start_server(nursery, "--config", str(work / "caxton.yaml"), env=env)
        async with httpx.AsyncClient(base_url=embedded.api_url, timeout=30) as client:
            await fill(client)
            before = await searches(client)
        every_entity_found(before)

        # 1. Export existing data
        cli_env = {**env, "CAXTON_URL": embedded.api_url}
        ok(await shell(GUIDE_STEP_1, cwd=work, env=cli_env))
        exported = json.loads((work / "memory-export.json").read_text())
        assert exported["metadata"]["entity_count"] == len(ENTITIES)
        await stop(embedded)

        # 3. Update configuration (the guide's heredoc, run by a shell in the same folder)
        ok(await shell(GUIDE_STEP_3, cwd=work, env=env))
        assert (work / "caxton.yaml").read_text().startswith('memory:\n  backend: "qdrant"\n')
        server = await start_server(nursery, "--config", str(work / "caxton.yaml"), env=env)
        assert (data_dir / "qdrant-data").is_dir()
        cli_env = {**env, "CAXTON_URL": server.api_url}

        # 4. Import data to new backend
        imported = ok(await shell(GUIDE_STEP_4, cwd=work, env=cli_env))
        assert "6 created" in imported
        assert "6 entities now" in imported

        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            after = await searches(client)
            graph = (await client.get("/api/v1/memory/graph/Ada")).json()
        every_entity_found(after)
        # imported entities are embedded again by the same model: the same ranking and scores
        for query, hits in before.items():
            assert [name for name, _ in after[query]] == [name for name, _ in hits]
            for (_, old), (_, new) in zip(hits, after[query], strict=True):
                assert abs(old - new) < 1e-3
        assert [(e["from"], e["to"], e["relation_type"]) for e in graph["edges"]] == [
            ("Ada", "Paris", "visited")
        ]
        await shows_qdrant(server, work, cli_env)
        await stop(server)


async def test_memory_migrate_to_qdrant_then_serve_from_there(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(240):
        config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
        embedded = await start_server(nursery, "--config", str(config))
        async with httpx.AsyncClient(base_url=embedded.api_url, timeout=30) as client:
            await fill(client)
            before = await searches(client)
        every_entity_found(before)
        target = tmp_path / "qdrant"
        migrate = ("--config", str(config), "memory", "migrate", "--to", "qdrant")

        # refused while the server runs, naming it
        refused = await run(*migrate, "--path", str(target), cwd=tmp_path)
        assert refused.returncode == 1
        assert f"(pid {embedded.process.pid}) is running on data_dir".encode() in refused.stderr
        await stop(embedded)

        moved = await run(*migrate, "--path", str(target), cwd=tmp_path)
        out = ok(moved)
        stderr = moved.stderr.decode()
        assert "copying entities" in stderr
        assert "copying relations" in stderr
        assert "every count matches" in out
        block = out.split("set in caxton.yaml and restart:\n\n", 1)[1]
        assert block == (
            "memory:\n"
            '  backend: "qdrant"\n'
            "  qdrant_config:\n"
            f'    path: "{target}"\n'
            '    collection: "caxton-memory"\n'
            "    vector_size: 384\n"
        )

        # again, with the report as JSON (and no progress bar): nothing is written twice
        again = await run(*migrate, "--path", str(target), "-o", "json", cwd=tmp_path)
        report: dict[str, Any] = json.loads(ok(again))
        assert "copying" not in again.stderr.decode()
        assert report["verified"] is True
        assert report["mismatches"] == []
        assert report["counts"]["entities"] == {
            "source": 6,
            "target": 6,
            "copied": 0,
            "skipped": 6,
        }
        assert report["counts"]["relations"] == {
            "source": 1,
            "target": 1,
            "copied": 0,
            "skipped": 1,
        }
        assert report["config"] == block

        # --url and --path together: one line saying so
        both = await run(*migrate, "--path", str(target), "--url", "http://x:6333", cwd=tmp_path)
        assert both.returncode == 1
        assert b"name either --url" in both.stderr

        # a server on the printed block serves the same memory, embeddings as stored
        config.write_text(config.read_text() + block)
        server = await start_server(nursery, "--config", str(config))
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            after = await searches(client)
        for query, hits in before.items():
            assert [name for name, _ in after[query]] == [name for name, _ in hits]
            for (_, old), (_, new) in zip(hits, after[query], strict=True):
                assert abs(old - new) < 1e-4
        await shows_qdrant(server, tmp_path, caxton_env(CAXTON_URL=server.api_url))
        await stop(server)

        # storage verify with the server stopped reads the collections itself
        offline = await run(
            "--config", str(config), "storage", "verify", "-o", "json", cwd=tmp_path
        )
        verified = json.loads(ok(offline))
        assert verified["source"] == "files"
        assert verified["ok"] is True, verified
        messages = [f["message"] for f in verified["findings"] if f["check"] == "qdrant"]
        assert messages == [
            f"collection 'caxton-memory' at (local mode) {target}: 6 points for 6 entities, "
            "vector size 384",
            f"collection 'caxton-memory-relations' at (local mode) {target}: 1 points for "
            "1 relations",
        ]
