"""Errors of the PostgreSQL store (issue #15).

They mirror :mod:`caxton.store.errors` (the same bases and, where the meaning is the same, the
same codes), so a caller that handles one backend's errors by their base class handles both.
Every start error names the server (its URL without the password), the problem and the fix.
"""

from __future__ import annotations

from caxton.errors import ServiceUnavailable, StartupError


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
