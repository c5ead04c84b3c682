"""A real PostgreSQL with pgvector for the tests that need one (issue #15).

A pytest plugin (``pytest_plugins`` in ``tests/conftest.py``). The first test that asks for
``postgres_url`` starts one server for the whole session, with ``tools/postgres.py``, in a
temporary directory on a free loopback port; the session's end stops it. Each test gets a
database of its own, copied from a template that already has the ``vector`` extension, and
dropped afterwards.

Tests that use these fixtures are marked ``postgres``: ``pytest -m postgres`` runs them alone,
``-m "not postgres"`` leaves them out. They are not skipped anywhere: ``make test`` runs them.
"""

from __future__ import annotations

import importlib.util
import itertools
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import psycopg
import pytest
from psycopg import sql

if TYPE_CHECKING:
    from collections.abc import Iterator
    from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
TEMPLATE = "caxton_template"
FIXTURES = frozenset({"postgres_server", "postgres_url", "own_postgres"})
_numbers = itertools.count(1)


def load_postgres_tool() -> ModuleType:
    """``tools/postgres.py`` as a module (``tools/`` is no package)."""
    if "postgres_tool" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "postgres_tool", REPO / "tools" / "postgres.py"
        )
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["postgres_tool"] = module
        spec.loader.exec_module(module)
    return sys.modules["postgres_tool"]


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "postgres: runs against a real PostgreSQL (tests/postgres.py starts it)"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.postgres)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[object]:
    """One PostgreSQL for the session (a ``tools/postgres.py`` ``Server``: ``url``,
    ``url_for(database)``, ``port``), with the template database the tests' copies come from."""
    tool = load_postgres_tool()
    # Under /tmp, open to traversal: as root the server runs as an unprivileged user.
    directory = Path(tempfile.mkdtemp(prefix="caxton-pg-"))
    directory.chmod(0o711)
    try:
        server = tool.start(directory, fsync=False)
        try:
            with psycopg.connect(server.url, autocommit=True) as conn:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE)))
            with psycopg.connect(server.url_for(TEMPLATE), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION vector")
            yield server
        finally:
            tool.stop(directory)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_server: object) -> Iterator[str]:
    """The URL of a new, empty database (``vector`` created) that only this test uses."""
    name = f"test_{next(_numbers)}"
    admin_url: str = postgres_server.url  # type: ignore[attr-defined]
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name), sql.Identifier(TEMPLATE)
            )
        )
    try:
        yield postgres_server.url_for(name)  # type: ignore[attr-defined]
    finally:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def own_postgres() -> Iterator[object]:
    """A PostgreSQL of this test's own, to stop and start again."""
    tool = load_postgres_tool()
    parent = Path(tempfile.mkdtemp(prefix="caxton-pgown-"))
    parent.chmod(0o711)
    try:
        server = tool.start(parent / "pg", fsync=False)
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        yield server
    finally:
        tool.stop(parent / "pg")
        shutil.rmtree(parent, ignore_errors=True)
