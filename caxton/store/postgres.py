"""The PostgreSQL store component: a psycopg connection pool used from trio (issue #15).

The API mirrors :class:`caxton.store.Store` (``run``, ``execute_fn``, ``execute_write_fn``,
``statistics``), so that one Protocol can later cover both backends:

* **calls** — ``fn(conn)`` runs in a worker thread with a connection of the pool, inside one
  transaction (read-only for :meth:`~PostgresStore.execute_fn`). psycopg is synchronous (its
  asyncio flavour does not run under trio), so calls enter trio through
  ``trio.to_thread.run_sync`` under a ``CapacityLimiter`` this component owns, as large as the
  pool: a call never waits in a thread for a connection. PostgreSQL takes concurrent writers,
  so writes are not queued behind one writer as DuckDB's are.
* **failures** — a lost connection, a server that is down, no free connection within the
  connect timeout or a statement over the statement timeout raise
  :class:`~caxton.store.errors.StorageUnavailable` (503, retryable). A write's connection is
  checked before the write starts (a round trip); a read, or a write that may run twice
  (:meth:`~PostgresStore.idempotent_write`), is not, and runs again on another connection if
  its own turns out dead: the store recovers by itself once PostgreSQL is back, and an idle
  server's periodic calls cost one round trip per statement.
  While the server does not answer, calls fail at once but for one a second
  (``DOWN_PROBE_INTERVAL_S``) that tries it again: callers get their 503 quickly instead of
  each waiting the connect timeout. A call the pool has no connection for within
  ``POOL_WAIT_S`` connects on its own: a server that refuses is known within a second, and
  one that is back serves calls while the pool still waits out its reconnect backoff.
* **lifecycle** — ``run()`` connects (within the connect timeout), checks the server version
  and the ``vector`` extension (creating it if it may), applies pending migrations under a
  ``pg_advisory_lock`` so instances starting together on one database migrate it once, opens
  the pool and reports started with the store as the handle. Cancelling it waits for running
  calls and closes the pool.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Final, Generic, NoReturn, TypeVar

import attrs
import psycopg
import psycopg.conninfo
import psycopg.errors
import trio
from psycopg_pool import ConnectionPool, PoolTimeout

from caxton.components import running
from caxton.store.calls import DOWN_PROBE_INTERVAL_S as DOWN_PROBE_INTERVAL_S
from caxton.store.calls import DownProbe, close_within, holding_every_token
from caxton.store.errors import (
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
from caxton.store.migrations import Migration, plan

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

LOGGER = logging.getLogger("caxton.store.postgres")

#: How long a call waits for the pool to hand it a connection before it connects on its own.
#: Calls never wait for a busy connection (the limiter is as large as the pool), so a longer
#: wait means the pool cannot connect: either PostgreSQL is down, and the call's own connect
#: says so at once instead of after the connect timeout, or the pool is still backing off
#: after an outage, and the call's own connection serves it.
POOL_WAIT_S = 1.0
#: The wait instead while the pool lags behind a server that answers again: calls connect on
#: their own at once until the pool hands out connections again.
LAGGING_POOL_WAIT_S = 0.05


#: The migrations table on PostgreSQL (the DuckDB store's, in PostgreSQL's types).
SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    feature TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (feature, version)
)
"""

#: ``pg_advisory_lock`` key held while migrating, so that instances starting together on one
#: database migrate it once ("caxton" in ASCII).
MIGRATION_LOCK_KEY = 0x636178746F6E

Connection = psycopg.Connection[Any]
T = TypeVar("T")

#: PostgreSQL 14 or newer; pgvector 0.8 or newer (HNSW indexes, and the iterative scans that
#: fill a filtered memory search).
MIN_SERVER_VERSION = 140000
MIN_VECTOR_VERSION = (0, 8, 0)


@attrs.frozen(kw_only=True)
class PostgresStoreStatistics:
    """A snapshot of the store's counters (the same role as ``StoreStatistics``)."""

    database: str
    open: bool
    server_version: str | None
    vector_version: str | None
    pool_size: int
    connections: int
    connections_idle: int
    writes_total: int
    write_errors_total: int
    reads_total: int
    unavailable_total: int
    schema_versions: dict[str, int]


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs: ``postgresql://user@host:port/db``."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "(an unparsable storage.postgres.url)"
    user = parts.get("user", "")
    host = parts.get("host", "localhost")
    port = parts.get("port", "5432")
    database = parts.get("dbname", user)
    return f"postgresql://{user}{'@' if user else ''}{host}:{port}/{database}"


class PostgresStore:
    """The PostgreSQL store of record (a :class:`caxton.store.backend.Backend`).

    Args:
        url: a libpq URL or conninfo string (``postgresql://user:password@host:port/db``).
        migrations: every feature's PostgreSQL migrations.
        pool_size: the most connections (and so calls) at once.
        connect_timeout_s: the bound on connecting, at start and for each new connection, and
            on waiting for a free connection.
        statement_timeout_s: PostgreSQL cancels a statement that runs longer.
        migration_lock_timeout_s: the bound on waiting for another instance's migrations.
        close_timeout_s: the bound on waiting for running calls at shutdown.
    """

    dialect: Final = "postgres"
    #: several instances may use one database
    shared: Final = True

    def __init__(
        self,
        url: str,
        *,
        migrations: Sequence[Migration] = (),
        pool_size: int = 4,
        connect_timeout_s: float = 5.0,
        statement_timeout_s: float = 30.0,
        migration_lock_timeout_s: float = 60.0,
        close_timeout_s: float = 10.0,
    ) -> None:
        if pool_size < 1:
            raise ValueError(f"pool_size must be at least 1, got {pool_size}")
        self.url = url
        self.where = redact(url)
        self.migrations = tuple(migrations)
        self.pool_size = pool_size
        self.connect_timeout_s = connect_timeout_s
        self.statement_timeout_s = statement_timeout_s
        self.migration_lock_timeout_s = migration_lock_timeout_s
        self.close_timeout_s = close_timeout_s
        self._limiter = trio.CapacityLimiter(pool_size)
        # while PostgreSQL does not answer, calls fail at once (503 STORAGE_UNAVAILABLE) but
        # for one probe a second
        self._probe = DownProbe(
            server="PostgreSQL",
            where=self.where,
            logger=LOGGER,
            unavailable=StorageUnavailable,
            down_reason=_down_reason,
        )
        # the pool had no connection when a connection of the call's own did (after an outage)
        self._pool_lagging = False
        self._pool: ConnectionPool[Connection] | None = None
        self._open = False
        self._ran = False
        self._server_version: str | None = None
        self._vector_version: str | None = None
        self._schema_versions: dict[str, int] = {}
        self._writes_total = 0
        self._write_errors_total = 0
        self._reads_total = 0
        self._unavailable_total = 0

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[PostgresStore] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Check the server, migrate the database and open the pool, then serve until
        cancelled.

        Reports started (with this store as the handle) once the schema is current.

        Raises:
            PostgresUnreachable: nothing answered within ``connect_timeout_s``.
            PostgresAuthFailed: the server refused the user or password.
            PostgresDatabaseMissing: the database does not exist.
            PostgresVersionUnsupported: PostgreSQL older than 14 or pgvector older than 0.5.
            VectorExtensionMissing: no ``vector`` extension, and this user cannot create it.
            PostgresMigrationError: a migration failed, or the database is newer than this
                build, or another instance held the migration lock too long.
            RuntimeError: ``run`` was called twice.

        Cancellation:
            Cancelling ``run`` is the way to close the store. Cancelling it during the start
            takes effect when the check running in its thread returns (each is bounded by the
            connect, statement or lock timeout).

        Resource handling:
            On exit (normal, error or cancellation) running calls are awaited, then the pool is
            closed, both bounded by ``close_timeout_s``.
        """
        if self._ran:
            raise RuntimeError("PostgresStore.run() can only be called once; create a new one")
        self._ran = True
        try:
            await trio.to_thread.run_sync(self._open_sync)
            self._open = True
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            self._open = False
            if not await close_within(self.close_timeout_s, self._close):
                LOGGER.warning(
                    "closing the PostgreSQL store %s took longer than %.1fs; calls were still "
                    "running, their connections are closed by PostgreSQL when this process ends",
                    self.where,
                    self.close_timeout_s,
                )

    def _connect_kwargs(self) -> dict[str, Any]:
        return {
            # libpq counts whole seconds (and at least 2)
            "connect_timeout": max(2, math.ceil(self.connect_timeout_s)),
            "options": f"-c statement_timeout={int(self.statement_timeout_s * 1000)}",
            "application_name": "caxton",
        }

    def _open_sync(self) -> None:
        try:
            conn = psycopg.connect(self.url, autocommit=True, **self._connect_kwargs())
        except psycopg.OperationalError as exc:
            raise self._connect_error(exc) from exc
        try:
            with conn:
                self._check_server(conn)
                self._migrate_sync(conn)
        except psycopg.OperationalError as exc:
            raise PostgresUnreachable(
                self.where,
                f"the connection failed during the start-up checks ({_first_line(exc)})",
                "Check that PostgreSQL is running and reachable, then start Caxton again.",
            ) from exc
        pool: ConnectionPool[Connection] = ConnectionPool(
            self.url,
            min_size=1,
            max_size=self.pool_size,
            kwargs={"autocommit": True, **self._connect_kwargs()},
            open=False,
            timeout=self.connect_timeout_s,
            check=None,  # checked in _serve, where it is known whether the call may skip it
            name=f"caxton {self.where}",
        )
        try:
            pool.open(wait=True, timeout=self.connect_timeout_s)
        except PoolTimeout as exc:
            pool.close()
            raise PostgresUnreachable(
                self.where,
                f"the connection pool could not connect within {self.connect_timeout_s:g} s",
                "Check that PostgreSQL is running and accepts more connections (max_connections).",
            ) from exc
        self._pool = pool

    def _connect_error(self, exc: psycopg.OperationalError) -> PostgresStartError:
        text = str(exc)
        lowered = text.lower()
        reason = _first_line(exc)
        if "password authentication failed" in lowered or "no password supplied" in lowered:
            return PostgresAuthFailed(
                self.where,
                f"the server refused the password ({reason})",
                "Put the right user and password in storage.postgres.url (or CAXTON_DATABASE_URL).",
            )
        if "role" in lowered and "does not exist" in lowered:
            return PostgresAuthFailed(
                self.where,
                f"the server has no such user ({reason})",
                "Create the user (CREATE ROLE ... LOGIN PASSWORD ...) or name an existing one "
                "in storage.postgres.url.",
            )
        if "database" in lowered and "does not exist" in lowered:
            return PostgresDatabaseMissing(
                self.where,
                f"the database does not exist ({reason})",
                "Create it (CREATE DATABASE ... OWNER ...) or name an existing one in "
                "storage.postgres.url.",
            )
        return PostgresUnreachable(
            self.where,
            f"no PostgreSQL answered within the connect timeout of "
            f"{self.connect_timeout_s:g} s ({reason})",
            "Check that PostgreSQL is running and that the host and port in "
            "storage.postgres.url are right and reachable from this machine.",
        )

    def _check_server(self, conn: Connection) -> None:
        version = conn.info.server_version
        row = conn.execute("SHOW server_version").fetchone()
        self._server_version = str(row[0]) if row is not None else str(version)
        if version < MIN_SERVER_VERSION:
            raise PostgresVersionUnsupported(
                self.where,
                f"PostgreSQL {self._server_version} is older than 14",
                "Upgrade PostgreSQL to 14 or newer (the tests use 18).",
            )

    def _ensure_vector(self, conn: Connection) -> None:
        row = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        if row is None:
            available = conn.execute(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).fetchone()
            if available is None:
                raise VectorExtensionMissing(
                    self.where,
                    "the pgvector extension is not installed on the server",
                    "Install pgvector 0.5 or newer on the PostgreSQL server (for example the "
                    "postgresql-NN-pgvector package, or the pgvector/pgvector image), then start "
                    "Caxton again.",
                )
            try:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            except psycopg.errors.InsufficientPrivilege as exc:
                database = conn.info.dbname
                raise VectorExtensionMissing(
                    self.where,
                    f"the database has no vector extension and the user {conn.info.user!r} may "
                    f"not create it ({_first_line(exc)})",
                    f"Have a superuser run CREATE EXTENSION vector; in the database "
                    f"{database!r}, then start Caxton again.",
                ) from exc
            LOGGER.info("created the vector extension in %s", self.where)
            row = conn.execute(
                "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
            ).fetchone()
            assert row is not None
        self._vector_version = str(row[0])
        if _version_tuple(self._vector_version) < MIN_VECTOR_VERSION:
            raise PostgresVersionUnsupported(
                self.where,
                f"pgvector {self._vector_version} is too old: memory search needs HNSW iterative "
                "scans (0.8.0 or newer)",
                "Upgrade pgvector on the server, then run ALTER EXTENSION vector UPDATE;",
            )

    def _migrate_sync(self, conn: Connection) -> None:
        conn.execute(f"SET lock_timeout = {int(self.migration_lock_timeout_s * 1000)}")
        try:
            conn.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        except psycopg.errors.LockNotAvailable as exc:
            raise PostgresMigrationError(
                self.where,
                f"another Caxton held the migration lock for over "
                f"{self.migration_lock_timeout_s:g} s",
                "Wait for the other instance to finish starting, or look for one stuck while "
                "migrating (pg_stat_activity), then start again.",
            ) from exc
        try:
            # Under the lock: CREATE EXTENSION and CREATE TABLE IF NOT EXISTS race otherwise.
            self._ensure_vector(conn)
            conn.execute(SCHEMA_MIGRATIONS_DDL)
            rows = conn.execute(
                "SELECT feature, max(version) FROM schema_migrations GROUP BY feature"
            ).fetchall()
            applied = {str(feature): int(version) for feature, version in rows}
            try:
                pending = plan(self.migrations, applied)
            except ValueError as exc:
                raise PostgresMigrationError(
                    self.where, str(exc), "Run a Caxton that knows this schema."
                ) from exc
            for migration in pending:
                try:
                    with conn.transaction():
                        for statement in migration.statements:
                            conn.execute(statement)
                        conn.execute(
                            "INSERT INTO schema_migrations (feature, version, description) "
                            "VALUES (%s, %s, %s)",
                            [migration.feature, migration.version, migration.description],
                        )
                except psycopg.Error as exc:
                    if isinstance(exc, psycopg.OperationalError) and conn.broken:
                        raise
                    raise PostgresMigrationError(
                        self.where,
                        f"migration {migration.feature} v{migration.version} "
                        f"({migration.description}) failed: {_first_line(exc)}",
                        "Fix the database or report the failing migration; nothing of it was "
                        "applied.",
                    ) from exc
                LOGGER.info(
                    "applied migration %s v%d to %s: %s",
                    migration.feature,
                    migration.version,
                    self.where,
                    migration.description,
                )
                applied[migration.feature] = migration.version
            self._schema_versions = applied
        finally:
            if not conn.broken:
                conn.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])

    async def _close(self) -> None:
        async with holding_every_token(self._limiter):  # the running calls are done
            pool, self._pool = self._pool, None
            if pool is not None:
                await trio.to_thread.run_sync(pool.close, self.close_timeout_s)

    # ----------------------------------------------------------------------------- calls

    async def read_statements(self, fns: Sequence[Callable[[Connection], T]]) -> list[T] | None:
        """A single read as :meth:`execute_fn`, but outside a transaction (each statement its
        own snapshot; no ``BEGIN`` and ``COMMIT`` round trips, nor their cost in the GIL);
        None for several (one call costs less here than reads side by side)."""
        if len(fns) != 1:
            return None
        self._reads_total += 1
        return [await self._call(fns[0], read_only=True, transaction=False)]

    async def execute_fn(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a worker thread, inside a read-only transaction.

        Raises:
            PostgresStoreClosed: the store is not running.
            StorageUnavailable: PostgreSQL is down or the connection was lost, no connection
                was free within the connect timeout, or a statement ran too long.
            Exception: whatever else ``fn`` raised.

        Cancellation:
            A call that has started runs to completion (a psycopg call is not interrupted from
            trio; ``statement_timeout_s`` bounds it); cancellation takes effect when it returns.

        Resource handling:
            At most ``pool_size`` calls run at once, each with its own connection.
        """
        self._reads_total += 1
        return await self._call(fn, read_only=True)

    async def execute_write_fn(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` in a worker thread, inside a transaction, and return its result
        once committed; an exception rolls the transaction back and is re-raised here.

        Raises, Cancellation, Resource handling: as :meth:`execute_fn`; a write that has
        started commits or rolls back before cancellation takes effect.
        """
        self._writes_total += 1
        try:
            return await self._call(fn, read_only=False)
        except BaseException:
            self._write_errors_total += 1
            raise

    async def idempotent_write(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(conn)`` outside a transaction, each statement committing on its own (one
        round trip per statement instead of ``BEGIN``, the statements and ``COMMIT`` after a
        check of the connection): for writes that may run twice, such as the cluster
        heartbeat's upsert. If the connection turns out dead, ``fn`` runs again on another.

        Raises, Cancellation, Resource handling: as :meth:`execute_write_fn`, but a statement
        that has committed stays committed when a later one of ``fn`` fails.
        """
        self._writes_total += 1
        try:
            return await self._call(fn, read_only=False, transaction=False, rerunnable=True)
        except BaseException:
            self._write_errors_total += 1
            raise

    async def ping(self) -> None:
        """Ask PostgreSQL for ``SELECT 1`` (readiness).

        Raises:
            PostgresStoreClosed, StorageUnavailable: as :meth:`execute_fn`; while the server is
                down this fails at once but for one probe a second.
        """
        await self._call(_select_one, read_only=True)

    async def _call(
        self,
        fn: Callable[[Connection], T],
        *,
        read_only: bool,
        transaction: bool = True,
        rerunnable: bool | None = None,
    ) -> T:
        """``rerunnable`` (reads unless told otherwise): ``fn`` may run again on another
        connection when its own turns out dead, so the connection is not checked first."""
        if not self._open:
            raise PostgresStoreClosed(self.where)
        call = _Call(fn, read_only, transaction, read_only if rerunnable is None else rerunnable)
        with self._probe.call():
            return await trio.to_thread.run_sync(self._run_call, call, limiter=self._limiter)

    def _run_call(self, call: _Call[T]) -> T:
        pool = self._pool
        if pool is None:
            raise PostgresStoreClosed(self.where)
        wait_s = LAGGING_POOL_WAIT_S if self._pool_lagging else POOL_WAIT_S
        try:
            try:
                # a dead connection is dropped by the pool when it comes back; take another
                for attempt in range(self.pool_size + 1):
                    try:
                        with pool.connection(timeout=min(wait_s, self.connect_timeout_s)) as conn:
                            self._pool_lagging = False
                            return self._serve(conn, call)
                    except _DeadConnection as dead:
                        if attempt == self.pool_size:
                            raise dead.error from None
                raise AssertionError("unreachable: the last attempt returns or raises")
            except PoolTimeout:
                # No pooled connection came: the server stopped answering, or the pool is
                # still waiting out its reconnect backoff (1, 2, 4 ... s) after it did. A
                # connection of its own tells which at once (a refused connect fails at once)
                # and serves this call if PostgreSQL answers.
                with psycopg.connect(self.url, autocommit=True, **self._connect_kwargs()) as conn:
                    self._pool_lagging = True
                    return _in_transaction(conn, call.fn, call.read_only, call.transaction)
        except PoolTimeout as exc:
            self._unavailable_total += 1
            raise StorageUnavailable(
                self.where, f"no connection within {self.connect_timeout_s:g} s"
            ) from exc
        except psycopg.OperationalError as exc:
            self._unavailable_total += 1
            raise StorageUnavailable(self.where, _first_line(exc)) from exc

    def _serve(self, conn: Connection, call: _Call[T]) -> T:
        """Run the call on a pooled connection: checked first (a round trip of its own)
        unless the call may run again elsewhere (reads, :meth:`idempotent_write`).

        Raises:
            _DeadConnection: the check failed, or the unchecked call found the connection
                dead; a checked call changed nothing, an unchecked one may run twice, so
                another connection may serve it.
        """
        if not call.rerunnable:
            try:
                ConnectionPool.check_connection(conn)
            except psycopg.OperationalError as exc:
                raise _DeadConnection(exc) from exc
        try:
            return _in_transaction(conn, call.fn, call.read_only, call.transaction)
        except psycopg.OperationalError as exc:
            if call.rerunnable and conn.broken:
                raise _DeadConnection(exc) from exc
            raise

    # ----------------------------------------------------------------------------- checks

    def statistics(self) -> PostgresStoreStatistics:
        """Return a snapshot of the store's counters."""
        pool = self._pool
        stats = pool.get_stats() if pool is not None else {}
        return PostgresStoreStatistics(
            database=self.where,
            open=self._open,
            server_version=self._server_version,
            vector_version=self._vector_version,
            pool_size=self.pool_size,
            connections=stats.get("pool_size", 0),
            connections_idle=stats.get("pool_available", 0),
            writes_total=self._writes_total,
            write_errors_total=self._write_errors_total,
            reads_total=self._reads_total,
            unavailable_total=self._unavailable_total + self._probe.refused_total,
            schema_versions=dict(self._schema_versions),
        )


@attrs.frozen
class _Call(Generic[T]):
    """A call for a worker thread: ``fn`` and how to run it (see :meth:`PostgresStore._call`)."""

    fn: Callable[[Connection], T]
    read_only: bool
    transaction: bool
    rerunnable: bool


class _DeadConnection(Exception):
    """A pooled connection was found dead: by its check, before the call changed anything, or
    during a call that may run again (a read, :meth:`PostgresStore.idempotent_write`)."""

    def __init__(self, error: psycopg.OperationalError) -> None:
        super().__init__(str(error))
        self.error = error


def _in_transaction(
    conn: Connection, fn: Callable[[Connection], T], read_only: bool, transaction: bool
) -> T:
    """``fn(conn)`` in a transaction (read-only with ``read_only``), or without one on the
    autocommit connection."""
    if not transaction:
        return fn(conn)
    conn.read_only = read_only
    with conn.transaction():
        return fn(conn)


def _select_one(conn: Connection) -> None:
    conn.execute("SELECT 1")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:2]) if lines else type(exc).__name__


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split("."):
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


@asynccontextmanager
async def open_postgres_store(
    url: str,
    *,
    migrations: Sequence[Migration] = (),
    pool_size: int = 4,
    connect_timeout_s: float = 5.0,
) -> AsyncIterator[PostgresStore]:
    """Start a :class:`PostgresStore` for the duration of the block (as ``open_store``).

    Raises:
        PostgresStartError: as :meth:`PostgresStore.run`.

    Cancellation:
        Cancelling the block closes the store like leaving it.

    Resource handling:
        Leaving the block waits for running calls and closes the pool before returning.
    """
    store = PostgresStore(
        url, migrations=migrations, pool_size=pool_size, connect_timeout_s=connect_timeout_s
    )
    async with running(store.run):
        yield store


def _down_reason(error: Exception) -> str | None:
    """The reason of ``error`` when it says the server is unreachable (no connection, or the
    connection lost), ``None`` for anything else (one statement that ran too long, or an error
    of the call's own)."""
    if not isinstance(error, StorageUnavailable):
        return None
    cause = error.__cause__
    if isinstance(cause, PoolTimeout) or (
        isinstance(cause, psycopg.OperationalError)
        and not isinstance(cause, psycopg.errors.QueryCanceled)
    ):
        return error.reason
    return None


__all__ = [
    "Connection",
    "PostgresStore",
    "PostgresStoreStatistics",
    "open_postgres_store",
    "redact",
]
