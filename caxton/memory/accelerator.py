"""The search accelerator: an in-process mirror of DuckDB's embeddings (DESIGN §6).

DuckDB stays the truth; the accelerator is a copy that makes searches fast. It holds the numpy
mirror (:mod:`caxton.memory.index`) and, above ``hnsw_threshold`` rows, an HNSW graph over it
(:mod:`caxton.memory.layered`). Its lifecycle:

* **load** — :meth:`SearchAccelerator.reload` reads every embedding and swaps in a fresh mirror;
* **follow** — :meth:`SearchAccelerator.follow` applies each committed write; if that ever
  fails, the accelerator stops answering until the next reload;
* **graph** — a task in :meth:`SearchAccelerator.run` builds the HNSW graph in a worker thread
  and saves it with the mirror next to the DB (``<db file>.hnsw``, :mod:`saved_index
  <caxton.memory.saved_index>`) after a build, every ``save_interval`` seconds when it changed,
  and at shutdown; a start whose database still matches those files loads both instead of
  reading every embedding and rebuilding;
* **search** — :meth:`SearchAccelerator.rank` answers from the mirror (through the graph once
  it is installed) and falls back to the store's SQL search (:meth:`MemorySQL.search
  <caxton.memory.sql.MemorySQL.search>`) when the mirror is off or not ready, or when the
  caller asks for the exact path. On a shared store (PostgreSQL) the mirror is always off:
  other instances write rows this process would not see, so every search runs in SQL.

Every mirror operation runs under the accelerator's own ``CapacityLimiter(1)``, in a worker
thread, but for a search of a mirror of at most :data:`INLINE_SEARCH_ROWS` rows, which runs on
the event loop (under the same limiter): scanning so few rows costs less than the hand-off to
a thread and back. Graph builds and loads run under a second limiter, on a snapshot.
"""

from __future__ import annotations

import functools
import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn, TypedDict, TypeVar, Unpack

import attrs
import trio

from caxton.memory import hnsw, queries, saved_index
from caxton.memory.index import IndexEntry
from caxton.memory.layered import DEFAULT_HNSW_THRESHOLD, LayeredIndex

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    import numpy as np
    from numpy.typing import NDArray

    from caxton.memory.sql import MemorySQL
    from caxton.memory.types import Entity, Scope
    from caxton.store.backend import Backend

LOGGER = logging.getLogger("caxton.memory")
T = TypeVar("T")

HNSW_SAVE_INTERVAL_S = 600.0
HNSW_SHUTDOWN_SAVE_S = 30.0
#: A mirror of at most this many rows is searched on the event loop: its scan (a matrix-vector
#: product over at most 6 MB, ~0.1 ms) costs no more than handing the search to a worker
#: thread and back, which also takes the GIL twice. Below the default HNSW threshold (with
#: a smaller ``hnsw_threshold`` it is a graph search, faster still).
INLINE_SEARCH_ROWS = 4096


@attrs.frozen(kw_only=True)
class AcceleratorStatistics:
    """A snapshot of the accelerator's state and counters.

    The fields carry the names :class:`caxton.memory.MemoryStatistics` reports them under.
    """

    accelerator_enabled: bool
    accelerator_ready: bool
    index_rows: int
    hnsw_ready: bool
    hnsw_building: bool
    hnsw_rows: int
    hnsw_searches: int
    hnsw_fallbacks: int
    hnsw_builds: int
    hnsw_loads: int
    hnsw_build_seconds: float


class SearchFilters(TypedDict):
    """Which entities a search may return, and how many: the mirror's and DuckDB's terms."""

    limit: int
    min_similarity: float
    scope: Scope | None
    agent: str | None
    entity_types: Sequence[str] | None


class SearchAccelerator:
    """The numpy mirror (plus HNSW graph) of the store's embeddings, and the exact fallback.

    Args:
        store: the running store holding the memory tables (read for reloads and SQL
            searches; never written).
        dim: the embedding length.
        sql: the memory SQL of the store's dialect (DuckDB's by default).
        enabled: keep the mirror; when False every search takes the exact path.
        hnsw_threshold: keep an HNSW graph over the mirror from this many rows; None never
            does.
        hnsw_path: where the graph is saved (plus a ``.json`` sidecar); None: never saved.
        save_interval: save a changed graph this often, in seconds (0: only at shutdown).
        writes: the lock every write to the memory tables holds (a save holds it, so the
            files describe the rows the database has).
        ef_search: the candidates a SQL search through a vector index considers (pgvector's
            ``hnsw.ef_search``; DuckDB has no such index).
    """

    def __init__(
        self,
        store: Backend,
        dim: int,
        *,
        sql: MemorySQL = queries,
        enabled: bool = True,
        hnsw_threshold: int | None = DEFAULT_HNSW_THRESHOLD,
        hnsw_path: Path | None = None,
        save_interval: float = HNSW_SAVE_INTERVAL_S,
        ef_search: int = 100,
        writes: trio.Lock | None = None,
    ) -> None:
        self.store = store
        self._writes = trio.Lock() if writes is None else writes
        self.sql = sql
        self.ef_search = ef_search
        self.dim = dim
        self.enabled = enabled
        self.hnsw_threshold = hnsw_threshold
        self.hnsw_path = hnsw_path
        self.save_interval = save_interval
        self._index = LayeredIndex(dim, threshold=hnsw_threshold)
        self._ready = False
        self._index_limiter = trio.CapacityLimiter(1)
        self._graph_limiter = trio.CapacityLimiter(1)
        # A save reads the graph and mirror while searches go on: it holds the memory writes
        # (no upsert or reload meanwhile) and this lock, which a build takes to start and to
        # install its graph; it runs in a thread of its own limiter, not the index's.
        self._graph_lock = trio.Lock()
        self._save_limiter = trio.CapacityLimiter(1)
        self._graph_wanted = trio.Event()
        self._graph_attempted = trio.Event()  # set (then replaced) after each load or build
        self._graph_builds = 0
        self._graph_loads = 0
        self._graph_build_seconds = 0.0

    @property
    def ready(self) -> bool:
        """Whether searches are answered from the mirror (else by DuckDB's exact scan)."""
        return self._ready

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Keep the HNSW graph built and saved until cancelled.

        Cancellation:
            Cancelling ``run`` stops the graph tasks (a build stops at its next chunk).

        Resource handling:
            A changed graph is saved at exit (shielded, bounded by ``HNSW_SHUTDOWN_SAVE_S``);
            the mirror and graph are dropped when ``run`` exits.
        """
        try:
            async with trio.open_nursery() as nursery:
                if self.enabled and self.hnsw_threshold is not None:
                    nursery.start_soon(self._maintain_graph)
                    if self.hnsw_path is not None and self.save_interval > 0:
                        nursery.start_soon(self._save_periodically)
                task_status.started()
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + HNSW_SHUTDOWN_SAVE_S
                try:
                    await self.save_graph()
                except Exception:
                    LOGGER.exception("saving the HNSW index at shutdown failed")
            self._ready = False
            self._index.clear()
        raise AssertionError("the search accelerator stopped without being cancelled")

    async def reload(self, *, saved: bool = False) -> int:
        """Load the mirror afresh from the store; the caller holds ``writes`` meanwhile.

        ``saved``: take the mirror and graph saved next to the DB when they match it
        (:mod:`caxton.memory.saved_index`) instead of reading every embedding.

        Returns:
            The number of vectors in the store.

        Cancellation:
            Safe to cancel; the old mirror is kept until the new one is complete.

        Resource handling:
            Reads every embedding once (~1 s per 100k), or the saved files (a few seconds at
            1M rows).
        """
        if not self.enabled:
            return await self.store.execute_fn(self.sql.entity_count)
        content = await self._saved_content()
        if saved and content is not None and (count := await self._load_saved(content)):
            return count
        fresh = LayeredIndex(self.dim, threshold=self.hnsw_threshold)

        def fill(conn: Any) -> int:
            # The fresh mirror is this thread's alone until it replaces the old one below.
            fresh.reserve(self.sql.entity_count(conn))
            for entries, matrix in self.sql.index_chunks(conn):
                fresh.upsert(entries, matrix)
            return len(fresh)

        count = await self.store.execute_fn(fill)
        if content is not None:
            # At start the saved files were not usable as a whole (else they were loaded
            # above): the graph alone may be, and then both are saved again at the next save.
            await self._install_saved_graph(fresh, content, resave=saved)
        self._index = fresh
        self._ready = True
        self._want_graph()
        return count

    async def _saved_content(self) -> str | None:
        """The database's content token when there are saved files it may match (else None:
        computing it reads every embedding in the database, ~1 s at 1M rows)."""
        path = self.hnsw_path
        if path is None or self.hnsw_threshold is None:
            return None
        if not await trio.to_thread.run_sync(saved_index.sidecar_path(path).exists):
            return None
        return await self.store.execute_fn(self.sql.content_token)

    async def _install_saved_graph(
        self, fresh: LayeredIndex, content: str, *, resave: bool
    ) -> None:
        """Give ``fresh`` (read from the database) the saved graph if it still matches
        (``resave``: and mark it to be saved again with the mirror)."""
        path = self.hnsw_path
        if path is None or not fresh.wants_graph():
            return
        graph = await trio.to_thread.run_sync(
            functools.partial(saved_index.load_graph, path, self.dim, content),
            limiter=self._graph_limiter,
        )
        if graph is None:
            return
        try:
            fresh.install(graph)
        except ValueError as exc:
            LOGGER.warning("not using the saved HNSW graph %s: %s; rebuilding it", path, exc)
            return
        fresh.dirty = resave
        self._graph_loads += 1
        self._graph_installed()
        LOGGER.info("HNSW graph over %d entities loaded from %s", len(graph), path)

    async def _load_saved(self, content: str) -> int | None:
        path = self.hnsw_path
        if path is None or self.hnsw_threshold is None:
            return None
        started = time.perf_counter()
        loaded = await trio.to_thread.run_sync(
            functools.partial(saved_index.load, path, self.dim, self.hnsw_threshold, content),
            limiter=self._graph_limiter,
        )
        if loaded is None:
            return None
        self._index = loaded
        self._ready = True
        self._graph_loads += 1
        self._graph_installed()
        LOGGER.info(
            "search index over %d entities loaded from %s in %.1fs",
            len(loaded),
            path,
            time.perf_counter() - started,
        )
        return len(loaded)

    async def follow(
        self,
        *,
        upsert: tuple[Sequence[Entity], NDArray[np.float32]] | None = None,
        remove: Sequence[str] = (),
    ) -> None:
        """Apply a committed write: drop ``remove``, then store ``upsert``'s rows.

        A failure is logged and leaves the accelerator not ready (searches take the exact path
        until the next :meth:`reload`); it is not raised, since the write itself committed.

        Cancellation:
            Callers shield it together with the write it follows.
        """
        if not (self.enabled and self._ready):
            return
        try:
            if remove:
                await self._in_index(lambda index: index.remove(remove))
            if upsert is not None:
                entities, vectors = upsert
                entries = [_index_entry(e) for e in entities]
                await self._in_index(lambda index: index.upsert(entries, vectors))
            self._want_graph()
        except Exception:
            LOGGER.exception(
                "the search accelerator could not follow a write; searches use the "
                "exact path until the next rebuild"
            )
            self._ready = False

    # ----------------------------------------------------------------------------- search

    async def rank(
        self, vector: NDArray[np.float32], *, exact: bool = False, **filters: Unpack[SearchFilters]
    ) -> list[tuple[str, float]]:
        """(name, similarity) of the best matches ``filters`` allow, best first.

        From the mirror when it is ready, else (or with ``exact``) from the store's SQL search
        (exact with ``exact``; through the dialect's vector index, if it has one, otherwise).

        Cancellation:
            Safe to cancel; nothing is written.
        """
        if not self.ranks_in_process(exact=exact):
            return await self.store.execute_fn(
                functools.partial(self.rank_in_sql, vector=vector, exact=exact, **filters)
            )
        index = self._index
        if len(index) <= INLINE_SEARCH_ROWS:
            async with self._index_limiter:  # no write or build of the mirror meanwhile
                return index.search(vector, **filters)
        return await self._in_index(lambda index: index.search(vector, **filters))

    def ranks_in_process(self, *, exact: bool = False) -> bool:
        """Whether :meth:`rank` answers from the mirror now (else with one SQL search)."""
        return not exact and self.enabled and self._ready

    def holds(self, name: str) -> bool:
        """Whether the mirror has an entry for ``name`` (whatever its state)."""
        return name in self._index

    def rank_in_sql(
        self,
        conn: Any,
        *,
        vector: NDArray[np.float32],
        exact: bool = False,
        **filters: Unpack[SearchFilters],
    ) -> list[tuple[str, float]]:
        """The SQL search :meth:`rank` runs when it does not answer from the mirror, as a
        ``fn(conn)`` step (so a caller can read its hits in the same transaction)."""
        return self.sql.search(conn, query=vector, exact=exact, ef_search=self.ef_search, **filters)

    def read_in_sql(
        self,
        conn: Any,
        *,
        vector: NDArray[np.float32],
        exact: bool = False,
        **filters: Unpack[SearchFilters],
    ) -> tuple[list[tuple[str, float]], dict[str, Entity]]:
        """:meth:`rank_in_sql` and the hits' entities, as the dialect's ``search_entities``
        (on PostgreSQL one statement)."""
        return self.sql.search_entities(
            conn, query=vector, exact=exact, ef_search=self.ef_search, **filters
        )

    async def _in_index(self, fn: Callable[[LayeredIndex], T]) -> T:
        index = self._index
        return await trio.to_thread.run_sync(fn, index, limiter=self._index_limiter)

    # ----------------------------------------------------------------------------- HNSW graph

    def _want_graph(self) -> None:
        if self._index.wants_graph():
            self._graph_wanted.set()

    async def _maintain_graph(self) -> NoReturn:
        while True:
            await self._graph_wanted.wait()
            self._graph_wanted = trio.Event()
            await self._build_graph(self._index)

    async def _build_graph(self, index: LayeredIndex) -> None:
        async with self._graph_lock:
            snapshot = await trio.to_thread.run_sync(index.begin_build, limiter=self._index_limiter)
        if snapshot is None:
            return
        keys, vectors = snapshot
        started = time.perf_counter()
        try:
            graph = await trio.to_thread.run_sync(
                functools.partial(
                    hnsw.build, self.dim, keys, vectors, checkpoint=trio.from_thread.check_cancelled
                ),
                limiter=self._graph_limiter,
            )
        except Exception:
            LOGGER.exception("building the HNSW index failed; searches use the numpy scan")
            async with self._graph_lock:
                await trio.to_thread.run_sync(index.abort_build, limiter=self._index_limiter)
            return
        self._graph_builds += 1
        self._graph_build_seconds = time.perf_counter() - started
        async with self._graph_lock:
            await trio.to_thread.run_sync(
                functools.partial(index.finish_build, graph, saved=False),
                limiter=self._index_limiter,
            )
        self._graph_installed()
        LOGGER.info(
            "HNSW index over %d entities built in %.1fs", len(keys), self._graph_build_seconds
        )
        try:
            await self.save_graph()
        except Exception:
            LOGGER.exception("saving the HNSW index failed; retrying later")

    def _graph_installed(self) -> None:
        attempted, self._graph_attempted = self._graph_attempted, trio.Event()
        attempted.set()

    async def wait_graph(self) -> None:
        """Wait until the HNSW graph is installed (at once when it is).

        Cancellation:
            Safe to cancel; waits forever when no graph is wanted (below ``hnsw_threshold``).
        """
        while self._index.graph is None:
            await self._graph_attempted.wait()

    async def _save_periodically(self) -> NoReturn:
        while True:
            await trio.sleep(self.save_interval)
            try:
                await self.save_graph()
            except Exception:
                LOGGER.exception("saving the HNSW index failed; retrying later")

    async def save_graph(self) -> bool:
        """Save the graph and the mirror next to the DB (:mod:`caxton.memory.saved_index`) if
        the graph changed since it was last saved or loaded.

        Returns:
            Whether the files were written.

        Cancellation:
            A started save completes.

        Resource handling:
            Holds the memory writes (``writes``) while the database's content token is read
            and the files are written (~4 s at 1M rows), so they describe the same rows, and
            keeps a graph build from starting or installing meanwhile. Searches go on: they
            only read the graph and mirror, as the save does.
        """
        path = self.hnsw_path
        if path is None:
            return False
        async with self._writes:
            index = self._index
            if not self._ready or index.graph is None or not index.dirty or index.building:
                return False
            content = await self.store.execute_fn(self.sql.content_token)
            if content is None:
                return False

            def save() -> bool:
                if index.graph is None or not index.dirty or index.building:
                    return False
                saved_index.save(index, path, content)
                index.dirty = False
                return True

            async with self._graph_lock:
                return await trio.to_thread.run_sync(save, limiter=self._save_limiter)

    # ----------------------------------------------------------------------------- statistics

    def ram_bytes(self, rows: int) -> int:
        """The RAM the mirror and graph need for ``rows`` entities (0 when the mirror is off)."""
        if not self.enabled:
            return 0
        return hnsw.index_ram_bytes(rows, self.dim, threshold=self.hnsw_threshold)

    def statistics(self) -> AcceleratorStatistics:
        """Return a snapshot of the accelerator's state and counters."""
        graph = self._index.graph
        return AcceleratorStatistics(
            accelerator_enabled=self.enabled,
            accelerator_ready=self._ready,
            index_rows=len(self._index),
            hnsw_ready=graph is not None,
            hnsw_building=self._index.building,
            hnsw_rows=0 if graph is None else len(graph),
            hnsw_searches=self._index.graph_searches,
            hnsw_fallbacks=self._index.fallbacks,
            hnsw_builds=self._graph_builds,
            hnsw_loads=self._graph_loads,
            hnsw_build_seconds=self._graph_build_seconds,
        )


def _index_entry(entity: Entity) -> IndexEntry:
    return IndexEntry(
        name=entity.name, entity_type=entity.entity_type, scope=entity.scope, agent=entity.agent
    )
