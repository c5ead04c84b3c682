"""``caxton memory …`` against real ``caxton start`` processes: the operator's guide commands
verbatim, and the migration path (export, wipe the data_dir, start again, import)."""

from __future__ import annotations

import json
import shutil
import signal
from typing import TYPE_CHECKING

import httpx
import trio
from processes import CAXTON_CMD, caxton_env, start_server, wait_exit, write_config

if TYPE_CHECKING:
    import subprocess
    from pathlib import Path

CAT = {
    "name": "Whiskers",
    "entity_type": "pet",
    "observations": ["a small cat that sleeps on the sofa", "likes chasing mice"],
}
STOCKS = {
    "name": "NASDAQ",
    "entity_type": "market",
    "observations": ["stock exchange where shares are traded", "prices fell sharply"],
}


async def cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        [*CAXTON_CMD, *args],
        capture_stdout=True,
        capture_stderr=True,
        env=env,
        cwd=str(cwd),
        stdin=b"",
        check=False,
    )


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, (result.args, result.stdout, result.stderr)
    return result.stdout.decode()


async def search_names(cwd: Path, env: dict[str, str]) -> list[tuple[str, float]]:
    out = ok(await cli("memory", "search", "a kitten on a rug", "-o", "json", cwd=cwd, env=env))
    return [(hit["name"], hit["similarity"]) for hit in json.loads(out)["results"]]


def records(path: Path) -> list[dict[str, object]]:
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [line for line in lines if line["kind"] != "metadata"]


async def stop(server_process: trio.Process) -> None:
    server_process.send_signal(signal.SIGTERM)
    assert await wait_exit(server_process) == 0


async def test_runbook_commands_and_export_wipe_import(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    with trio.fail_after(120):
        data_dir = tmp_path / "data"
        # the model on onnxruntime here (OpenVINO, the default, runs in the other tests)
        config = write_config(
            tmp_path / "caxton.yaml",
            data_dir,
            "memory:\n  max_entities: 3\n  embedding_config:\n    runtime: onnxruntime\n",
        )
        server = await start_server(nursery, "--config", str(config))
        env = caxton_env(CAXTON_URL=server.api_url)
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
            for entity in (CAT, STOCKS):
                created = await client.post("/api/v1/memory/entities", json=entity)
                assert created.status_code == 201, created.text

        table = ok(await cli("memory", "search", "a kitten on a rug", cwd=tmp_path, env=env))
        header, first, second = table.splitlines()
        assert header.split()[:3] == ["NAME", "TYPE", "SIMILARITY"]
        assert first.startswith("Whiskers")
        assert second.startswith("NASDAQ")
        before = await search_names(tmp_path, env)
        assert [name for name, _ in before] == ["Whiskers", "NASDAQ"]

        # The operator's guide, verbatim.
        detailed = ok(await cli("memory", "stats", "--detailed", cwd=tmp_path, env=env))
        for label in (
            "DuckDB Performance:",
            "Embedding Performance:",
            "2 of 3 (66.7%)",
            "Database size:",
            "Search latency:",
            "Average encoding time:",
        ):
            assert label in detailed
        runtime = next(line for line in detailed.splitlines() if "Runtime:" in line)
        assert "onnxruntime" in runtime, runtime
        assert "Relations:" in ok(await cli("memory", "stats", cwd=tmp_path, env=env))
        for args in (
            ("memory", "optimize", "--vacuum", "--reindex", "--analyze"),
            ("memory", "optimize", "--vacuum", "--analyze"),
            ("memory", "optimize"),
        ):
            assert ok(await cli(*args, cwd=tmp_path, env=env)).startswith("optimized: checkpoint")
        rebuilt = ok(await cli("memory", "cache-clear", "--rebuild", cwd=tmp_path, env=env))
        assert "rebuilt with 2 vectors" in rebuilt
        capacity = await cli("memory", "capacity-check", cwd=tmp_path, env=env)
        assert "OK: 2 of 3 entities" in ok(capacity)
        exported = ok(
            await cli(
                "memory",
                "export",
                "--format",
                "json",
                "--output",
                "memory-export.json",
                cwd=tmp_path,
                env=env,
            )
        )
        assert "exported 2 entities and 0 relations to memory-export.json" in exported
        document = json.loads((tmp_path / "memory-export.json").read_text())
        assert [e["name"] for e in document["entities"]] == ["NASDAQ", "Whiskers"]
        ok(
            await cli(
                "memory",
                "export",
                "--format",
                "jsonl",
                "--output",
                "online.jsonl",
                cwd=tmp_path,
                env=env,
            )
        )

        # Near the limit: capacity-check warns (exit 1) and a write past it is refused.
        ok(
            await cli(
                "memory",
                "add",
                "Ada",
                "--type",
                "person",
                "--observation",
                "owns a cat",
                cwd=tmp_path,
                env=env,
            )
        )
        full = await cli("memory", "capacity-check", "-o", "json", cwd=tmp_path, env=env)
        assert full.returncode == 1
        assert json.loads(full.stdout)["warning"] is True
        refused = await cli("memory", "add", "Rex", "--type", "pet", cwd=tmp_path, env=env)
        assert refused.returncode == 1
        assert b"MEMORY_LIMIT_EXCEEDED" in refused.stderr
        ok(await cli("memory", "delete", "Ada", cwd=tmp_path, env=env))

        # With the server stopped, export reads the database file.
        await stop(server.process)
        offline_env = caxton_env(CAXTON_CONFIG_PATH=str(config))
        offline = await cli(
            "memory",
            "export",
            "--format",
            "jsonl",
            "--output",
            "offline.jsonl",
            cwd=tmp_path,
            env=offline_env,
        )
        assert b"exporting from" in offline.stderr
        assert "exported 2 entities" in ok(offline)
        assert records(tmp_path / "offline.jsonl") == records(tmp_path / "online.jsonl")
        nowhere = await cli(
            "memory",
            "export",
            "--output",
            "x.json",
            cwd=tmp_path,
            env=caxton_env(CAXTON_URL=server.api_url),
        )
        assert nowhere.returncode == 1
        assert b"caxton --config" in nowhere.stderr
        assert not (tmp_path / "x.json").exists()

        # Wipe the data_dir, start again, import: the same search results.
        shutil.rmtree(data_dir)
        server = await start_server(nursery, "--config", str(config))
        env = caxton_env(CAXTON_URL=server.api_url)
        assert await search_names(tmp_path, env) == []

        truncated = tmp_path / "truncated.json"
        text = (tmp_path / "memory-export.json").read_text()
        truncated.write_text(text[: len(text) // 2])
        failed = await cli("memory", "import", str(truncated), cwd=tmp_path, env=env)
        assert failed.returncode == 1
        assert b"may be truncated" in failed.stderr
        cut_lines = tmp_path / "truncated.jsonl"
        cut_lines.write_text("".join((tmp_path / "online.jsonl").read_text().splitlines(True)[:-1]))
        failed = await cli("memory", "import", str(cut_lines), cwd=tmp_path, env=env)
        assert failed.returncode == 1
        assert b"truncated" in failed.stderr
        assert await search_names(tmp_path, env) == []

        imported = ok(await cli("memory", "import", "memory-export.json", cwd=tmp_path, env=env))
        assert "entities 2 created, 0 updated, 0 skipped" in imported
        after = await search_names(tmp_path, env)
        assert [name for name, _ in after] == [name for name, _ in before]
        for (_, old), (_, new) in zip(before, after, strict=True):
            assert abs(old - new) < 1e-4
        again = ok(
            await cli(
                "memory",
                "import",
                "offline.jsonl",
                "--merge-strategy",
                "skip_existing",
                cwd=tmp_path,
                env=env,
            )
        )
        assert "0 created, 0 updated, 2 skipped" in again
        conflict = await cli(
            "memory",
            "import",
            "offline.jsonl",
            "--merge-strategy",
            "error_on_conflict",
            cwd=tmp_path,
            env=env,
        )
        assert conflict.returncode == 1
        assert b"CONFLICT" in conflict.stderr
        await stop(server.process)
