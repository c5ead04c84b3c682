"""Errors of the operations commands (backup, restore, safe mode, storage verify)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton.errors import CaxtonError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path


class BackupFailed(CaxtonError):
    """A backup could not be written."""

    code = "BACKUP_FAILED"
    http_status = 500


class BackupPathRefused(CaxtonError):
    """A backup destination the server will not write: wrong name, missing folder, a link."""

    code = "BACKUP_PATH_REFUSED"
    http_status = 400


class BackupExists(CaxtonError):
    """A backup never replaces a file: the destination already exists."""

    code = "BACKUP_EXISTS"
    http_status = 409


class BackupNotApplicable(CaxtonError):
    """``caxton backup`` copies the embedded store; PostgreSQL is backed up with its own tools."""

    code = "BACKUP_NOT_APPLICABLE"
    http_status = 409


class ArchiveInvalid(CaxtonError):
    """A backup archive is damaged, incomplete or not a Caxton backup; nothing was changed."""

    code = "BACKUP_INVALID"
    http_status = 422

    def __init__(self, path: Path, problems: Sequence[str]) -> None:
        self.path = path
        self.problems = tuple(problems)
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"{path} is not a sound Caxton backup, so nothing was changed:\n{lines}",
            details={"archive": str(path), "problems": list(problems)},
        )


class RestoreRefused(CaxtonError):
    """A restore cannot run now (the server is running, a path is unusable)."""

    code = "RESTORE_REFUSED"
    http_status = 409


class SafeModeActive(CaxtonError):
    """The server is in safe mode: it refuses every call that would change its state."""

    code = "SAFE_MODE"
    http_status = 503


class MigrationRefused(CaxtonError):
    """``caxton storage migrate`` cannot start: no such data_dir, or a server runs on it."""

    code = "MIGRATION_REFUSED"
    http_status = 409
