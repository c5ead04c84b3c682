"""The deployment stores keep the same things on files and in PostgreSQL (issue #15)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from deployment_backends import BACKENDS, make_backend

from caxton.agents.deployments import (
    DEPLOYMENT_POSTGRES_MIGRATIONS,
    CanaryState,
    PostgresDeployments,
)
from caxton.store.postgres import open_postgres_store

if TYPE_CHECKING:
    from deployment_backends import DeploymentBackend


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> DeploymentBackend:
    return make_backend(request)


async def test_a_saved_version_serves_once_set_active(backend: DeploymentBackend) -> None:
    async with backend.open() as store:
        assert await store.load_all() == []
        assert await store.load("echo") is None
        await store.save("echo", "h1", b"name = 'echo'", b"\0asm")
        assert await store.load("echo") is None  # kept, not serving yet
        assert await store.set_active("echo", "h1")
        assert not await store.set_active("echo", "never-saved")
        loaded = await store.load("echo")
        assert loaded is not None
        assert (loaded.content, loaded.module, loaded.content_hash) == (
            b"name = 'echo'",
            b"\0asm",
            "h1",
        )
        assert loaded.source == store.source_for("echo")
        assert loaded.source.startswith(store.source_root + "/")
        assert loaded.canary is None
        await store.save("config", "c1", b"name = 'config'", None)
        await store.set_active("config", "c1")
        assert [a.name for a in await store.load_all()] == ["config", "echo"]
        assert (await store.load_all())[0].module is None


async def test_the_canary_is_kept_and_cleared(backend: DeploymentBackend) -> None:
    async with backend.open() as store:
        await store.save("echo", "h1", b"one", None)
        await store.save("echo", "h2", b"two", None)
        canary = CanaryState(content_hash="h2", traffic_percentage=25.0)
        assert await store.set_active("echo", "h1", canary=canary)
        loaded = await store.load("echo")
        assert loaded is not None
        assert loaded.canary is not None
        assert (loaded.canary.content_hash, loaded.canary.content) == ("h2", b"two")
        assert loaded.canary.traffic_percentage == 25.0
        # the canary survives a prune that keeps neither it nor the active version
        await store.prune("echo", set())
        loaded = await store.load("echo")
        assert loaded is not None
        assert loaded.canary is not None
        assert await store.set_active("echo", "h1")  # no canary any more
        loaded = await store.load("echo")
        assert loaded is not None
        assert loaded.canary is None
        # a canary of a version never kept is left out
        assert await store.set_active(
            "echo", "h1", canary=CanaryState(content_hash="nope", traffic_percentage=5.0)
        )
        loaded = await store.load("echo")
        assert loaded is not None
        assert loaded.canary is None


async def test_prune_keeps_what_is_asked_and_what_serves(backend: DeploymentBackend) -> None:
    async with backend.open() as store:
        for version in ("h1", "h2", "h3"):
            await store.save("echo", version, version.encode(), None)
        await store.set_active("echo", "h3")
        await store.prune("echo", {"h2"})
        assert await store.set_active("echo", "h2")
        assert not await store.set_active("echo", "h1")  # pruned
        assert await store.set_active("echo", "h3")


async def test_delete_forgets_the_agent(backend: DeploymentBackend) -> None:
    async with backend.open() as store:
        await store.save("echo", "h1", b"one", None)
        await store.set_active("echo", "h1")
        await store.delete("echo")
        await store.delete("echo")  # twice is fine
        assert await store.load("echo") is None
        assert await store.load_all() == []


async def test_two_instances_see_the_same_agents(backend: DeploymentBackend) -> None:
    async with backend.open() as first, backend.open() as second:
        await first.save("echo", "h1", b"one", None)
        await first.set_active("echo", "h1")
        loaded = await second.load("echo")
        assert loaded is not None
        assert loaded.content == b"one"
        assert second.source_for("echo") == first.source_for("echo")


@pytest.mark.postgres
async def test_postgres_writes_that_change_what_serves_notify(postgres_url: str) -> None:
    seen: list[str] = []
    async with open_postgres_store(postgres_url, migrations=DEPLOYMENT_POSTGRES_MIGRATIONS) as pg:
        store = PostgresDeployments(pg, notify=lambda conn, name: seen.append(name))
        await store.save("echo", "h1", b"one", None)
        assert seen == []  # a kept version alone serves nothing
        await store.set_active("echo", "h1")
        await store.prune("echo", set())
        await store.delete("echo")
    assert seen == ["echo", "echo"]
