"""Both deployment stores, for tests parametrized over them.

``open()`` gives one instance's :class:`~caxton.agents.deployments.Deployments`; opening twice
gives two instances over the same files (embedded) or the same database (PostgreSQL), as two
``caxton start`` processes would have.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import pytest

from caxton.agents.deployments import (
    DEPLOYMENT_POSTGRES_MIGRATIONS,
    Deployments,
    FileDeployments,
    PostgresDeployments,
)
from caxton.store.postgres import open_postgres_store

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

BACKENDS = ["files", pytest.param("postgres", marks=pytest.mark.postgres)]


@attrs.frozen
class DeploymentBackend:
    name: str
    root: Path
    url: str | None

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Deployments]:
        if self.url is None:
            yield FileDeployments(self.root)
            return
        async with open_postgres_store(
            self.url, migrations=DEPLOYMENT_POSTGRES_MIGRATIONS
        ) as store:
            yield PostgresDeployments(store)


def make_backend(request: pytest.FixtureRequest) -> DeploymentBackend:
    root = request.getfixturevalue("tmp_path") / "deployed"
    if request.param == "files":
        return DeploymentBackend("files", root, None)
    return DeploymentBackend("postgres", root, request.getfixturevalue("postgres_url"))
