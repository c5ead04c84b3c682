"""Crash safety: every entity whose create call returned 2xx survives a SIGKILL."""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx
import trio
from processes import start_server, wait_exit, write_config

if TYPE_CHECKING:
    from pathlib import Path


async def test_sigkill_during_a_write_loop_loses_no_acknowledged_entity(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    config = write_config(tmp_path / "caxton.yaml", tmp_path / "data")
    server = await start_server(nursery, "--config", str(config))
    acknowledged: list[str] = []

    async def write_loop(client: httpx.AsyncClient, worker: int) -> None:
        for i in range(10_000):
            name = f"entity-{worker}-{i}"
            try:
                response = await client.post(
                    "/api/v1/memory/entities",
                    json={
                        "name": name,
                        "entity_type": "note",
                        "observations": [f"observation number {i} from writer {worker}"],
                    },
                )
            except httpx.TransportError:
                return  # the server is gone
            if response.status_code == 201:
                acknowledged.append(name)

    async with httpx.AsyncClient(base_url=server.api_url, timeout=10) as client:
        async with trio.open_nursery() as writers:
            for worker in range(4):
                writers.start_soon(write_loop, client, worker)
            with trio.fail_after(60):
                while len(acknowledged) < 40:
                    await trio.sleep(0.01)
            server.process.kill()
        await wait_exit(server.process)
    assert len(acknowledged) >= 40

    again = await start_server(nursery, "--config", str(config))
    assert any("did not stop cleanly" in m for m in again.messages())
    async with httpx.AsyncClient(base_url=again.api_url, timeout=10) as client:
        missing = [
            name
            for name in acknowledged
            if (await client.get(f"/api/v1/memory/entities/{name}")).status_code != 200
        ]
        assert not missing, f"{len(missing)} acknowledged entities were lost: {missing[:5]}"
        found = await client.get("/api/v1/memory/search", params={"q": "observation number"})
        assert found.status_code == 200
        assert found.json()
    again.process.terminate()
    assert await wait_exit(again.process) == 0
