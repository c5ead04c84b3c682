"""Fixtures for the WASM runtime tests: a running pool and small WAT guests.

Every test here runs guests in worker threads, so all of them use the real clock (never
``autojump_clock``: a worker thread looks blocked to trio) and carry a ``fail_after`` cap.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from caxton.wasm import WasmPool


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "real_clock: runs wasmtime in worker threads; must not use autojump_clock"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.real_clock)


@pytest.fixture
async def pool(nursery) -> WasmPool:
    """A running pool (its ticker is a task of the test's nursery)."""
    wasm_pool = WasmPool(max_concurrent_calls=4)
    await nursery.start(wasm_pool.run)
    return wasm_pool
