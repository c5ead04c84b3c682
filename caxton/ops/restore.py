"""``caxton backup restore F``: put a backup back while the server is stopped.

Order of work, so that a refused or failed restore changes nothing:

1. take the data_dir lock (refused while a server runs there; ``--wait`` waits for it);
2. verify the whole archive against its manifest (a corrupted archive is refused);
3. extract it into ``data_dir/.restore-<stamp>/`` and open the database copy read-only;
4. move what the backup replaces into ``data_dir/before-restore-<stamp>/`` (the database
   and its WAL/HNSW files, ``deployed/``, and agents_dir's files when they are replaced);
5. move the extracted files into place.

agents_dir is restored when it is empty or missing; when it holds other files they are kept
unless ``replace_agents`` (``--agents-dir``) is given. The configuration file in the archive is
never written over the running one (extract ``config/`` from the archive to compare). The safe
mode flag, the lock, ``state.json``, the model folder, logs and earlier backups stay as they
are.
"""

from __future__ import annotations

import datetime as dt
import enum
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from caxton.datadir import hold_offline
from caxton.ops import archive
from caxton.ops.backup import DEPLOYED_DIR, HNSW_SUFFIXES
from caxton.ops.errors import ArchiveInvalid, RestoreRefused

if TYPE_CHECKING:
    from collections.abc import Sequence

ASIDE_PREFIX = "before-restore-"
_SIDE_SUFFIXES = (".wal", *HNSW_SUFFIXES)


class AgentsAction(enum.Enum):
    RESTORE = "restored"
    UNCHANGED = "unchanged"
    KEPT = "kept"
    NONE = "none"


@attrs.frozen(kw_only=True)
class Move:
    """Move ``source`` (inside the extracted archive) to ``destination``."""

    source: str
    destination: Path


@attrs.frozen(kw_only=True)
class RestorePlan:
    """What a restore moves aside and what it puts in place (pure; see :func:`plan`)."""

    aside: tuple[Path, ...]
    moves: tuple[Move, ...]
    agents: AgentsAction


def database_files(manifest: archive.Manifest) -> list[archive.FileEntry]:
    """The database files of a backup (a sound one has exactly one)."""
    return [
        f
        for f in manifest.in_area("database")
        if f.path.count("/") == 1 and not f.path.endswith(_SIDE_SUFFIXES)
    ]


def _database_entry(manifest: archive.Manifest) -> archive.FileEntry:
    (main,) = database_files(manifest)
    return main


def plan(
    manifest: archive.Manifest,
    *,
    data_dir: Path,
    database_path: Path,
    agents_dir: Path,
    agents_present: dict[str, str] | None,
    replace_agents: bool,
) -> RestorePlan:
    """Decide the moves of a restore.

    Args:
        manifest: the verified archive's manifest.
        data_dir, database_path, agents_dir: where the current configuration keeps things.
        agents_present: relative path -> SHA-256 of the files now in agents_dir (None or
            empty when it is missing or empty).
        replace_agents: replace agents_dir's files when they differ from the backup's.
    """
    main = _database_entry(manifest)
    base = main.path.split("/", 1)[1]
    moves = [Move(source=main.path, destination=database_path)]
    for entry in manifest.in_area("database"):
        name = entry.path.split("/", 1)[1]
        for suffix in _SIDE_SUFFIXES:
            if name == base + suffix:
                moves.append(
                    Move(
                        source=entry.path,
                        destination=database_path.with_name(database_path.name + suffix),
                    )
                )
    aside = [
        database_path,
        *(database_path.with_name(database_path.name + s) for s in _SIDE_SUFFIXES),
    ]
    deployed = data_dir / DEPLOYED_DIR
    aside.append(deployed)
    moves.extend(
        Move(source=e.path, destination=deployed / e.path.split("/", 1)[1])
        for e in manifest.in_area("deployed")
    )
    backed_up = {e.path.split("/", 1)[1]: e.sha256 for e in manifest.in_area("agents")}
    if not backed_up:
        action = AgentsAction.NONE
    elif not agents_present:
        action = AgentsAction.RESTORE
    elif agents_present == backed_up:
        action = AgentsAction.UNCHANGED
    elif replace_agents:
        action = AgentsAction.RESTORE
        aside.extend(
            agents_dir / name for name in sorted({p.split("/")[0] for p in agents_present})
        )
    else:
        action = AgentsAction.KEPT
    if action is AgentsAction.RESTORE:
        moves.extend(
            Move(source=e.path, destination=agents_dir / e.path.split("/", 1)[1])
            for e in manifest.in_area("agents")
        )
    return RestorePlan(aside=tuple(aside), moves=tuple(moves), agents=action)


@attrs.frozen(kw_only=True)
class RestoreReport:
    archive_path: Path
    manifest: archive.Manifest
    aside_dir: Path | None
    moved_aside: tuple[str, ...]
    restored: tuple[str, ...]
    agents: AgentsAction
    agents_dir: Path

    def to_json(self) -> dict[str, Any]:
        return {
            "archive": str(self.archive_path),
            "backup_created_at": self.manifest.created_at,
            "backup_version": self.manifest.version,
            "previous_data": str(self.aside_dir) if self.aside_dir else None,
            "moved_aside": list(self.moved_aside),
            "restored": list(self.restored),
            "agents_dir": str(self.agents_dir),
            "agents_dir_action": self.agents.value,
        }


# --------------------------------------------------------------------------------- file work


def _agents_present(agents_dir: Path, data_dir: Path) -> dict[str, str]:
    if not agents_dir.is_dir():
        return {}
    present = {}
    for path in sorted(agents_dir.rglob("*")):
        relative = path.relative_to(agents_dir)
        if any(part.startswith(".") for part in relative.parts):
            continue
        nested = agents_dir in data_dir.parents
        if nested and (path == data_dir or data_dir in path.parents):
            continue
        if not path.is_file():
            continue
        with path.open("rb") as handle:
            present[relative.as_posix()], _ = archive.sha256_stream(handle)
    return present


def _check_database_copy(path: Path, archive_path: Path) -> None:
    from caxton.ops.verify import open_read_only

    try:
        conn = open_read_only(path)
    except Exception as exc:
        raise ArchiveInvalid(
            archive_path, [f"the database in the backup cannot be opened: {exc}"]
        ) from None
    try:
        conn.execute("SELECT count(*) FROM duckdb_tables()").fetchall()
    finally:
        conn.close()


def _move(source: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(source, destination)
    except OSError:
        shutil.move(str(source), str(destination))


def _aside_target(aside_dir: Path, path: Path, data_dir: Path, agents_dir: Path) -> Path:
    if path.parent == agents_dir or agents_dir in path.parents:
        return aside_dir / "agents" / path.relative_to(agents_dir)
    if data_dir in path.parents:
        return aside_dir / path.relative_to(data_dir)
    return aside_dir / "database" / path.name


def restore(
    path: Path,
    *,
    data_dir: Path,
    database_path: Path,
    agents_dir: Path,
    replace_agents: bool = False,
    wait_s: float = 0.0,
    now: dt.datetime | None = None,
) -> RestoreReport:
    """Restore the backup at ``path`` (blocking; see the module docstring for the order).

    Raises:
        DataDirLockedError: a server runs on ``data_dir``.
        ArchiveInvalid: the archive is damaged or incomplete (nothing changed).
        RestoreRefused: a file could not be moved (what was moved is put back).
    """
    stamp = f"{(now or dt.datetime.now(dt.UTC)).astimezone(dt.UTC):%Y%m%d-%H%M%S}"
    with hold_offline(data_dir, wait_s=wait_s):
        manifest = archive.verify_archive(path)
        found = len(database_files(manifest))
        if found != 1:
            raise ArchiveInvalid(path, [f"expected one database file in database/, found {found}"])
        decided = plan(
            manifest,
            data_dir=data_dir,
            database_path=database_path,
            agents_dir=agents_dir,
            agents_present=_agents_present(agents_dir, data_dir),
            replace_agents=replace_agents,
        )
        staging = data_dir / f".restore-{stamp}"
        aside_dir = data_dir / f"{ASIDE_PREFIX}{stamp}"
        if aside_dir.exists():
            raise RestoreRefused(f"{aside_dir} already exists; wait a second and try again")
        try:
            archive.extract_archive(path, manifest, staging)
            _check_database_copy(staging / _database_entry(manifest).path, path)
            moved_aside = _apply(decided, staging, aside_dir, data_dir, agents_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return RestoreReport(
        archive_path=path,
        manifest=manifest,
        aside_dir=aside_dir if moved_aside else None,
        moved_aside=tuple(str(p) for p in moved_aside),
        restored=tuple(str(m.destination) for m in decided.moves),
        agents=decided.agents,
        agents_dir=agents_dir,
    )


def _apply(
    decided: RestorePlan, staging: Path, aside_dir: Path, data_dir: Path, agents_dir: Path
) -> list[Path]:
    done: list[tuple[Path, Path]] = []
    try:
        for current in decided.aside:
            if current.exists() or current.is_symlink():
                target = _aside_target(aside_dir, current, data_dir, agents_dir)
                _move(current, target)
                done.append((target, current))
        placed: list[Path] = []
        try:
            for move in decided.moves:
                _move(staging / move.source, move.destination)
                placed.append(move.destination)
        except OSError:
            _remove(placed)
            raise
    except OSError as exc:
        _undo(done)
        raise RestoreRefused(
            f"the restore could not move files ({exc}); the previous files were put back"
        ) from None
    if os.geteuid() == 0:
        _match_owner([m.destination for m in decided.moves], data_dir)
    return [original for _, original in done]


def _match_owner(paths: Sequence[Path], data_dir: Path) -> None:
    """Run as root, give restored files (and folders made for them) data_dir's owner, so the
    server's own user can write them."""
    owner = data_dir.stat()
    seen: set[Path] = set()
    for path in paths:
        os.chown(path, owner.st_uid, owner.st_gid)
        for parent in path.parents:
            if parent in seen or data_dir not in parent.parents:
                break
            seen.add(parent)
            os.chown(parent, owner.st_uid, owner.st_gid)


def _remove(paths: Sequence[Path]) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _undo(done: Sequence[tuple[Path, Path]]) -> None:
    for moved, original in reversed(done):
        try:
            _move(moved, original)
        except OSError:
            continue
