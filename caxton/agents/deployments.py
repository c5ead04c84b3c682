"""Agents deployed through the API, kept so that they survive restarts and reach every instance.

:class:`Deployments` is the seam; two stores satisfy it:

* :class:`FileDeployments` keeps them under ``data_dir/deployed`` (the embedded backend):
  ``deployed/<name>/versions/<content-hash>/agent.toml`` (plus ``module.wasm`` for WASM agents)
  for each version deployed through the API, ``deployed/<name>/active`` naming the version that
  serves and ``deployed/<name>/canary`` the canary and its traffic share, so a promote, a
  rollback or a canary survives a restart too. Every write goes to a temporary name first and is
  renamed into place, so a crash never leaves half a file.
* :class:`PostgresDeployments` keeps the same in two tables
  (:data:`DEPLOYMENT_POSTGRES_MIGRATIONS`), shared by every instance on the database.

What is stored is what served: the service writes a version only once it has loaded.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import attrs
import trio

from caxton.store import Migration

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from caxton.store.backend import Backend

T = TypeVar("T")

#: Blocking file operations at once, per :class:`FileDeployments`.
FILE_THREADS = 1


@attrs.frozen(kw_only=True)
class CanaryState:
    """A kept version taking ``traffic_percentage`` of new conversations."""

    content_hash: str
    traffic_percentage: float


@attrs.frozen(kw_only=True)
class StoredCanary:
    """The canary of a stored agent, with its file and module."""

    content_hash: str
    content: bytes
    module: bytes | None
    traffic_percentage: float


@attrs.frozen(kw_only=True)
class StoredAgent:
    """What the store says of one API-deployed agent: the version that serves, and its canary.

    Attributes:
        source: the agent's source label (:meth:`Deployments.source_for`).
        content: the agent file of the active version; ``module`` its WASM module, if any.
        content_hash: the active version's content hash (as the registry's specs carry it).
        canary: the canary, if one takes traffic.
    """

    name: str
    source: str
    content: bytes
    module: bytes | None
    content_hash: str = ""
    canary: StoredCanary | None = None


class Deployments(Protocol):
    """Where agents deployed through the API are kept.

    ``source_for`` is a pure label; every other method does I/O off the event loop.
    """

    @property
    def source_root(self) -> str:
        """The prefix of every source label (``source_for(name)`` is ``<root>/<name>``)."""
        ...

    def source_for(self, name: str) -> str:
        """The source label of API-deployed agent ``name``, the same on every instance."""
        ...

    async def save(
        self, name: str, content_hash: str, content: bytes, module: bytes | None
    ) -> None:
        """Keep this version of ``name`` (:meth:`set_active` makes it serve)."""
        ...

    async def set_active(
        self, name: str, content_hash: str, *, canary: CanaryState | None = None
    ) -> bool:
        """Make a kept version the one that serves, with ``canary`` (or none); ``False`` when
        that version was never kept. A canary whose version was never kept is left out."""
        ...

    async def prune(self, name: str, keep: set[str]) -> None:
        """Forget kept versions of ``name`` other than ``keep``, the active one and the canary."""
        ...

    async def delete(self, name: str) -> None:
        """Forget ``name`` and every version of it."""
        ...

    async def load(self, name: str) -> StoredAgent | None:
        """What is stored for ``name``, or ``None`` (never stored, deleted, or no active)."""
        ...

    async def load_all(self) -> list[StoredAgent]:
        """Every stored agent with an active version, by name."""
        ...


# -- files ---------------------------------------------------------------------------------------


class FileDeployments:
    """:class:`Deployments` as files under ``root``; each call runs in a worker thread.

    Args:
        root: the folder (``data_dir/deployed``); created on the first save.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._limiter = trio.CapacityLimiter(FILE_THREADS)

    @property
    def source_root(self) -> str:
        return str(self.root)

    def source_for(self, name: str) -> str:
        """The source label of API-deployed agent ``name`` (its folder)."""
        return str(self.root / name)

    async def save(
        self, name: str, content_hash: str, content: bytes, module: bytes | None
    ) -> None:
        await self._run(lambda: self._save(name, content_hash, content, module))

    async def set_active(
        self, name: str, content_hash: str, *, canary: CanaryState | None = None
    ) -> bool:
        return await self._run(lambda: self._set_active(name, content_hash, canary))

    async def prune(self, name: str, keep: set[str]) -> None:
        await self._run(lambda: self._prune(name, keep))

    async def delete(self, name: str) -> None:
        await self._run(lambda: shutil.rmtree(self.root / name, ignore_errors=True))

    async def load(self, name: str) -> StoredAgent | None:
        return await self._run(lambda: self._load(name))

    async def load_all(self) -> list[StoredAgent]:
        return await self._run(self._load_all)

    async def _run(self, fn: Callable[[], T]) -> T:
        return await trio.to_thread.run_sync(fn, limiter=self._limiter)

    # blocking ---------------------------------------------------------------------------------

    def _save(self, name: str, content_hash: str, content: bytes, module: bytes | None) -> None:
        folder = self.root / name / "versions" / content_hash
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for part in (self.root / name, self.root / name / "versions", folder):
            part.mkdir(mode=0o700, exist_ok=True)
        if module is not None:
            _write_atomic(folder / "module.wasm", module)
        _write_atomic(folder / "agent.toml", content)

    def _kept(self, name: str, content_hash: str) -> bool:
        return (self.root / name / "versions" / content_hash / "agent.toml").is_file()

    def _set_active(self, name: str, content_hash: str, canary: CanaryState | None) -> bool:
        if not self._kept(name, content_hash):
            return False
        canary_path = self.root / name / "canary"
        if canary is not None and self._kept(name, canary.content_hash):
            _write_atomic(
                canary_path,
                json.dumps(
                    {
                        "version": canary.content_hash,
                        "traffic_percentage": canary.traffic_percentage,
                    }
                ).encode(),
            )
        else:
            canary_path.unlink(missing_ok=True)
        _write_atomic(self.root / name / "active", content_hash.encode())
        return True

    def _prune(self, name: str, keep: set[str]) -> None:
        versions = self.root / name / "versions"
        if not versions.is_dir():
            return
        canary = self._canary(name)
        kept = {*keep, self._active(name), canary.content_hash if canary else None}
        for folder in versions.iterdir():
            if folder.name not in kept:
                shutil.rmtree(folder, ignore_errors=True)

    def _load(self, name: str) -> StoredAgent | None:
        active = self._active(name)
        if not active or not self._kept(name, active):
            return None
        content, module = self._version(name, active)
        canary = self._canary(name)
        stored_canary = None
        if canary is not None and self._kept(name, canary.content_hash):
            canary_content, canary_module = self._version(name, canary.content_hash)
            stored_canary = StoredCanary(
                content_hash=canary.content_hash,
                content=canary_content,
                module=canary_module,
                traffic_percentage=canary.traffic_percentage,
            )
        return StoredAgent(
            name=name,
            source=self.source_for(name),
            content=content,
            module=module,
            content_hash=active,
            canary=stored_canary,
        )

    def _load_all(self) -> list[StoredAgent]:
        if not self.root.is_dir():
            return []
        stored = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            agent = self._load(folder.name)
            if agent is not None:
                stored.append(agent)
        return stored

    def _version(self, name: str, content_hash: str) -> tuple[bytes, bytes | None]:
        version = self.root / name / "versions" / content_hash
        module_path = version / "module.wasm"
        module = module_path.read_bytes() if module_path.is_file() else None
        return (version / "agent.toml").read_bytes(), module

    def _active(self, name: str) -> str | None:
        try:
            return (self.root / name / "active").read_text().strip() or None
        except FileNotFoundError:
            return None

    def _canary(self, name: str) -> CanaryState | None:
        try:
            data = json.loads((self.root / name / "canary").read_text())
            return CanaryState(
                content_hash=str(data["version"]),
                traffic_percentage=float(data["traffic_percentage"]),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a canary file from nowhere: serve the active version alone


#: The name the server has always built the file store by.
DeploymentStore = FileDeployments


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    # owner-only: an agent file may hold an api_key (issue #13)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


# -- PostgreSQL ----------------------------------------------------------------------------------

#: ``deployed_agents``: one row per API-deployed agent, naming the version that serves and the
#: canary (version and share) if any; ``deployed_agent_versions``: every kept version's agent
#: file and WASM module. Deleting an agent deletes its versions.
DEPLOYMENT_POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        feature="deployments",
        version=1,
        description="agents deployed through the API, their versions and which ones serve",
        statements=(
            """
            CREATE TABLE deployed_agents (
                name TEXT PRIMARY KEY,
                active_hash TEXT,
                canary_hash TEXT,
                canary_percentage DOUBLE PRECISION,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """,
            """
            CREATE TABLE deployed_agent_versions (
                name TEXT NOT NULL REFERENCES deployed_agents (name) ON DELETE CASCADE,
                content_hash TEXT NOT NULL,
                content BYTEA NOT NULL,
                module BYTEA,
                created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
                PRIMARY KEY (name, content_hash)
            )
            """,
        ),
    ),
)

#: The source labels of agents kept in PostgreSQL: the same on every instance.
POSTGRES_SOURCE_ROOT = "postgres:deployed"

_LOAD = """
SELECT a.active_hash, v.content, v.module, a.canary_hash, c.content, c.module,
       a.canary_percentage
FROM deployed_agents a
JOIN deployed_agent_versions v ON v.name = a.name AND v.content_hash = a.active_hash
LEFT JOIN deployed_agent_versions c ON c.name = a.name AND c.content_hash = a.canary_hash
"""


class PostgresDeployments:
    """:class:`Deployments` in PostgreSQL tables, shared by every instance on the database.

    Args:
        store: the running store, migrated with :data:`DEPLOYMENT_POSTGRES_MIGRATIONS`.
        source_root: the prefix of the agents' source labels (the same on every instance).
        notify: called with the connection and the agent's name inside the transaction of each
            write that changes what serves (:meth:`set_active`, :meth:`delete`), to send the
            other instances a notice that is delivered only if the change commits.
    """

    def __init__(
        self,
        store: Backend,
        *,
        source_root: str = POSTGRES_SOURCE_ROOT,
        notify: Callable[[Any, str], None] | None = None,
    ) -> None:
        self.store = store
        self.notify = notify
        self._source_root = source_root

    @property
    def source_root(self) -> str:
        return self._source_root

    def source_for(self, name: str) -> str:
        return f"{self._source_root}/{name}"

    async def save(
        self, name: str, content_hash: str, content: bytes, module: bytes | None
    ) -> None:
        def save(conn: Any) -> None:
            conn.execute(
                "INSERT INTO deployed_agents (name) VALUES (%s) ON CONFLICT (name) DO NOTHING",
                [name],
            )
            conn.execute(
                "INSERT INTO deployed_agent_versions (name, content_hash, content, module) "
                "VALUES (%s, %s, %s, %s) ON CONFLICT (name, content_hash) DO UPDATE "
                "SET content = excluded.content, module = excluded.module",
                [name, content_hash, content, module],
            )

        await self.store.execute_write_fn(save)

    async def set_active(
        self, name: str, content_hash: str, *, canary: CanaryState | None = None
    ) -> bool:
        canary_hash = canary.content_hash if canary else None
        share = canary.traffic_percentage if canary else None

        def set_active(conn: Any) -> bool:
            row = conn.execute(
                "UPDATE deployed_agents a SET active_hash = %s, "
                "canary_hash = (SELECT content_hash FROM deployed_agent_versions "
                "  WHERE name = %s AND content_hash = %s), "
                "canary_percentage = %s, updated_at = now() "
                "WHERE a.name = %s AND EXISTS (SELECT 1 FROM deployed_agent_versions v "
                "  WHERE v.name = %s AND v.content_hash = %s) RETURNING a.canary_hash",
                [content_hash, name, canary_hash, share, name, name, content_hash],
            ).fetchone()
            if row is None:
                return False
            if row[0] is None and share is not None:
                conn.execute(
                    "UPDATE deployed_agents SET canary_percentage = NULL WHERE name = %s", [name]
                )
            if self.notify is not None:
                self.notify(conn, name)
            return True

        return await self.store.execute_write_fn(set_active)

    async def prune(self, name: str, keep: set[str]) -> None:
        await self.store.execute_write_fn(
            lambda conn: conn.execute(
                "DELETE FROM deployed_agent_versions v USING deployed_agents a "
                "WHERE v.name = %s AND a.name = v.name AND NOT (v.content_hash = ANY(%s)) "
                "AND v.content_hash IS DISTINCT FROM a.active_hash "
                "AND v.content_hash IS DISTINCT FROM a.canary_hash",
                [name, sorted(keep)],
            )
        )

    async def delete(self, name: str) -> None:
        def delete(conn: Any) -> None:
            conn.execute("DELETE FROM deployed_agents WHERE name = %s", [name])
            if self.notify is not None:
                self.notify(conn, name)

        await self.store.execute_write_fn(delete)

    async def load(self, name: str) -> StoredAgent | None:
        rows = await self.store.execute_fn(
            lambda conn: conn.execute(
                f"SELECT a.name, {_LOAD.strip().removeprefix('SELECT ')} WHERE a.name = %s",
                [name],
            ).fetchall()
        )
        return self._agent(rows[0]) if rows else None

    async def load_all(self) -> list[StoredAgent]:
        rows = await self.store.execute_fn(
            lambda conn: conn.execute(
                f"SELECT a.name, {_LOAD.strip().removeprefix('SELECT ')} ORDER BY a.name"
            ).fetchall()
        )
        return [self._agent(row) for row in rows]

    def _agent(self, row: Any) -> StoredAgent:
        name, active, content, module, canary_hash, canary_content, canary_module, share = row
        canary = None
        if canary_hash is not None and canary_content is not None and share is not None:
            canary = StoredCanary(
                content_hash=str(canary_hash),
                content=bytes(canary_content),
                module=None if canary_module is None else bytes(canary_module),
                traffic_percentage=float(share),
            )
        return StoredAgent(
            name=str(name),
            source=self.source_for(str(name)),
            content=bytes(content),
            module=None if module is None else bytes(module),
            content_hash=str(active),
            canary=canary,
        )


def _conforms() -> None:  # pragma: no cover - checked by mypy, never run
    from pathlib import Path

    from caxton.store.postgres import PostgresStore

    files: Deployments = FileDeployments(Path())
    postgres: Deployments = PostgresDeployments(PostgresStore("postgresql://"))
    del files, postgres
