"""The Qdrant memory store component: qdrant-client used from trio (issue #16).

With ``memory.backend: qdrant`` memory lives in Qdrant while conversations, deployments and
the rest stay where ``storage.backend`` keeps them; this component is memory's own store (the
server names it "memory_store"). It satisfies :class:`caxton.store.backend.Backend` with
``dialect`` "qdrant", and :mod:`caxton.memory.qdrant_memory` is its memory "SQL".

* **client** — the synchronous :class:`qdrant_client.QdrantClient` over HTTP (REST), or its
  local mode (``path``: the same API run in process on a folder, for single-node trials and
  tests). The async client is httpx on asyncio and does not run under trio, so every call runs
  in a worker thread through ``trio.to_thread.run_sync`` under a ``CapacityLimiter`` this
  component owns (one token in local mode: its storage is one process's SQLite files, not
  meant for concurrent threads).
* **calls** — ``fn(conn)`` gets a :class:`QdrantConnection` (the client and the collection
  names). Qdrant has no transactions: :meth:`QdrantStore.execute_fn` and
  :meth:`QdrantStore.execute_write_fn` differ only in their counters, and a write of several
  points is several requests. :class:`caxton.memory.MemoryService` runs its writes one at a
  time under its own lock, which is what keeps one process's writes from interleaving. With a
  URL several instances may share the collection (``shared`` is True: no process-local
  accelerator); nothing serialises their writes with each other, as PostgreSQL's advisory lock
  does (the service's re-plan check still sees most races).
* **failures** — Qdrant unreachable at start fails the start within ``timeout_s`` naming the
  URL (:class:`~caxton.store.errors.QdrantUnreachable`). While running, a call Qdrant does not
  answer raises :class:`~caxton.store.errors.MemoryUnavailable` (503 ``MEMORY_UNAVAILABLE``),
  and until it answers again calls fail at once but for one a second
  (``DOWN_PROBE_INTERVAL_S``) that tries it: callers get their 503 quickly instead of each
  waiting the timeout, and the store recovers by itself.
* **lifecycle** — ``run()`` connects, creates the entity collection (``vector_size``, cosine)
  and the relation collection when missing, checks the vector size of an existing one, adds
  the payload indexes (server only: local mode has none), then reports started with the store
  as the handle. Cancelling it waits for running calls and closes the client.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn, TypeVar

import attrs
import trio

from caxton.store.calls import DOWN_PROBE_INTERVAL_S as DOWN_PROBE_INTERVAL_S
from caxton.store.calls import DownProbe, close_within, holding_every_token
from caxton.store.errors import (
    MemoryUnavailable,
    QdrantPathLocked,
    QdrantStartError,
    QdrantStoreClosed,
    QdrantUnreachable,
    QdrantVectorSizeMismatch,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from qdrant_client import QdrantClient

LOGGER = logging.getLogger("caxton.store.qdrant")

T = TypeVar("T")

#: Calls at once against a Qdrant server (local mode takes one at a time).
DEFAULT_MAX_CALLS = 8
#: The relation collection is the entity collection's name with this suffix.
RELATIONS_SUFFIX = "-relations"
#: Keyword payload indexes of the entity collection (server only) and of the relation one.
ENTITY_INDEXES: Final = ("name", "entity_type", "scope", "agent")
RELATION_INDEXES: Final = ("from_entity", "to_entity", "relation_type")
#: HTTP statuses of a Qdrant (or the proxy in front of it) that cannot serve now.
_UNAVAILABLE_STATUSES = frozenset({502, 503, 504})


class QdrantConnection(NamedTuple):
    """What a call gets as ``conn``: the client and where memory's points are (a named tuple,
    not an attrs class, so that qdrant-client is imported only when memory is in Qdrant).

    Attributes:
        client: the synchronous qdrant-client (remote or local mode).
        entities: the entity collection (one point per entity, its embedding as the vector).
        relations: the relation collection (one point per relation, no vector).
        local: the client runs in local mode (exact search always; no payload indexes, and
            no ``search_params``, which it would warn about).
    """

    client: QdrantClient
    entities: str
    relations: str
    local: bool


@attrs.frozen(kw_only=True)
class QdrantStoreStatistics:
    """A snapshot of the store's counters."""

    qdrant: str
    open: bool
    local: bool
    server_version: str | None
    collection: str
    vector_size: int
    writes_total: int
    write_errors_total: int
    reads_total: int
    unavailable_total: int


def redact(url: str) -> str:
    """``url`` without credentials (an API key travels in a header, but a URL may hold a
    user and password)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    host, slash, path = rest.partition("/")
    host = host.rpartition("@")[2]
    return f"{scheme}://{host}{slash}{path}"


class QdrantStore:
    """Memory's store in Qdrant (a :class:`caxton.store.backend.Backend`).

    Args:
        url: the Qdrant server (``http://host:6333``); exactly one of ``url`` and ``path``.
        path: a folder for qdrant-client's local mode (one process at a time).
        collection: the entity collection; relations go to ``<collection>-relations``.
        vector_size: the embedding size the collection is created with and must have.
        api_key: the server's API key.
        timeout_s: the bound on each request, and on reaching the server at start.
        max_calls: calls at once against a server (local mode: always one).
        close_timeout_s: the bound on waiting for running calls at shutdown.
    """

    dialect: Final = "qdrant"

    def __init__(
        self,
        *,
        url: str | None = None,
        path: Path | str | None = None,
        collection: str = "caxton-memory",
        vector_size: int = 384,
        api_key: str | None = None,
        timeout_s: float = 10.0,
        max_calls: int = DEFAULT_MAX_CALLS,
        close_timeout_s: float = 10.0,
    ) -> None:
        if (url is None) == (path is None):
            raise ValueError("give exactly one of url (a Qdrant server) and path (local mode)")
        if vector_size < 1:
            raise ValueError(f"vector_size must be at least 1, got {vector_size}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be positive, got {timeout_s}")
        self.url = url
        self.path = None if path is None else Path(path)
        self.where = redact(url) if url is not None else f"(local mode) {self.path}"
        self.collection = collection
        self.relations_collection = collection + RELATIONS_SUFFIX
        self.vector_size = vector_size
        self.api_key = api_key
        self.timeout_s = timeout_s
        self.close_timeout_s = close_timeout_s
        self._limiter = trio.CapacityLimiter(1 if url is None else max_calls)
        self._conn: QdrantConnection | None = None
        self._open = False
        self._ran = False
        self._server_version: str | None = None
        # while Qdrant does not answer, calls fail at once (503 MEMORY_UNAVAILABLE) but for
        # one probe a second
        self._probe = DownProbe(
            server="Qdrant",
            where=self.where,
            logger=LOGGER,
            unavailable=MemoryUnavailable,
            down_reason=_down_reason,
        )
        self._writes_total = 0
        self._write_errors_total = 0
        self._reads_total = 0
        self._unavailable_total = 0

    @property
    def shared(self) -> bool:
        """A server may be used by several instances; local mode is this process's alone."""
        return self.url is not None

    @property
    def local(self) -> bool:
        """Whether the client runs in local mode (``path``)."""
        return self.url is None

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[QdrantStore] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Reach Qdrant, prepare the collections, then serve until cancelled.

        Reports started (with this store as the handle) once both collections exist with the
        right vector size.

        Raises:
            QdrantUnreachable: no Qdrant answered within ``timeout_s``.
            QdrantVectorSizeMismatch: the entity collection has another vector size.
            QdrantPathLocked: another process holds the local-mode folder.
            QdrantStartError: Qdrant refused to create a collection or an index.
            RuntimeError: ``run`` was called twice.

        Cancellation:
            Cancelling ``run`` is the way to close the store. During the start, the check that
            reaches the server is abandoned at ``timeout_s`` (its thread ends with the
            client's own timeout).

        Resource handling:
            On exit (normal, error or cancellation) running calls are awaited, then the client
            is closed, both bounded by ``close_timeout_s``.
        """
        if self._ran:
            raise RuntimeError("QdrantStore.run() can only be called once; create a new one")
        self._ran = True
        try:
            await self._start()
            self._open = True
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            self._open = False
            if not await close_within(self.close_timeout_s, self._close):
                LOGGER.warning(
                    "closing the Qdrant memory store %s took longer than %.1fs; calls were "
                    "still running",
                    self.where,
                    self.close_timeout_s,
                )

    async def _start(self) -> None:
        # The client's timeout bounds each request's phases, not the whole: the start is
        # bounded as a whole here, and the thread left behind ends with the client's timeout.
        # Outside the limiter: an abandoned thread would otherwise hold a token, and the close
        # that follows the failed start would wait for it.
        with trio.move_on_after(self.timeout_s) as scope:
            conn = await trio.to_thread.run_sync(self._connect_sync, abandon_on_cancel=True)
        if scope.cancelled_caught:
            raise QdrantUnreachable(
                self.where,
                f"no Qdrant answered within memory.qdrant_config.timeout ({self.timeout_s:g} s)",
                "Check that Qdrant is running and that memory.qdrant_config.url (or QDRANT_URL) "
                "is right and reachable from this machine.",
            )
        self._conn = conn
        try:
            await trio.to_thread.run_sync(self._prepare_sync, conn, limiter=self._limiter)
        except BaseException:
            await trio.to_thread.run_sync(conn.client.close, limiter=self._limiter)
            self._conn = None
            raise

    def _connect_sync(self) -> QdrantConnection:
        from qdrant_client import QdrantClient
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        if self.url is None:
            assert self.path is not None
            # qdrant-client leaves its lock file open when the lock is taken: ask first
            self._check_folder_free(self.path)
            try:
                client = QdrantClient(path=str(self.path), force_disable_check_same_thread=True)
            except RuntimeError as exc:  # taken between the check and now
                raise self._folder_locked(str(exc)) from exc
            self._server_version = f"local mode (qdrant-client {client.info().version})"
        else:
            client = QdrantClient(
                url=self.url,
                api_key=self.api_key,
                timeout=max(1, math.ceil(self.timeout_s)),
                # our own request below says whether the server answers
                check_compatibility=False,
            )
            try:
                self._server_version = client.info().version
            except (ResponseHandlingException, UnexpectedResponse) as exc:
                client.close()
                raise QdrantUnreachable(
                    self.where,
                    f"no Qdrant answered ({_reason(exc)})",
                    "Check that Qdrant is running and that memory.qdrant_config.url (or "
                    "QDRANT_URL) is right and reachable from this machine.",
                ) from exc
        return QdrantConnection(
            client=client,
            entities=self.collection,
            relations=self.relations_collection,
            local=self.url is None,
        )

    def _check_folder_free(self, path: Path) -> None:
        """Raise :class:`QdrantPathLocked` when another client holds ``path``'s lock file (the
        lock qdrant-client's local mode takes: portalocker's exclusive lock on ``.lock``)."""
        import portalocker

        lock_path = path / ".lock"
        if not lock_path.exists():
            return
        with lock_path.open("r+") as lock_file:
            try:
                portalocker.lock(
                    lock_file, portalocker.LockFlags.EXCLUSIVE | portalocker.LockFlags.NON_BLOCKING
                )
            except portalocker.exceptions.LockException as exc:
                raise self._folder_locked(f"{lock_path} is locked") from exc
            portalocker.unlock(lock_file)

    def _folder_locked(self, reason: str) -> QdrantPathLocked:
        return QdrantPathLocked(
            self.where,
            f"the folder is in use by another process ({reason})",
            "Stop the other Caxton (or `caxton` command) using it, or point "
            "memory.qdrant_config.path at another folder; local mode serves one process.",
        )

    def _prepare_sync(self, conn: QdrantConnection) -> None:
        from qdrant_client import models
        from qdrant_client.http.exceptions import ApiException

        client = conn.client
        try:
            if client.collection_exists(conn.entities):
                existing = _vector_size(client.get_collection(conn.entities))
                if existing != self.vector_size:
                    raise QdrantVectorSizeMismatch(
                        self.where, conn.entities, existing, self.vector_size
                    )
            else:
                client.create_collection(
                    conn.entities,
                    vectors_config=models.VectorParams(
                        size=self.vector_size, distance=models.Distance.COSINE
                    ),
                )
                LOGGER.info("created the Qdrant collection %s in %s", conn.entities, self.where)
            if not client.collection_exists(conn.relations):
                # relations carry no vector: a collection without vector fields
                client.create_collection(conn.relations, vectors_config={})
                LOGGER.info("created the Qdrant collection %s in %s", conn.relations, self.where)
            if not conn.local:  # local mode has no payload indexes (and warns about them)
                for collection, fields in (
                    (conn.entities, ENTITY_INDEXES),
                    (conn.relations, RELATION_INDEXES),
                ):
                    indexed = client.get_collection(collection).payload_schema
                    for field in fields:
                        if field not in indexed:
                            client.create_payload_index(
                                collection,
                                field,
                                field_schema=models.PayloadSchemaType.KEYWORD,
                                wait=True,
                            )
        except QdrantStartError:
            raise
        except ApiException as exc:
            raise QdrantStartError(
                self.where,
                f"preparing the collections {conn.entities!r} and {conn.relations!r} failed "
                f"({_reason(exc)})",
                "Check that the API key may create collections and indexes, or create them "
                "yourself, then start again.",
            ) from exc

    async def _close(self) -> None:
        async with holding_every_token(self._limiter):  # the running calls are done
            conn, self._conn = self._conn, None
            if conn is not None:
                await trio.to_thread.run_sync(conn.client.close)

    # ----------------------------------------------------------------------------- calls

    async def read_statements(
        self, fns: Sequence[Callable[[QdrantConnection], T]]
    ) -> list[T] | None:
        """A single read in :meth:`execute_fn`; None for several (one round trip in one
        transaction costs less here than reads side by side)."""
        if len(fns) != 1:
            return None
        return [await self.execute_fn(fns[0])]

    async def execute_fn(self, fn: Callable[[QdrantConnection], T]) -> T:
        """Run ``fn(conn)`` in a worker thread (no transaction: Qdrant has none).

        Raises:
            QdrantStoreClosed: the store is not running.
            MemoryUnavailable: Qdrant did not answer (at once while it is known down, but for
                one probe a second).
            Exception: whatever else ``fn`` raised.

        Cancellation:
            A call that has started runs to completion (bounded by ``timeout_s`` per
            request); cancellation takes effect when it returns.

        Resource handling:
            At most the limiter's tokens of calls run at once (one in local mode).
        """
        self._reads_total += 1
        return await self._call(fn)

    async def execute_write_fn(self, fn: Callable[[QdrantConnection], T]) -> T:
        """Run ``fn(conn)`` in a worker thread; its requests are sent with ``wait=True``, so
        they are applied when this returns. A failure part-way leaves the requests before it
        applied (no rollback).

        Raises, Cancellation, Resource handling: as :meth:`execute_fn`.
        """
        self._writes_total += 1
        try:
            return await self._call(fn)
        except BaseException:
            self._write_errors_total += 1
            raise

    async def idempotent_write(self, fn: Callable[[QdrantConnection], T]) -> T:
        """As :meth:`execute_write_fn` (a Qdrant write is no transaction to begin with)."""
        return await self.execute_write_fn(fn)

    async def ping(self) -> None:
        """Ask Qdrant whether the entity collection exists (readiness).

        Raises:
            QdrantStoreClosed, MemoryUnavailable: as :meth:`execute_fn`.
        """
        await self._call(self._check_collection)

    async def size_bytes(self) -> int:
        """The size of the local-mode folder in bytes; 0 for a server (its disk is its own
        to report)."""
        if self.path is None:
            return 0
        return await trio.to_thread.run_sync(_folder_size, self.path)

    async def _call(self, fn: Callable[[QdrantConnection], T]) -> T:
        if not self._open:
            raise QdrantStoreClosed(self.where)
        with self._probe.call():
            return await trio.to_thread.run_sync(self._run_call, fn, limiter=self._limiter)

    def _run_call(self, fn: Callable[[QdrantConnection], T]) -> T:
        from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

        conn = self._conn
        if conn is None:
            raise QdrantStoreClosed(self.where)
        try:
            return fn(conn)
        except ResponseHandlingException as exc:  # the request did not get an answer
            self._unavailable_total += 1
            raise MemoryUnavailable(self.where, _reason(exc)) from exc
        except UnexpectedResponse as exc:
            if exc.status_code in _UNAVAILABLE_STATUSES:
                self._unavailable_total += 1
                raise MemoryUnavailable(self.where, _reason(exc)) from exc
            raise

    def _check_collection(self, conn: QdrantConnection) -> None:
        if not conn.client.collection_exists(conn.entities):
            raise MemoryUnavailable(
                self.where, f"the collection {conn.entities!r} no longer exists"
            )

    # ----------------------------------------------------------------------------- checks

    def statistics(self) -> QdrantStoreStatistics:
        """Return a snapshot of the store's counters."""
        return QdrantStoreStatistics(
            qdrant=self.where,
            open=self._open,
            local=self.local,
            server_version=self._server_version,
            collection=self.collection,
            vector_size=self.vector_size,
            writes_total=self._writes_total,
            write_errors_total=self._write_errors_total,
            reads_total=self._reads_total,
            unavailable_total=self._unavailable_total + self._probe.refused_total,
        )


def _vector_size(info: Any) -> int:
    """The size of the collection's unnamed vector (-1 when it has named vectors only)."""
    vectors = info.config.params.vectors
    size = getattr(vectors, "size", None)
    return int(size) if size is not None else -1


def _down_reason(exc: Exception) -> str | None:
    """Every :class:`MemoryUnavailable` says that Qdrant does not answer."""
    return exc.reason if isinstance(exc, MemoryUnavailable) else None


def _reason(exc: BaseException) -> str:
    source = getattr(exc, "source", None)
    if isinstance(source, BaseException):
        exc = source
    text = " ".join(line.strip() for line in str(exc).splitlines()[:2] if line.strip())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _folder_size(path: Path) -> int:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += (Path(root) / name).stat().st_size
            except OSError:  # removed while walking
                continue
    return total


__all__ = [
    "QdrantConnection",
    "QdrantStore",
    "QdrantStoreStatistics",
    "redact",
]
