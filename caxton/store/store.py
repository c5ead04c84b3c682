"""The store component: one DuckDB file, one writer task, a cursor per reader thread.

DuckDB is the store of record for memory, conversations, deployments and audit (DESIGN §1,
§6). The design follows ``datasette/database.py``:

* **one writer** — every write is a ``fn(conn)`` queued on a trio memory channel; a single task
  runs the queue in order, each call inside a transaction, in a worker thread limited by a
  ``CapacityLimiter(1)``. A write call returns only after ``COMMIT``, so an acknowledged write
  survives a crash (DuckDB writes and syncs its WAL on commit).
* **readers** — ``fn(cursor)`` calls run in worker threads under a separate limiter; each
  running thread holds its own cursor (DuckDB refuses a connection shared between threads), and
  each call sees one consistent snapshot (it runs in a read transaction that is rolled back).
* **lifecycle** — ``run()`` opens the file, applies pending migrations, then reports started
  with the store itself as the handle. On shutdown the queue is failed with
  :class:`~caxton.store.errors.StoreClosed`, running reads are awaited, the database is
  checkpointed and every connection is closed.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Final, NoReturn, TypeVar, cast

import attrs
import duckdb
import outcome
import trio

from caxton.components import running
from caxton.datadir import restrict_file
from caxton.store.errors import MigrationError, StoreClosed, StoreLockedError, StoreOpenError
from caxton.store.migrations import SCHEMA_MIGRATIONS_DDL, Migration, plan

LOGGER = logging.getLogger("caxton.store")

Connection = duckdb.DuckDBPyConnection
T = TypeVar("T")


class _State(enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    ABANDONED = "abandoned"
    DONE = "done"


@attrs.define(eq=False)
class _WriteRequest:
    fn: Callable[[Connection], object]
    transaction: bool
    state: _State = _State.QUEUED
    result: outcome.Outcome[object] | None = None
    done: trio.Event = attrs.field(factory=trio.Event)

    def finish(self, result: outcome.Outcome[object]) -> None:
        self.result = result
        self.state = _State.DONE
        self.done.set()


@attrs.frozen(kw_only=True)
class StoreStatistics:
    """A snapshot of the store's counters (read by ``/api/v1/health`` and the metrics)."""

    path: str
    open: bool
    size_bytes: int
    writes_total: int
    write_errors_total: int
    reads_total: int
    write_queue_length: int
    schema_versions: dict[str, int]


class Store:
    """The DuckDB store of record (a :class:`caxton.store.backend.Backend`).

    Args:
        path: the database file; its directory must exist.
        migrations: every feature's migrations (see :mod:`caxton.store.migrations`).
        readers: how many reads may run at once, each in its own worker thread.
        queue_size: how many writes may wait before ``execute_write_fn`` applies backpressure.
        close_timeout_s: the bound on waiting for running reads and the final checkpoint.
        memory_limit_bytes: DuckDB's ``memory_limit``, set when the database opens (None or 0:
            DuckDB's own, 80% of RAM).
        threads: DuckDB's ``threads`` (None or 0: the number of cores).
    """

    dialect: Final = "duckdb"
    #: one process holds the file (the lock in data_dir), so nothing changes under a cache
    shared: Final = False

    def __init__(
        self,
        path: Path | str,
        *,
        migrations: Sequence[Migration] = (),
        readers: int = 4,
        queue_size: int = 64,
        close_timeout_s: float = 10.0,
        memory_limit_bytes: int | None = None,
        threads: int | None = None,
    ) -> None:
        if readers < 1:
            raise ValueError(f"readers must be at least 1, got {readers}")
        if memory_limit_bytes is not None and memory_limit_bytes < 0:
            raise ValueError(f"memory_limit_bytes must not be negative, got {memory_limit_bytes}")
        if threads is not None and threads < 0:
            raise ValueError(f"threads must not be negative, got {threads}")
        self.memory_limit_bytes = memory_limit_bytes or None
        self.threads = threads or None
        self.path = Path(path)
        self.migrations = tuple(migrations)
        self.close_timeout_s = close_timeout_s
        self._write_limiter = trio.CapacityLimiter(1)
        self._read_limiter = trio.CapacityLimiter(readers)
        self._send, self._receive = trio.open_memory_channel[_WriteRequest](queue_size)
        self._root: Connection | None = None
        self._writer: Connection | None = None
        self._root_lock = threading.Lock()
        self._idle_cursors: list[Connection] = []
        self._all_cursors: list[Connection] = []
        self._open = False
        self._ran = False
        self._schema_versions: dict[str, int] = {}
        self._writes_total = 0
        self._write_errors_total = 0
        self._reads_total = 0
        # Writes handed to the writer thread, and whether one is there now: reads run apart
        # describe one state only if neither moved while they ran (see read_statements).
        self._writes_started = 0
        self._writing = False

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[Store] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Open and migrate the database, then run the writer until cancelled.

        Reports started (with this store as the handle) once the schema is current.

        Raises:
            StoreLockedError: another process holds the file.
            StoreOpenError: the file is not a usable DuckDB database.
            MigrationError: a migration failed or the database is newer than this build.
            RuntimeError: ``run`` was called twice.

        Cancellation:
            Cancelling ``run`` is the way to close the store. Queued writes that have not
            started fail with :class:`StoreClosed`; a write already running finishes (commit or
            rollback) first, because a DuckDB call cannot be interrupted.

        Resource handling:
            On exit (normal, error or cancellation) running reads are awaited, the database is
            checkpointed and every connection is closed, all bounded by ``close_timeout_s``.
        """
        if self._ran:
            raise RuntimeError("Store.run() can only be called once; create a new Store")
        self._ran = True
        try:
            await trio.to_thread.run_sync(self._open_sync, limiter=self._write_limiter)
            self._open = True
            task_status.started(self)
            async for request in self._receive:
                await self._serve(request)
            raise AssertionError("the write queue closed while the store was running")
        finally:
            self._open = False
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + self.close_timeout_s
                await self._close()
            if scope.cancelled_caught:
                LOGGER.warning(
                    "closing %s took longer than %.1fs; reads were still running, so the "
                    "database was not checkpointed (DuckDB replays its WAL at the next start)",
                    self.path,
                    self.close_timeout_s,
                )

    async def _serve(self, request: _WriteRequest) -> None:
        if request.state is _State.ABANDONED:
            return
        request.state = _State.RUNNING
        self._writes_started += 1
        self._writing = True
        try:
            result = await trio.to_thread.run_sync(
                self._run_write, request, limiter=self._write_limiter
            )
        except BaseException:
            # Cancelled before the thread took the write (once it has, the call cannot be
            # cancelled, and _run_write returns every error as an outcome): it never ran, and
            # the queue no longer holds it, so its caller must hear it here or wait forever.
            request.finish(outcome.Error(StoreClosed(self.path)))
            raise
        finally:
            self._writing = False
        # No checkpoint between the thread's return and finish(): a committed write is always
        # reported to its caller, even when the store is being cancelled.
        self._writes_total += 1
        if isinstance(result, outcome.Error):
            self._write_errors_total += 1
        request.finish(result)

    async def _close(self) -> None:
        # Fail what is still queued; new callers see _open == False.
        while True:
            try:
                request = self._receive.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
                break
            request.finish(outcome.Error(StoreClosed(self.path)))
        await self._send.aclose()
        await self._receive.aclose()
        # Wait for running reads: take every reader token.
        borrowers = [object() for _ in range(int(self._read_limiter.total_tokens))]
        acquired: list[object] = []
        try:
            for borrower in borrowers:
                await self._read_limiter.acquire_on_behalf_of(borrower)
                acquired.append(borrower)
            await trio.to_thread.run_sync(self._close_sync, limiter=self._write_limiter)
        finally:
            for borrower in acquired:
                self._read_limiter.release_on_behalf_of(borrower)

    def _open_sync(self) -> None:
        settings: dict[str, str | bool | int | float | list[str]] = {}
        if self.memory_limit_bytes is not None:
            settings["memory_limit"] = f"{self.memory_limit_bytes}B"
        if self.threads is not None:
            settings["threads"] = self.threads
        try:
            root = duckdb.connect(str(self.path), config=settings)
        except duckdb.IOException as exc:
            message = str(exc)
            if "lock" in message.lower():
                raise StoreLockedError(self.path, message) from exc
            raise StoreOpenError(self.path, message) from exc
        except duckdb.Error as exc:
            raise StoreOpenError(self.path, str(exc)) from exc
        self._root = root
        # DuckDB creates its files with the process umask; the database is the owner's only
        for created in (self.path, self.path.with_name(f"{self.path.name}.wal")):
            restrict_file(created)
        try:
            self._writer = root.cursor()
            self._migrate_sync(self._writer)
        except BaseException:
            self._close_sync(checkpoint=False)
            raise

    def _migrate_sync(self, conn: Connection) -> None:
        conn.execute(SCHEMA_MIGRATIONS_DDL)
        rows = conn.execute(
            "SELECT feature, max(version) FROM schema_migrations GROUP BY feature"
        ).fetchall()
        applied = {str(feature): int(version) for feature, version in rows}
        try:
            pending = plan(self.migrations, applied)
        except ValueError as exc:
            raise MigrationError(self.path, str(exc)) from exc
        for migration in pending:
            conn.begin()
            try:
                for statement in migration.statements:
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations VALUES (?, ?, ?, ?)",
                    [migration.feature, migration.version, migration.description, _utcnow()],
                )
                conn.commit()
            except duckdb.Error as exc:
                conn.rollback()
                raise MigrationError(
                    self.path,
                    f"migration {migration.feature} v{migration.version} "
                    f"({migration.description}) failed: {exc}",
                ) from exc
            LOGGER.info(
                "applied migration %s v%d: %s",
                migration.feature,
                migration.version,
                migration.description,
            )
            applied[migration.feature] = migration.version
        self._schema_versions = applied

    def _close_sync(self, *, checkpoint: bool = True) -> None:
        with self._root_lock:
            if self._root is None:
                return
            try:
                if checkpoint and self._writer is not None:
                    self._writer.execute("CHECKPOINT")
            except duckdb.Error:
                LOGGER.exception("checkpoint at shutdown failed for %s", self.path)
            finally:
                for cursor in self._all_cursors:
                    cursor.close()
                if self._writer is not None:
                    self._writer.close()
                self._root.close()
                self._all_cursors.clear()
                self._idle_cursors.clear()
                self._writer = None
                self._root = None

    # ----------------------------------------------------------------------------- writes

    async def execute_write_fn(
        self, fn: Callable[[Connection], T], *, transaction: bool = True
    ) -> T:
        """Queue ``fn(conn)`` for the writer and return its result once committed.

        Args:
            fn: runs in the writer thread with the writer's connection. It must not keep the
                connection. With ``transaction=True`` it runs between ``BEGIN`` and ``COMMIT``;
                an exception rolls everything back and is re-raised here.
            transaction: False for statements DuckDB refuses inside a transaction
                (``CHECKPOINT``, ``VACUUM``), or for a ``fn`` that runs its own
                ``BEGIN; ...; COMMIT`` script in one call (and rolls back when it fails).

        Returns:
            What ``fn`` returned, after the commit.

        Raises:
            StoreClosed: the store is not running, or closed before the write started.
            Exception: whatever ``fn`` raised (the transaction is rolled back).

        Cancellation:
            If cancelled while the write is still queued, the write is dropped and never runs.
            Once it has started it runs to commit or rollback; the caller just does not learn
            the result.

        Resource handling:
            Writes run one at a time in the order they were queued; a full queue blocks the
            caller (backpressure).
        """
        if not self._open:
            raise StoreClosed(self.path)
        request = _WriteRequest(fn=fn, transaction=transaction)
        try:
            try:
                await self._send.send(request)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                raise StoreClosed(self.path) from None
            await request.done.wait()
        finally:
            if request.state is _State.QUEUED:
                request.state = _State.ABANDONED
        assert request.result is not None
        return cast("T", request.result.unwrap())

    async def idempotent_write(self, fn: Callable[[Connection], T]) -> T:
        """As :meth:`execute_write_fn` (the one writer has no round trips to save; the
        :class:`~caxton.store.backend.Backend` method is for PostgreSQL)."""
        return await self.execute_write_fn(fn)

    def _run_write(self, request: _WriteRequest) -> outcome.Outcome[object]:
        conn = self._writer
        if conn is None:
            return outcome.Error(StoreClosed(self.path))
        if not request.transaction:
            return outcome.capture(request.fn, conn)
        conn.begin()
        try:
            value = request.fn(conn)
            conn.commit()
        except BaseException as exc:
            try:
                conn.rollback()
            except duckdb.Error:
                LOGGER.debug("rollback after a failed write failed", exc_info=True)
            return outcome.Error(exc)
        return outcome.Value(value)

    async def checkpoint(self) -> None:
        """Write the WAL into the database file (``CHECKPOINT``) through the writer.

        Raises:
            StoreClosed: the store is not running.

        Cancellation:
            As :meth:`execute_write_fn`.

        Resource handling:
            Runs in the writer's turn, so it never overlaps a write.
        """
        await self.execute_write_fn(_checkpoint, transaction=False)

    async def copy_database(self, target_dir: Path) -> tuple[Path, ...]:
        """Checkpoint, then copy the database file (and its WAL, if any) into ``target_dir``.

        The checkpoint and the copy run in one turn of the writer, so no write lands while the
        file is copied: the copy is a consistent database that DuckDB opens as it is (it
        replays a copied WAL). Reads go on meanwhile; writes wait until the copy is done
        (about a second per GB).

        Returns:
            The copies, database file first.

        Raises:
            StoreClosed: the store is not running.
            OSError: the copy failed (``target_dir`` missing, disk full, ...).

        Cancellation:
            As :meth:`execute_write_fn`: a copy that has started runs to its end.

        Resource handling:
            Holds the writer for the length of the copy.
        """
        path = self.path

        def checkpoint_and_copy(conn: Connection) -> tuple[Path, ...]:
            conn.execute("CHECKPOINT")
            copies = []
            for source in (path, path.with_name(path.name + ".wal")):
                if source.is_file():
                    copies.append(Path(shutil.copy2(source, target_dir / source.name)))
            return tuple(copies)

        return await self.execute_write_fn(checkpoint_and_copy, transaction=False)

    # ----------------------------------------------------------------------------- reads

    async def ping(self) -> None:
        """Readiness: the file is open (a DuckDB file in this process does not go away).

        Raises:
            StoreClosed: the store is not running.
        """
        if not self._open:
            raise StoreClosed(self.path)

    async def execute_fn(self, fn: Callable[[Connection], T]) -> T:
        """Run ``fn(cursor)`` in a reader thread and return its result.

        ``fn`` sees one consistent snapshot: it runs inside a transaction that is rolled back
        afterwards, so it must not write.

        Raises:
            StoreClosed: the store is not running.
            Exception: whatever ``fn`` raised.

        Cancellation:
            A read that has started runs to completion (DuckDB calls cannot be interrupted);
            cancellation takes effect when it returns.

        Resource handling:
            At most ``readers`` reads run at once; each running thread uses its own cursor,
            taken from a pool that the store closes on shutdown.
        """
        if not self._open:
            raise StoreClosed(self.path)
        self._reads_total += 1
        return await trio.to_thread.run_sync(self._run_read, fn, limiter=self._read_limiter)

    def _run_read(self, fn: Callable[[Connection], T]) -> T:
        cursor = self._take_cursor()
        try:
            cursor.begin()
            try:
                return fn(cursor)
            finally:
                cursor.rollback()
        finally:
            with self._root_lock:
                self._idle_cursors.append(cursor)

    async def read_statements(self, fns: Sequence[Callable[[Connection], T]]) -> list[T] | None:
        """Run each of ``fns`` (one statement each) at once, each in its own reader thread and
        outside a transaction, and return their results when they describe one state.

        A DuckDB statement is its own snapshot, so a one-statement read needs no transaction
        around it (``BEGIN`` and ``ROLLBACK`` cost ~0.26 ms together, as much as the statement's
        own fixed cost), and two small reads of different tables take about half as long side
        by side as one after the other (~1.5 ms each at 100k-1M rows, whatever they read).

        Returns:
            The results in the order of ``fns``; a single ``fn`` always gets its result. For
            several, None when they could not be taken as one snapshot: fewer readers free
            than ``fns`` (the store is busy: reading them one after the other in one
            transaction costs less), or a write ran while they did. The caller then reads in
            one transaction (:meth:`execute_fn`).

        Raises:
            StoreClosed: the store is not running.
            Exception: the first of ``fns`` (in order) that raised.

        Cancellation:
            As :meth:`execute_fn`: statements that have started run to completion.
        """
        if not self._open:
            raise StoreClosed(self.path)
        if len(fns) == 1:
            self._reads_total += 1
            return [
                await trio.to_thread.run_sync(
                    self._run_statement, fns[0], limiter=self._read_limiter
                )
            ]
        if self._writing or self._read_limiter.available_tokens < len(fns):
            return None
        writes_seen = self._writes_started
        self._reads_total += len(fns)
        results: list[outcome.Outcome[T] | None] = [None] * len(fns)

        async def read(index: int) -> None:
            results[index] = await trio.to_thread.run_sync(
                outcome.capture, self._run_statement, fns[index], limiter=self._read_limiter
            )

        async with trio.open_nursery() as nursery:
            for index in range(len(fns)):
                nursery.start_soon(read, index)
        values = [result.unwrap() for result in results if result is not None]
        if self._writing or self._writes_started != writes_seen:
            return None
        return values

    def _run_statement(self, fn: Callable[[Connection], T]) -> T:
        cursor = self._take_cursor()
        try:
            return fn(cursor)
        finally:
            with self._root_lock:
                self._idle_cursors.append(cursor)

    def _take_cursor(self) -> Connection:
        with self._root_lock:
            if self._root is None:
                raise StoreClosed(self.path)
            if self._idle_cursors:
                return self._idle_cursors.pop()
            cursor = self._root.cursor()
            self._all_cursors.append(cursor)
            return cursor

    # ----------------------------------------------------------------------------- checks

    def size_bytes(self) -> int:
        """The size of the database file plus its write-ahead log, in bytes."""
        total = 0
        for candidate in (self.path, self.path.with_name(self.path.name + ".wal")):
            with suppress(FileNotFoundError):
                total += os.stat(candidate).st_size
        return total

    def statistics(self) -> StoreStatistics:
        """Return a snapshot of the store's counters."""
        return StoreStatistics(
            path=str(self.path),
            open=self._open,
            size_bytes=self.size_bytes(),
            writes_total=self._writes_total,
            write_errors_total=self._write_errors_total,
            reads_total=self._reads_total,
            write_queue_length=self._send.statistics().current_buffer_used,
            schema_versions=dict(self._schema_versions),
        )


def read_table_query(name: str, *, comprehensive: bool) -> str:
    """SQL that reads table ``name``: its row count, and with ``comprehensive`` a hash of
    every row too (so every page of the table is read and checked)."""
    quoted = '"' + name.replace('"', '""') + '"'
    if comprehensive:
        return f"SELECT count(*), bit_xor(hash(t)) FROM {quoted} AS t"
    return f"SELECT count(*) FROM {quoted}"


def _checkpoint(conn: Connection) -> None:
    conn.execute("CHECKPOINT")


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


@asynccontextmanager
async def open_store(
    path: Path | str,
    *,
    migrations: Sequence[Migration] = (),
    readers: int = 4,
    close_timeout_s: float = 10.0,
    memory_limit_bytes: int | None = None,
    threads: int | None = None,
) -> AsyncIterator[Store]:
    """Open, migrate and serve a store for the duration of the block.

    Args:
        path: the database file.
        migrations: every feature's migrations.
        readers: concurrent reader threads.
        close_timeout_s: bound on the shutdown checkpoint.
        memory_limit_bytes: DuckDB's memory limit (None: DuckDB's own).
        threads: DuckDB's worker threads (None: the number of cores).

    Yields:
        The running store.

    Raises:
        StoreLockedError, StoreOpenError, MigrationError: as :meth:`Store.run`.

    Cancellation:
        Cancelling the block closes the store like leaving it.

    Resource handling:
        Leaving the block cancels the writer, checkpoints and closes the database before the
        context manager returns.
    """
    store = Store(
        path,
        migrations=migrations,
        readers=readers,
        close_timeout_s=close_timeout_s,
        memory_limit_bytes=memory_limit_bytes,
        threads=threads,
    )
    async with running(store.run):
        yield store


__all__ = [
    "Connection",
    "Store",
    "StoreStatistics",
    "open_store",
]
