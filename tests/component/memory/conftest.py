"""Fixtures for the memory component: the real model, real DuckDB files in tmp_path.

The model folder is assembled once per session (a plain sync fixture); each test loads it into
its own embedder, which takes well under a second.
"""

from __future__ import annotations

import pytest

from caxton.memory import MEMORY_MIGRATIONS, Embedder, MemoryService, assemble_default_model
from caxton.store import Store


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return assemble_default_model(tmp_path_factory.mktemp("models") / "all-MiniLM-L6-v2")


@pytest.fixture
async def embedder(nursery, model_dir):
    return await nursery.start(Embedder(cache_dir=model_dir, batch_size=32, cache_size=512).run)


@pytest.fixture
async def store(nursery, tmp_path):
    return await nursery.start(Store(tmp_path / "caxton.duckdb", migrations=MEMORY_MIGRATIONS).run)


@pytest.fixture
async def memory(nursery, store, embedder):
    return await nursery.start(MemoryService(store, embedder, max_entities=1000).run)
