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


# -- PostgreSQL (issue #15) ----------------------------------------------------------------------
# The same bases and, where the meaning is the same, the same codes as the DuckDB store's, so a
# caller that handles one backend's errors by their base class handles both. Every start error
# names the server (its URL without the password), the problem and the fix.


class PostgresStartError(StartupError):
    """The store cannot start on this PostgreSQL; the subclass says why."""

    code = "POSTGRES_START_FAILED"

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        super().__init__(
            f"cannot use the PostgreSQL database {where}: {problem}. {fix}",
            details={"database": where, "problem": problem, "fix": fix},
        )


class PostgresUnreachable(PostgresStartError):
    """No PostgreSQL answered at the URL's host and port within the connect timeout."""

    code = "POSTGRES_UNREACHABLE"


class PostgresAuthFailed(PostgresStartError):
    """The server refused the URL's user or password."""

    code = "POSTGRES_AUTH_FAILED"


class PostgresDatabaseMissing(PostgresStartError):
    """The server has no database of the URL's name."""

    code = "POSTGRES_DATABASE_MISSING"


class PostgresVersionUnsupported(PostgresStartError):
    """The server (or its pgvector) is older than the store needs."""

    code = "POSTGRES_VERSION_UNSUPPORTED"


class VectorExtensionMissing(PostgresStartError):
    """The database has no ``vector`` extension and this user cannot create it."""

    code = "POSTGRES_VECTOR_MISSING"


class PostgresMigrationError(PostgresStartError):
    """The schema migrations cannot be applied (the same code as the DuckDB store's)."""

    code = "STORE_MIGRATION_FAILED"


class StorageUnavailable(ServiceUnavailable):
    """PostgreSQL stopped answering while the store runs (server down, connection lost, no
    connection free within the timeout, statement timeout): the call may be retried."""

    code = "STORAGE_UNAVAILABLE"

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(
            f"the PostgreSQL database {where} is unavailable: {reason}. Retry shortly; if it "
            "lasts, check that PostgreSQL runs and that GET /ready answers 200.",
            details={"database": where, "reason": reason},
        )


class PostgresStoreClosed(ServiceUnavailable):
    """The store is not running (not started yet, or shut down)."""

    code = "STORE_CLOSED"

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"the PostgreSQL store {where} is not open: the server is starting or shutting "
            "down. Retry once GET /ready answers 200.",
            details={"database": where},
        )


# -- Qdrant (issue #16) --------------------------------------------------------------------------
# Memory's own store when memory.backend is qdrant: its start errors name the server (or the
# local folder), and a memory call while Qdrant does not answer is a 503 of its own code, so that
# a client tells a memory outage from the main store's.


class QdrantStartError(StartupError):
    """The memory store cannot start on this Qdrant; the subclass says why."""

    code = "QDRANT_START_FAILED"

    def __init__(self, where: str, problem: str, fix: str) -> None:
        self.where = where
        self.problem = problem
        self.fix = fix
        super().__init__(
            f"cannot use the Qdrant memory store {where}: {problem}. {fix}",
            details={"qdrant": where, "problem": problem, "fix": fix},
        )


class QdrantUnreachable(QdrantStartError):
    """No Qdrant answered at the URL within ``qdrant_config.timeout``."""

    code = "QDRANT_UNREACHABLE"


class QdrantVectorSizeMismatch(QdrantStartError):
    """The collection exists with vectors of another size than ``qdrant_config.vector_size``."""

    code = "QDRANT_VECTOR_SIZE_MISMATCH"

    def __init__(self, where: str, collection: str, existing: int, configured: int) -> None:
        self.collection = collection
        self.existing = existing
        self.configured = configured
        super().__init__(
            where,
            f"the collection {collection!r} holds vectors of size {existing}, but "
            f"memory.qdrant_config.vector_size is {configured}",
            f"Set vector_size to {existing} with a model of that size, or name a new collection "
            "in memory.qdrant_config.collection and move the memory there (caxton memory export, "
            "then caxton memory import).",
        )
        self.details.update(collection=collection, existing=existing, configured=configured)


class QdrantPathLocked(QdrantStartError):
    """Another process holds the local-mode folder (qdrant-client's local mode is one process)."""

    code = "QDRANT_PATH_LOCKED"


class MemoryUnavailable(ServiceUnavailable):
    """Qdrant stopped answering while the memory store runs (server down, connection lost, a
    call over the timeout): memory calls may be retried; agents that do not use memory are not
    affected."""

    code = "MEMORY_UNAVAILABLE"

    def __init__(self, where: str, reason: str) -> None:
        self.where = where
        self.reason = reason
        super().__init__(
            f"the Qdrant memory store {where} is unavailable: {reason}. Retry shortly; if it "
            "lasts, check that Qdrant runs and that GET /ready answers 200.",
            details={"qdrant": where, "reason": reason},
        )


class QdrantStoreClosed(ServiceUnavailable):
    """The memory store is not running (not started yet, or shut down)."""

    code = "STORE_CLOSED"

    def __init__(self, where: str) -> None:
        self.where = where
        super().__init__(
            f"the Qdrant memory store {where} is not open: the server is starting or shutting "
            "down. Retry once GET /ready answers 200.",
            details={"qdrant": where},
        )
