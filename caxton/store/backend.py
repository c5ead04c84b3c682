"""The store seam: what memory, conversations, deployments and cluster state need of a store.

Three stores satisfy it: :class:`caxton.store.Store` (one DuckDB file, ``dialect`` "duckdb"),
:class:`caxton.store.postgres.PostgresStore` (a psycopg pool, ``dialect`` "postgres") and, for
memory alone, :class:`caxton.store.qdrant.QdrantStore` (qdrant-client, ``dialect`` "qdrant";
its calls are not transactions, as Qdrant has none). A
feature's code holds a :class:`Backend` and an SQL object for that dialect (a Protocol the
feature defines, with one implementation per dialect); the composition root
(:mod:`caxton.server`) picks both, so the feature never asks which backend it has.

A call is ``fn(conn)``: a synchronous function run in a worker thread inside one transaction
(read-only for :meth:`Backend.execute_fn`), with that dialect's connection.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

T = TypeVar("T")

Dialect = Literal["duckdb", "postgres", "qdrant"]


class Backend(Protocol):
    """A running store: transactions in worker threads, bounded by the store's limiter."""

    @property
    def dialect(self) -> Dialect:
        """Which SQL the connection speaks."""
        ...

    @property
    def shared(self) -> bool:
        """Whether other processes use the same database (rows may change under a cache)."""
        ...

    async def ping(self) -> None:
        """Readiness: return when the database answers, raise a 503 error when it does not."""
        ...

    async def execute_fn(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` in one read-only transaction; its result is returned."""
        ...

    async def read_statements(self, fns: Sequence[Callable[[Any], T]]) -> list[T] | None:
        """Run one-statement reads ``fns`` at once, outside a transaction where the store can
        (DuckDB); their results when they describe one state, else None (a single ``fn``
        always gets its result; see :meth:`caxton.store.Store.read_statements`)."""
        ...

    async def execute_write_fn(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(conn)`` in one transaction, returning after it commits."""
        ...

    async def idempotent_write(self, fn: Callable[[Any], T]) -> T:
        """Run a write that may run twice (``fn`` gives the same rows when it does), in as
        few round trips as the store can: on PostgreSQL each statement commits on its own and
        the connection is not checked first; elsewhere as :meth:`execute_write_fn`."""
        ...


def _conforms() -> None:  # pragma: no cover - checked by mypy, never run
    from caxton.store.postgres import PostgresStore
    from caxton.store.qdrant import QdrantStore
    from caxton.store.store import Store

    duckdb_store: Backend = Store(":memory:")
    postgres_store: Backend = PostgresStore("postgresql://")
    qdrant_store: Backend = QdrantStore(path="memory")
    del duckdb_store, postgres_store, qdrant_store
