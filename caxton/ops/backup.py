"""``caxton backup create``: one consistent archive of everything a server needs to come back.

Online (the server runs; ``POST /api/v1/admin/backup``): the store checkpoints and copies the
DuckDB file in one turn of its writer, so the copy is consistent without stopping anything;
the HNSW index files (rebuildable, so optional), ``data_dir/deployed``, agents_dir and the
configuration file are copied next to it, then everything is packed with a manifest of
SHA-256 sums (:mod:`caxton.ops.archive`).

Offline (the server is stopped): the same archive from the files, while this process holds
the data_dir lock so no server starts in the middle.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import trio

from caxton.ops import archive
from caxton.ops.errors import BackupExists, BackupFailed, BackupPathRefused

if TYPE_CHECKING:
    from collections.abc import Callable

    from caxton.config import CaxtonConfig
    from caxton.memory import MemoryService
    from caxton.store import Store

BACKUPS_DIR = "backups"
#: The only file name ending a backup is written under.
ARCHIVE_SUFFIX = ".tar.gz"
DEPLOYED_DIR = "deployed"
#: The HNSW index files next to the database (rebuildable from it, so optional).
HNSW_SUFFIXES = (".hnsw", ".hnsw.mirror", ".hnsw.json")
T = TypeVar("T")


@attrs.frozen(kw_only=True)
class BackupSources:
    """Where the parts of a backup live (all absolute)."""

    data_dir: Path
    database_path: Path
    agents_dir: Path
    config_file: Path | None

    @classmethod
    def from_config(cls, config: CaxtonConfig, config_file: Path | None) -> BackupSources:
        return cls(
            data_dir=config.data_dir,
            database_path=config.database_path,
            agents_dir=config.agents_dir,
            config_file=config_file.absolute() if config_file is not None else None,
        )

    @property
    def deployed_dir(self) -> Path:
        return self.data_dir / DEPLOYED_DIR

    def as_json(self) -> dict[str, str | None]:
        return {
            "data_dir": str(self.data_dir),
            "database": str(self.database_path),
            "agents_dir": str(self.agents_dir),
            "config_file": str(self.config_file) if self.config_file else None,
        }


@attrs.frozen(kw_only=True)
class BackupReport:
    """What ``backup create`` wrote."""

    path: Path
    size_bytes: int
    sha256: str
    manifest: archive.Manifest
    seconds: float
    source: str

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for entry in self.manifest.files:
            counts[entry.area] = counts.get(entry.area, 0) + 1
        return {
            "path": str(self.path),
            "size_bytes": self.size_bytes,
            "sha256": self.sha256,
            "created_at": self.manifest.created_at,
            "version": self.manifest.version,
            "files": len(self.manifest.files),
            "files_by_area": counts,
            "content_bytes": self.manifest.total_bytes,
            "seconds": round(self.seconds, 3),
            "source": self.source,
        }


def archive_name(now: dt.datetime) -> str:
    """``caxton-backup-YYYYmmdd-HHMMSS.tar.gz`` (UTC), the seed script's naming."""
    return f"caxton-backup-{now.astimezone(dt.UTC):%Y%m%d-%H%M%S}.tar.gz"


def default_destination(data_dir: Path, now: dt.datetime) -> Path:
    return data_dir / BACKUPS_DIR / archive_name(now)


def check_destination(requested: Path | None, backups_dir: Path, now: dt.datetime) -> Path:
    """Where a backup may be written: never over a file, never through a symbolic link.

    ``None`` is a new name under ``backups_dir``; a bare file name goes under ``backups_dir``
    too; an absolute path must name a new ``*.tar.gz`` file in an existing directory reached
    without symbolic links (issue #13: the admin backup overwrote a file of the caller's
    choosing). :func:`caxton.ops.archive.write_archive` re-checks at the last moment: it links
    the finished archive into place, which fails if anything appeared there meanwhile.

    Raises:
        BackupPathRefused: a relative path with folders, a name not ending in .tar.gz, a missing
            folder, or a symbolic link on the way (400).
        BackupExists: the file exists (409).
    """
    if requested is None:
        return backups_dir / archive_name(now)
    if not requested.is_absolute():
        if len(requested.parts) != 1 or requested.name in (".", ".."):
            raise BackupPathRefused(
                f"backup path {str(requested)!r} must be absolute, or a bare file name that is "
                f"written under {backups_dir}",
                details={"path": str(requested)},
            )
        requested = backups_dir / requested
    if not requested.name.endswith(ARCHIVE_SUFFIX) or requested.name == ARCHIVE_SUFFIX:
        raise BackupPathRefused(
            f"backup path {requested} must name a {ARCHIVE_SUFFIX} file, e.g. "
            f"{requested.parent / archive_name(now)}",
            details={"path": str(requested)},
        )
    parent = Path(os.path.normpath(requested.parent))
    inside = parent == backups_dir or backups_dir in parent.parents
    if not inside and not parent.is_dir():
        raise BackupPathRefused(
            f"the folder {parent} does not exist; create it first, or leave out the path to "
            f"write under {backups_dir}",
            details={"path": str(requested)},
        )
    if _through_link(parent, backups_dir if inside else None) or os.path.islink(requested):
        raise BackupPathRefused(
            f"backup path {requested} goes through a symbolic link; give the real path",
            details={"path": str(requested)},
        )
    if os.path.lexists(requested):
        raise BackupExists(
            f"{requested} already exists and a backup never replaces a file; choose a new "
            "name, or move the old file away",
            details={"path": str(requested)},
        )
    return parent / requested.name


def _through_link(folder: Path, trusted: Path | None) -> bool:
    """Whether a folder on the way to ``folder`` is a symbolic link.

    Below ``trusted`` (the backups folder, whose own location the operator chose) each
    existing component is checked; without it, the whole real path must equal ``folder``.
    """
    if trusted is None:
        return os.path.realpath(folder) != str(folder)
    step = folder
    while step != trusted and trusted in step.parents:
        if os.path.islink(step):
            return True
        step = step.parent
    return os.path.islink(trusted)


# --------------------------------------------------------------------------------- staging


def _copy_tree(source: Path, target: Path, *, skip: Path | None = None) -> None:
    """Copy the regular files under ``source`` (hidden names and ``skip`` left out)."""
    if not source.is_dir():
        return
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if skip is not None and (path == skip or skip in path.parents):
            continue
        if path.is_file() and not path.is_symlink():
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, destination)


def nested_data_dir(sources: BackupSources) -> Path | None:
    """data_dir when it lies inside agents_dir (``agents_dir: "."``), else None."""
    if sources.agents_dir in sources.data_dir.parents:
        return sources.data_dir
    return None


def stage_side_files(sources: BackupSources, staging: Path) -> None:
    """Copy everything but the database file itself into ``staging`` (blocking)."""
    database = staging / "database"
    database.mkdir(parents=True, exist_ok=True)
    for suffix in HNSW_SUFFIXES:
        side = sources.database_path.with_name(sources.database_path.name + suffix)
        try:
            shutil.copy2(side, database / side.name)
        except FileNotFoundError:
            continue
    _copy_tree(sources.deployed_dir, staging / "deployed")
    # agents_dir may contain data_dir (agents_dir: "."): never copy the data into the backup.
    _copy_tree(sources.agents_dir, staging / "agents", skip=nested_data_dir(sources))
    if sources.config_file is not None and sources.config_file.is_file():
        config = staging / "config"
        config.mkdir(parents=True, exist_ok=True)
        shutil.copy2(sources.config_file, config / sources.config_file.name)


def _copy_database_offline(sources: BackupSources, staging: Path) -> None:
    database = staging / "database"
    database.mkdir(parents=True, exist_ok=True)
    path = sources.database_path
    if not path.is_file():
        raise BackupFailed(
            f"the database {path} does not exist; has the server ever started with this "
            "configuration?",
            details={"database": str(path)},
        )
    for source in (path, path.with_name(path.name + ".wal")):
        if source.is_file():
            shutil.copy2(source, database / source.name)


def pack(
    staging: Path, sources: BackupSources, destination: Path, now: dt.datetime
) -> archive.Manifest:
    """Describe ``staging`` in a manifest and write the archive (blocking)."""
    entries = archive.describe_tree(staging)
    manifest = archive.new_manifest(entries, sources=sources.as_json(), now=now)
    archive.write_archive(staging, manifest, destination)
    return manifest


def _staging_dir(destination: Path) -> Path:
    destination.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{destination.name}.", dir=destination.parent))


def _report(
    destination: Path, manifest: archive.Manifest, started: float, now: float, source: str
) -> BackupReport:
    with destination.open("rb") as handle:
        digest, size = archive.sha256_stream(handle)
    return BackupReport(
        path=destination,
        size_bytes=size,
        sha256=digest,
        manifest=manifest,
        seconds=now - started,
        source=source,
    )


def create_offline(sources: BackupSources, destination: Path, now: dt.datetime) -> BackupReport:
    """Back up the files of a stopped server (the caller holds the data_dir lock).

    Raises:
        BackupFailed: the database does not exist, or a file cannot be read or written.
    """
    started = time.monotonic()
    destination = check_destination(destination, sources.data_dir / BACKUPS_DIR, now)
    staging = _staging_dir(destination)
    try:
        _copy_database_offline(sources, staging)
        stage_side_files(sources, staging)
        manifest = pack(staging, sources, destination, now)
    except OSError as exc:
        raise BackupFailed(f"the backup to {destination} failed: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _report(destination, manifest, started, time.monotonic(), "files")


class BackupService:
    """Online backups of a running server, one at a time.

    Args:
        sources: where the data lives.
        store: the running store (copies the database in its writer's turn).
        memory: the memory service, asked to save its HNSW index first (optional).
    """

    def __init__(
        self, sources: BackupSources, store: Store, memory: MemoryService | None = None
    ) -> None:
        self.sources = sources
        self.store = store
        self.memory = memory
        self._lock = trio.Lock()
        self._limiter = trio.CapacityLimiter(1)

    async def create(self, destination: Path | None = None) -> BackupReport:
        """Write a backup archive to ``destination`` (default ``data_dir/backups/<name>``).

        Raises:
            BackupPathRefused: ``destination`` is not a path a backup may be written to.
            BackupExists: ``destination`` exists (a backup never replaces a file).
            BackupFailed: a file could not be copied or written (disk full, permissions).
            StoreClosed: the store stopped meanwhile.

        Cancellation:
            Safe to cancel between steps; the staging folder is removed either way, and the
            archive appears only once complete (it is renamed into place).

        Resource handling:
            One backup runs at a time; writes to the database wait while its file is copied.
        """
        now = dt.datetime.now(dt.UTC)
        target = await self._run(
            check_destination, destination, self.sources.data_dir / BACKUPS_DIR, now
        )
        started = trio.current_time()
        async with self._lock:
            staging = await self._run(_staging_dir, target)
            try:
                if self.memory is not None:
                    await self.memory.save_graph()
                try:
                    await self._run(lambda: (staging / "database").mkdir())
                    await self.store.copy_database(staging / "database")
                    await self._run(stage_side_files, self.sources, staging)
                    manifest = await self._run(pack, staging, self.sources, target, now)
                except OSError as exc:
                    raise BackupFailed(
                        f"the backup to {target} failed: {exc}; check free space and "
                        "permissions there",
                        details={"path": str(target)},
                    ) from None
            finally:
                with trio.CancelScope(shield=True):
                    await self._run(shutil.rmtree, staging, True)
            return await self._run(
                _report, target, manifest, started, trio.current_time(), "server"
            )

    async def _run(self, fn: Callable[..., T], *args: object) -> T:
        return await trio.to_thread.run_sync(fn, *args, limiter=self._limiter)
