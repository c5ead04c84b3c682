"""Safe mode over HTTP: every mutating route refused, agents still answer, the watcher holds
file changes, the flag survives a restart, and lifting it restores writes."""

from __future__ import annotations

import logging
import re
import shutil
from typing import TYPE_CHECKING

import httpx
import trio
from ops_servers import REPO_AGENTS, running

from caxton.http.admin import SAFE_MODE_EXEMPT
from caxton.http.app import create_app
from caxton.http.state import ROUTES_KEY
from caxton.ops.safe_mode import FLAG_FILE

if TYPE_CHECKING:
    import pytest

    from caxton.config import LoadedConfig
    from caxton.http.routes import RouteSpec

CAT = {"name": "Whiskers", "entity_type": "pet", "observations": ["a small cat"]}


def _concrete(spec: RouteSpec) -> tuple[str, str]:
    method = next(m for m in spec.methods if m not in ("GET", "HEAD", "OPTIONS"))
    return method, re.sub(r"<(?:[a-z]+:)?[A-Za-z_]+>", "x", spec.rule)


async def _gauge(client: httpx.AsyncClient, url: str | None) -> float:
    assert url is not None
    text = (await client.get(url)).text
    line = next(line for line in text.splitlines() if line.startswith("caxton_server_safe_mode "))
    return float(line.split()[1])


async def test_safe_mode_blocks_every_mutating_route_and_lifts_cleanly(
    ops_config: LoadedConfig, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    agents_dir = ops_config.config.agents_dir
    with trio.fail_after(90):
        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):
            assert (await client.get("/api/v1/health")).json()["safe_mode"] is False
            assert await _gauge(client, info.metrics_url) == 0.0
            enabled = await client.post(
                "/api/v1/admin/safe-mode", json={"enabled": True, "reason": "incident 7"}
            )
            assert enabled.status_code == 200, enabled.text
            assert enabled.json()["enabled"] is True
            assert (await client.get("/api/v1/health")).json()["safe_mode"] is True
            assert await _gauge(client, info.metrics_url) == 1.0
            assert (ops_config.config.data_dir / FLAG_FILE).is_file()

            specs = create_app(info.services).config[ROUTES_KEY]
            mutating = [s for s in specs if s.mutating and not s.websocket]
            assert len(mutating) >= 10
            for spec in mutating:
                if spec.endpoint in SAFE_MODE_EXEMPT:
                    continue
                method, path = _concrete(spec)
                refused = await client.request(method, path, json={})
                assert refused.status_code == 503, (method, path, refused.text)
                error = refused.json()["error"]
                assert error["code"] == "SAFE_MODE"
                assert "incident 7" in error["message"]
                assert "caxton safe-mode --disable" in error["message"]

            # reads and talking to agents keep working; so does a backup
            assert (await client.get("/api/v1/memory/stats")).status_code == 200
            reply = await client.post("/api/v1/agents/echo/messages", json={"content": "hi"})
            assert reply.status_code == 200, reply.text
            backup = await client.post("/api/v1/admin/backup", json={})
            assert backup.status_code == 200, backup.text

            # agents_dir changes are held, then applied when safe mode is lifted
            for name in ("counter.toml", "counter.wat"):
                shutil.copy(REPO_AGENTS / name, agents_dir / name)
            while "safe mode: not applying changes" not in caplog.text:
                await trio.sleep(0.02)
            assert (await client.get("/api/v1/agents/counter")).status_code == 404

            disabled = await client.post("/api/v1/admin/safe-mode", json={"enabled": False})
            assert disabled.json() == {"enabled": False, "since": None, "reason": None}
            assert not (ops_config.config.data_dir / FLAG_FILE).exists()
            created = await client.post("/api/v1/memory/entities", json=CAT)
            assert created.status_code == 201, created.text
            while (await client.get("/api/v1/agents/counter")).status_code != 200:
                await trio.sleep(0.05)
            assert await _gauge(client, info.metrics_url) == 0.0

            invalid = await client.post("/api/v1/admin/safe-mode", json={"enabled": "yes"})
            assert invalid.status_code == 422


async def test_safe_mode_survives_a_restart(ops_config: LoadedConfig) -> None:
    with trio.fail_after(90):
        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):
            await client.post("/api/v1/admin/safe-mode", json={"enabled": True})
        async with (
            running(ops_config) as info,
            httpx.AsyncClient(base_url=info.api_urls[0], timeout=30) as client,
        ):
            status = (await client.get("/api/v1/admin/safe-mode")).json()
            assert status["enabled"] is True
            assert status["since"]
            refused = await client.post("/api/v1/memory/entities", json=CAT)
            assert refused.status_code == 503
            await client.post("/api/v1/admin/safe-mode", json={"enabled": False})
            assert (await client.post("/api/v1/memory/entities", json=CAT)).status_code == 201
