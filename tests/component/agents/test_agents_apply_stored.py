"""Instances sharing a deployment store follow one another's API deploys (issue #15).

Each "instance" is a real :class:`~caxton.agents.registry.Registry` and
:class:`~caxton.agents.service.AgentService` over its own deployment store object, the stores
sharing one folder (embedded) or one PostgreSQL database. The runtime is a fake at the seam
(config agents that answer at once), so that no LLM is needed.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import attrs
import pytest
import trio
from deployment_backends import BACKENDS, make_backend

from caxton.agents import parse_agent_spec
from caxton.agents.logs import AgentLogs
from caxton.agents.registry import Registry
from caxton.agents.runtime import AgentReply
from caxton.agents.service import AgentService
from caxton.agents.table import AgentTable
from caxton.events import EventHub
from caxton.metrics import Metrics

if TYPE_CHECKING:
    from collections.abc import AsyncIterator
    from pathlib import Path

    from deployment_backends import DeploymentBackend

    from caxton.agents.runtime import LoadRequest
    from caxton.messages import Message


class Instance:
    """A loaded config agent that answers with its version."""

    def __init__(self, version: str) -> None:
        self.version = version

    @property
    def details(self) -> dict[str, Any]:
        return {}

    async def handle(self, message: Message, stream: object = None) -> AgentReply:
        return AgentReply(content=self.version, chunks=0)

    async def aclose(self) -> None:
        pass


class Runtime:
    async def load(self, request: LoadRequest) -> Instance:
        return Instance(request.spec.version)


def agent_file(version: str, *, name: str = "helper", strategy: str = "blue-green") -> str:
    return (
        f'name = "{name}"\nversion = "{version}"\nsystem_prompt = "v{version}"\n'
        f'[deployment]\nstrategy = "{strategy}"\ncanary_percentage = 10\n'
    )


@attrs.frozen
class Node:
    registry: Registry
    service: AgentService

    def view(self, name: str = "helper") -> dict[str, Any]:
        return self.registry.agent_view(name)


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> DeploymentBackend:
    return make_backend(request)


@contextlib.asynccontextmanager
async def node(backend: DeploymentBackend, agents_dir: Path) -> AsyncIterator[Node]:
    async with backend.open() as store, trio.open_nursery() as nursery:
        metrics = Metrics()
        registry = Registry(
            AgentTable(metrics),
            runtimes={"config": Runtime()},
            events=EventHub(),
            metrics=metrics,
            logs=AgentLogs(),
            drain_timeout_s=1,
        )
        await nursery.start(registry.run)
        yield Node(registry, AgentService(registry, store, agents_dir=agents_dir))
        nursery.cancel_scope.cancel()


@pytest.mark.timeout(60)
async def test_deploys_canaries_promotes_and_removals_reach_the_other_instance(
    backend: DeploymentBackend, tmp_path: Path
) -> None:
    async with node(backend, tmp_path) as a, node(backend, tmp_path) as b:
        await b.service.apply_stored("helper")  # nothing stored, nothing running: no-op
        assert "helper" not in b.registry.state.agents

        await a.service.deploy(agent_file("1.0.0"), None)
        await b.service.apply_stored("helper")
        assert b.view()["version"] == "1.0.0"
        assert b.view()["source"] == a.view()["source"]

        await a.service.deploy(agent_file("2.0.0"), None, replace="helper")
        await b.service.apply_stored("helper")
        assert b.view()["version"] == "2.0.0"
        await b.service.apply_stored("helper")  # already in line: nothing changes
        assert b.view()["version"] == "2.0.0"

        await a.service.set_canary("helper", version="1.0.0", traffic_percentage=30)
        await b.service.apply_stored("helper")
        assert b.view()["canary"] == {"version": "1.0.0", "traffic_percentage": 30}
        await a.service.set_canary("helper", version="1.0.0", traffic_percentage=50)
        await b.service.apply_stored("helper")  # the same canary, another share
        assert b.view()["canary"] == {"version": "1.0.0", "traffic_percentage": 50}

        await a.service.promote("helper")
        await b.service.apply_stored("helper")
        assert (b.view()["version"], b.view()["canary"]) == ("1.0.0", None)

        await a.service.remove("helper")
        await b.service.apply_stored("helper")
        assert "helper" not in b.registry.state.agents


@pytest.mark.timeout(60)
async def test_a_canary_deploy_and_its_end_reach_the_other_instance(
    backend: DeploymentBackend, tmp_path: Path
) -> None:
    async with node(backend, tmp_path) as a, node(backend, tmp_path) as b:
        await a.service.deploy(agent_file("1.0.0"), None)
        await a.service.deploy(agent_file("2.0.0", strategy="canary"), None, replace="helper")
        assert a.view()["canary"] == {"version": "2.0.0", "traffic_percentage": 10}
        await b.service.apply_stored("helper")  # B never saw 1.0.0 nor 2.0.0
        assert b.view()["version"] == "1.0.0"
        assert b.view()["canary"] == {"version": "2.0.0", "traffic_percentage": 10}

        await a.service.rollback("helper")  # ends the canary
        await b.service.apply_stored("helper")
        assert (b.view()["version"], b.view()["canary"]) == ("1.0.0", None)


@pytest.mark.timeout(60)
async def test_a_restart_restores_the_active_version_and_its_canary(
    backend: DeploymentBackend, tmp_path: Path
) -> None:
    async with node(backend, tmp_path) as a:
        await a.service.deploy(agent_file("1.0.0"), None)
        await a.service.deploy(agent_file("2.0.0"), None, replace="helper")
        await a.service.set_canary("helper", version="1.0.0", traffic_percentage=40)
    async with node(backend, tmp_path) as restarted:
        assert await restarted.service.restore() == 1
        await restarted.registry.wait_all_settled(timeout_s=10)
        assert restarted.view()["version"] == "2.0.0"
        assert restarted.view()["canary"] == {"version": "1.0.0", "traffic_percentage": 40}


@pytest.mark.timeout(60)
async def test_an_agent_from_a_file_is_not_removed_by_an_empty_store(
    backend: DeploymentBackend, tmp_path: Path
) -> None:
    async with node(backend, tmp_path) as a:
        a.registry.deploy(
            parse_agent_spec(agent_file("1.0.0"), source=str(tmp_path / "helper.toml"))
        )
        await a.registry.wait_all_settled(timeout_s=10)
        await a.service.apply_stored("helper")
        assert a.view()["source"] == str(tmp_path / "helper.toml")
