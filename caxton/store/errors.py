"""Errors of the store component (DESIGN §1: the store is opened first and closed last)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton.errors import DataDirLockedError, ServiceUnavailable, StartupError

if TYPE_CHECKING:
    from pathlib import Path


class StoreOpenError(StartupError):
    """The database file cannot be opened (not a DuckDB file, unreadable, wrong version)."""

    code = "STORE_OPEN_FAILED"

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(
            f"cannot open the database {str(path)!r}: {reason}. Check that the file is a Caxton "
            "DuckDB database and that the server can read and write it, or restore it from a "
            "backup (caxton backup restore FILE).",
            details={"path": str(path), "reason": reason},
        )


class StoreLockedError(DataDirLockedError):
    """Another process holds the database file."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path = path
        super().__init__(
            f"the database {str(path)!r} is in use by another process ({reason}). Stop the other "
            "Caxton server (or `caxton` command) using this data_dir, or point server.data_dir "
            "at another directory.",
            details={"path": str(path), "reason": reason},
        )


class MigrationError(StartupError):
    """The schema migrations cannot be applied."""

    code = "STORE_MIGRATION_FAILED"

    def __init__(self, path: Path, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(
            f"cannot migrate the database {str(path)!r}: {problem}",
            details={"path": str(path), "problem": problem},
        )


class StoreClosed(ServiceUnavailable):
    """The store is not running (not started yet, or shut down)."""

    code = "STORE_CLOSED"

    def __init__(self, path: Path) -> None:
        self.path = path
        super().__init__(
            f"the database {str(path)!r} is not open: the server is starting or shutting down. "
            "Retry once GET /ready answers 200.",
            details={"path": str(path)},
        )
