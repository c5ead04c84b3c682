"""The PostgreSQL store (issue #15, a preview not wired into the server yet): a psycopg
connection pool used from trio, pgvector, versioned migrations under an advisory lock."""

from caxton.pgstore.errors import (
    PostgresAuthFailed,
    PostgresDatabaseMissing,
    PostgresMigrationError,
    PostgresStartError,
    PostgresStoreClosed,
    PostgresUnreachable,
    PostgresVersionUnsupported,
    StorageUnavailable,
    VectorExtensionMissing,
)
from caxton.pgstore.migrations import MigrationStep
from caxton.pgstore.store import (
    Connection,
    PostgresStore,
    PostgresStoreStatistics,
    open_postgres_store,
    redact,
)

__all__ = [
    "Connection",
    "MigrationStep",
    "PostgresAuthFailed",
    "PostgresDatabaseMissing",
    "PostgresMigrationError",
    "PostgresStartError",
    "PostgresStore",
    "PostgresStoreClosed",
    "PostgresStoreStatistics",
    "PostgresUnreachable",
    "PostgresVersionUnsupported",
    "StorageUnavailable",
    "VectorExtensionMissing",
    "open_postgres_store",
    "redact",
]
