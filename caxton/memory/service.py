"""The memory component: entities, relations, semantic search and graph walks (DESIGN §6).

The store (a :class:`caxton.store.backend.Backend`: DuckDB, or PostgreSQL shared by several
instances) is the truth; the service speaks to it through the memory SQL of its dialect
(:class:`caxton.memory.sql.MemorySQL`). Every mutation runs under one lock as: read what exists
-> plan the final state (:mod:`caxton.memory.plan`, pure) -> embed the changed entities -> one
write transaction (which also takes the dialect's write lock and reads the totals) -> update
the search accelerator. The last two steps are shielded from cancellation so a committed write
always reaches the accelerator.

On a shared store (``store.shared``) nothing another instance could change is kept here: the
accelerator is off (searches run in SQL, through pgvector's HNSW index), and the counts come
from the database on every write, ``stats`` and ``capacity``.

The accelerator (the numpy mirror and its HNSW graph, their building, saving and the exact
DuckDB fallback) is :mod:`caxton.memory.accelerator`; export and import formats and the import
plan are :mod:`caxton.memory.transfer`. This module is the shell that runs them in order.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import functools
import logging
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TypeVar, Unpack

import attrs
import numpy as np
import trio
from numpy.typing import NDArray

from caxton.errors import CaxtonError, Conflict, NotFound
from caxton.latency import LatencyWindow
from caxton.memory import queries, sql_shared, transfer, validation
from caxton.memory.accelerator import HNSW_SAVE_INTERVAL_S, SearchAccelerator, SearchFilters
from caxton.memory.entity_cache import DEFAULT_CACHE_BYTES, EntityCache
from caxton.memory.errors import MemoryLimitExceeded
from caxton.memory.layered import DEFAULT_HNSW_THRESHOLD
from caxton.memory.plan import EntityPlan, plan_entities, plan_relations
from caxton.memory.read_batches import ReadBatcher
from caxton.memory.search_batches import DEFAULT_SLOTS as DEFAULT_SEARCH_SLOTS
from caxton.memory.search_batches import SearchBatcher
from caxton.memory.types import (
    Capacity,
    Entity,
    Graph,
    ImportReport,
    MemoryStatistics,
    MemoryStats,
    MergeStrategy,
    NewEntity,
    NewRelation,
    OptimizeReport,
    Relation,
    Scope,
    SearchHit,
)
from caxton.tracing import span

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from caxton.errors import JSONValue
    from caxton.memory.embedder import TextEncoder
    from caxton.memory.sql import MemorySQL, RelationKey
    from caxton.store import Connection
    from caxton.store.backend import Backend

T = TypeVar("T")

LOGGER = logging.getLogger("caxton.memory")

MAX_SEARCH_LIMIT = 1000
MAX_GRAPH_DEPTH = 10
CAPACITY_WARNING_RATIO = 0.9
#: How often a write on a shared store is planned again when other instances changed the
#: entities it was planned on, before it gives up with a Conflict.
MAX_REPLANS = 10
#: How old the totals :meth:`MemoryService.fresh_statistics` reports may be on a shared store
#: before it reads them again (seconds).
COUNTS_REFRESH_S = 5.0
#: The pause before planning again grows by up to this much with each try (seconds).
REPLAN_PAUSE_S = 0.02
#: How many entity names the service remembers the last change of (see _changed_since);
#: past that it forgets them all and treats every earlier plan as possibly stale.
CHANGE_LOG_NAMES = 4096
#: entities added to the entity cache between checkpoints while it is filled (~2 ms)
FILL_CHUNK = 2000


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MemoryService:
    """Memory over the store and the embedder.

    Args:
        store: the running store, migrated with :data:`caxton.memory.MEMORY_MIGRATIONS`
            (DuckDB) or :data:`caxton.memory.MEMORY_POSTGRES_MIGRATIONS` (PostgreSQL).
        embedder: the running embedder (:class:`caxton.memory.Embedder`).
        sql: the memory SQL of the store's dialect: :mod:`caxton.memory.queries` (DuckDB,
            the default), :mod:`caxton.memory.postgres_sql`, or :mod:`caxton.memory.qdrant_memory`
            with a :class:`caxton.store.qdrant.QdrantStore` (no transactions there: this
            service's lock is what keeps its writes apart).
        max_entities: ``memory.max_entities``; None for no limit.
        accelerator: keep the numpy mirror for searches (the exact path is always available
            with ``search(..., exact=True)``). Always off on a shared store.
        hnsw_ef_search: candidates of a SQL search through a vector index
            (``storage.postgres.hnsw_ef_search``; at least ``limit`` are used).
        search_slots: on PostgreSQL, index search statements in flight at once
            (:class:`caxton.memory.search_batches.SearchBatcher`); the server gives each of
            ``server.workers`` processes its share (``search_batches.default_slots``).
        latency_window: searches the p50/p99 figures cover.
        hnsw_threshold: keep an HNSW graph over the accelerator from this many entities; None
            never does.
        hnsw_path: where the graph is saved; by default ``<db file>.hnsw`` (plus the mirror's
            ``.mirror`` and a ``.json`` sidecar) for a store with a file. None with
            ``persist_hnsw=False``: never saved.
        persist_hnsw: save the graph and mirror after builds, every ``hnsw_save_interval``
            seconds when the graph changed, and at shutdown; load both at start when they
            match the database (:mod:`caxton.memory.saved_index`).
        counts_refresh_s: on a shared store, how old (in seconds) the entity and relation
            totals may be when :meth:`fresh_statistics` is asked (health, ``/metrics``, the
            stats endpoint) before it reads them again; nothing reads them while nobody asks.
            This instance's writes, ``stats`` and ``capacity`` count them at once.
        entity_cache_bytes: how much of recently read entities to keep for searches and
            reads by name (:mod:`caxton.memory.entity_cache`; 0: none). Never on a shared
            store, whose rows other instances change.
    """

    def __init__(
        self,
        store: Backend,
        embedder: TextEncoder,
        *,
        sql: MemorySQL = queries,
        hnsw_ef_search: int = 100,
        search_slots: int = DEFAULT_SEARCH_SLOTS,
        max_entities: int | None = 100_000,
        accelerator: bool = True,
        latency_window: int = 1000,
        on_search: Callable[[float], None] | None = None,
        hnsw_threshold: int | None = DEFAULT_HNSW_THRESHOLD,
        hnsw_path: Path | None = None,
        persist_hnsw: bool = True,
        hnsw_save_interval: float = HNSW_SAVE_INTERVAL_S,
        counts_refresh_s: float = COUNTS_REFRESH_S,
        entity_cache_bytes: int = DEFAULT_CACHE_BYTES,
    ) -> None:
        if max_entities is not None and max_entities < 1:
            raise ValueError(f"max_entities must be at least 1, got {max_entities}")
        if hnsw_ef_search < 1:
            raise ValueError(f"hnsw_ef_search must be at least 1, got {hnsw_ef_search}")
        if sql.dialect != store.dialect:
            raise ValueError(
                f"the memory SQL is for {sql.dialect} but the store is {store.dialect}: pass "
                "the SQL module of the store's dialect"
            )
        self.store = store
        self.sql = sql
        self.counts_refresh_s = counts_refresh_s
        self.embedder = embedder
        self.max_entities = max_entities
        # Another instance writes rows a process-local mirror would not see.
        enabled = accelerator and not store.shared
        if not (persist_hnsw and enabled):
            hnsw_path = None
        elif hnsw_path is None:
            hnsw_path = _beside_database(store)
        self._write_lock = trio.Lock()
        #: moves with every commit that may change entities (see _commit_group)
        self._entity_epoch = 0
        #: the epoch of the latest change of each recently changed name
        self._changed_at: dict[str, int] = {}
        #: up to this epoch any entity may have changed (unnamed changes, a forgotten log)
        self._all_changed_at = 0
        #: names of the commits sent to the store that the accelerator has not followed yet
        #: (one count per commit), and how many such commits did not name what they touch
        self._unfollowed: collections.Counter[str] = collections.Counter()
        self._unfollowed_unnamed = 0
        self._accelerator = SearchAccelerator(
            store,
            embedder.dim,
            sql=sql,
            enabled=enabled,
            hnsw_threshold=hnsw_threshold,
            hnsw_path=hnsw_path,
            save_interval=hnsw_save_interval,
            ef_search=hnsw_ef_search,
            writes=self._write_lock,
        )
        self._entity_writes: list[_EntityWrite] = []
        self._name_locks: dict[str, _NameLock] = {}
        # On PostgreSQL, concurrent index searches with the same terms share statements.
        self._search_batcher = (
            SearchBatcher(store, ef_search=hnsw_ef_search, slots=search_slots)
            if store.dialect == "postgres"
            else None
        )
        # On a shared store (no entity cache), concurrent reads by name share statements.
        self._read_batcher = ReadBatcher(self._fetch_entities) if store.shared else None
        # Only this process writes a store that is not shared, so its rows can be cached.
        self._entity_cache = None if store.shared else EntityCache(entity_cache_bytes)
        #: a fill of the entity cache is asked for (at start, after a rebuild)
        self._fill_wanted = False
        self._fill_wake = trio.Event()
        #: set while no fill is asked for or running
        self._cache_filled = trio.Event()
        self._cache_filled.set()
        self._fill_seconds = 0.0
        self._latency = LatencyWindow(latency_window)
        self._on_search = on_search
        self._entity_count = 0
        #: when the totals were last counted or tried (time.monotonic()), one count at a time
        self._counted_at = float("-inf")
        self._counting = trio.Lock()
        self._relation_count = 0

    @property
    def accelerator(self) -> bool:
        """Whether searches use the in-process accelerator (when it is ready)."""
        return self._accelerator.enabled

    @property
    def hnsw_threshold(self) -> int | None:
        """From how many entities the accelerator keeps an HNSW graph (None: never)."""
        return self._accelerator.hnsw_threshold

    @property
    def hnsw_path(self) -> Path | None:
        """Where the HNSW graph is saved (None: never)."""
        return self._accelerator.hnsw_path

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[MemoryService] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Load the accelerator from the store, report started with this service, then wait.

        The HNSW graph (above ``hnsw_threshold`` entities) is loaded or built afterwards by the
        accelerator's background task, so start-up does not wait for it. On a shared store
        (no accelerator) nothing runs meanwhile: the totals are read when asked for
        (:meth:`fresh_statistics`).

        Cancellation:
            Cancelling ``run`` stops the service (a graph build stops at its next chunk); the
            store and embedder are not closed (they belong to outer nurseries).

        Resource handling:
            A changed graph is saved at exit (shielded, bounded by
            :data:`caxton.memory.accelerator.HNSW_SHUTDOWN_SAVE_S`); the accelerator's matrix
            and graph are dropped when ``run`` exits.
        """
        await self.rebuild_index(saved=True)
        async with trio.open_nursery() as nursery:
            await nursery.start(self._accelerator.run)
            if self._search_batcher is not None:
                await nursery.start(self._search_batcher.run)
            nursery.start_soon(self._keep_cache_filled)
            task_status.started(self)
            await trio.sleep_forever()
        raise AssertionError("the memory service stopped without being cancelled")

    async def rebuild_index(self, *, saved: bool = False) -> int:
        """Reload the accelerator from the store (``caxton memory cache-clear --rebuild``).

        ``saved``: from the files saved next to the DB when they still match it (at start).

        Returns:
            The number of vectors loaded.

        Cancellation:
            Safe to cancel; the old accelerator is kept until the new one is complete.

        Resource handling:
            Reads every embedding once (~1 s per 100k), or the saved files; holds the write
            lock so no write slips between the read and the swap.
        """
        async with self._write_lock:
            self._entity_count, self._relation_count = await self.store.execute_fn(self._totals)
            self._counted_at = time.monotonic()
            if self._entity_cache is not None:
                self._entity_cache.invalidate()
            loaded = await self._accelerator.reload(saved=saved)
        self._ask_fill()
        return loaded

    def _ask_fill(self) -> None:
        """Have the entity cache filled afresh in the background (a cache to fill only)."""
        cache = self._entity_cache
        if cache is None or cache.max_bytes == 0:
            return
        self._fill_wanted = True
        if self._cache_filled.is_set():
            self._cache_filled = trio.Event()
        self._fill_wake.set()

    async def _keep_cache_filled(self) -> NoReturn:
        """Fill the entity cache whenever :meth:`_ask_fill` asked for it."""
        while True:
            await self._fill_wake.wait()
            self._fill_wake = trio.Event()
            while self._fill_wanted:
                self._fill_wanted = False
                try:
                    await self._fill_entity_cache()
                except CaxtonError as exc:  # StorageUnavailable and the like: reads fill it
                    LOGGER.warning("the entity cache was not filled: %s", exc.message)
            self._cache_filled.set()

    async def _fill_entity_cache(self) -> None:
        """Put the most recently updated entities into the entity cache, up to its bound.

        Resource handling:
            One read of the entities that fit in the room the cache has left, sized in the
            store before their rows are read (large entities do not make it read more than
            the bound), built in a reader thread, then added a chunk at a time between
            checkpoints.
        """
        cache = self._entity_cache
        assert cache is not None
        started = time.perf_counter()
        cache.start_fill()
        try:
            room = cache.max_bytes - cache.nbytes
            entities = await self.store.execute_fn(
                functools.partial(self.sql.recent_entities, max_bytes=room)
            )
            for start in range(0, len(entities), FILL_CHUNK):
                if not cache.fill(entities[start : start + FILL_CHUNK]):
                    break
                await trio.sleep(0)  # noqa: ASYNC115 - a plain checkpoint, not trio.lowlevel
        finally:
            cache.end_fill()
        self._fill_seconds = time.perf_counter() - started
        LOGGER.info(
            "entity cache filled: %d entities, %.1f MiB, in %.2fs",
            len(cache),
            cache.nbytes / 2**20,
            self._fill_seconds,
        )

    async def wait_entity_cache(self) -> None:
        """Return once no fill of the entity cache is asked for or running."""
        while not self._cache_filled.is_set():
            await self._cache_filled.wait()

    def _totals(self, conn: Connection) -> tuple[int, int]:
        return self.sql.totals(conn)

    async def wait_graph(self) -> None:
        """As :meth:`caxton.memory.accelerator.SearchAccelerator.wait_graph`."""
        await self._accelerator.wait_graph()

    async def save_graph(self) -> bool:
        """As :meth:`caxton.memory.accelerator.SearchAccelerator.save_graph` (the file is next
        to the DB file unless ``hnsw_path`` says otherwise)."""
        return await self._accelerator.save_graph()

    async def _commit(
        self,
        write: Callable[[Connection], T],
        *,
        upsert: tuple[Sequence[Entity], NDArray[np.float32]] | None = None,
        remove: Sequence[str] = (),
        changes_entities: bool = True,
    ) -> T:
        """Run ``write`` in the store's writer, then bring the accelerator and the entity
        cache up to date: ``upsert`` and ``remove`` name what changed (neither, with
        ``changes_entities``: any entity may have changed; without it, relations only)."""
        change = _Change(upsert=upsert, remove=remove, changes_entities=changes_entities)
        return await self._commit_changes(
            write, lambda _: change, touching=change.names() if changes_entities else []
        )

    async def _commit_changes(
        self,
        write: Callable[[Connection], T],
        changed: Callable[[T], _Change],
        *,
        touching: Sequence[str] | None,
        counted: Callable[[T], tuple[int, int]] | None = None,
    ) -> T:
        """As :meth:`_commit`, with what changed told by ``changed(write's result)``, among
        the entity names ``touching`` (None: any); ``counted(result)``: the entity and
        relation totals after the write when it knows them (else they are counted)."""

        def write_and_count(conn: Connection) -> tuple[T, tuple[int, int]]:
            self.sql.lock_writes(conn)
            result = write(conn)
            if counted is not None:
                return result, counted(result)
            # read in the write: on a shared store other instances' writes are counted too
            return result, self._totals(conn)

        # Shielded: once the write is queued it commits, and the accelerator must follow it.
        with trio.CancelScope(shield=True):
            if touching is None:
                self._unfollowed_unnamed += 1
            else:
                self._unfollowed.update(touching)
            try:
                try:
                    result, totals = await self.store.execute_write_fn(write_and_count)
                except MemoryLimitExceeded as exc:
                    self._entity_count = exc.current  # counted in the refused write
                    raise
                change = changed(result)
                if change.changes_entities:
                    self._entity_epoch += 1
                    self._note_changed(change.names())
                cache = self._entity_cache
                if cache is not None and change.changes_entities:
                    cache.invalidate(change.names())
                    if change.upsert is not None:
                        # the rows just written are what a read would give: kept at once
                        written = {e.name: sql_shared.as_read(e) for e in change.upsert[0]}
                        cache.put(written, read_at=cache.generation)
                self._entity_count, self._relation_count = totals
                self._counted_at = time.monotonic()
                await self._accelerator.follow(upsert=change.upsert, remove=change.remove)
            finally:
                if touching is None:
                    self._unfollowed_unnamed -= 1
                else:
                    self._unfollowed.subtract(touching)
                    for name in touching:
                        if self._unfollowed[name] <= 0:
                            del self._unfollowed[name]
        return result

    def _note_changed(self, names: list[str] | None) -> None:
        """Remember that ``names`` (None: any entity) changed at the current epoch."""
        if names is None or len(self._changed_at) + len(names) > CHANGE_LOG_NAMES:
            self._changed_at.clear()
            self._all_changed_at = self._entity_epoch
        else:
            self._changed_at.update(dict.fromkeys(names, self._entity_epoch))

    def _changed_since(self, names: Sequence[str], epoch: int) -> bool:
        """Whether a commit of this service may have changed any of ``names`` after the
        entity epoch was ``epoch``."""
        if self._all_changed_at > epoch:
            return True
        changed_at = self._changed_at
        return any(changed_at.get(name, -1) > epoch for name in names)

    def _maybe_stored(self, names: Sequence[str]) -> Sequence[str]:
        """``names`` less those the accelerator shows are not stored.

        While it is ready, the accelerator's mirror holds every stored entity (each is written
        with its embedding) but those of commits on their way to it, so a name it lacks that
        no such commit names is not in the store: a new entity's plan needs no read. With a
        commit on its way that does not name what it touches: ``names`` as they are.
        """
        if self._unfollowed_unnamed or not self._accelerator.ranks_in_process():
            return names
        unfollowed = self._unfollowed
        holds = self._accelerator.holds
        return [name for name in names if name in unfollowed or holds(name)]

    async def _read_entities(self, names: Sequence[str]) -> dict[str, Entity]:
        """The stored entities among ``names``, from the entity cache where it has them (and
        none of those the accelerator shows are not stored)."""
        names = self._maybe_stored(names)
        if self._read_batcher is not None:
            return await self._read_batcher.read(names) if names else {}
        cache = self._entity_cache
        if cache is None:
            return await self._fetch_entities(names)
        found, missing = cache.lookup(names)
        if missing:
            read_at = cache.generation
            fetched = await self._fetch_entities(missing)
            cache.put(fetched, read_at=read_at)
            found.update(fetched)
        return found

    async def _fetch_entities(self, names: Sequence[str]) -> dict[str, Entity]:
        """The stored entities among ``names`` from the store: the entity and observation
        rows side by side when the store is free to (DuckDB: half the time of one statement
        after the other), else one statement."""
        if not names:
            return {}
        reads = self.sql.entity_reads(names)
        if len(reads.parts) > 1:
            results = await self.store.read_statements(reads.parts)
            if results is not None:
                return reads.combine(results)
        together = await self.store.read_statements([reads.together])
        assert together is not None  # a single read always has its result
        return together[0]

    def _check_room(self, conn: Connection, adding: int) -> int:
        current = self.sql.entity_count(conn)
        if self.max_entities is not None and adding and current + adding > self.max_entities:
            raise MemoryLimitExceeded(
                current=current, adding=adding, max_entities=self.max_entities
            )
        return current + adding

    # ----------------------------------------------------------------------------- entities

    async def create_entities(self, entities: Sequence[NewEntity]) -> list[Entity]:
        """Create entities, merging into existing ones of the same name and type.

        See :mod:`caxton.memory.plan` for the merge rule.

        Returns:
            The stored state of every named entity, in input order (one per name).

        Raises:
            Conflict: a name exists with another type or scope (409); or, on a shared store,
                other instances kept changing these entities while the write was planned.
            MemoryLimitExceeded: the new entities would pass ``max_entities`` (507).
            ValidationFailed: a merge would pass the observation limit.

        Cancellation:
            Cancelled before the write is queued: nothing is written. After that the write
            completes (atomically) and the accelerator is updated before cancellation is
            delivered.

        Resource handling:
            Reading, planning and embedding run without the service's lock, so concurrent
            callers' texts share the embedder's batches; the writes of every caller waiting
            then are committed together in one transaction (:meth:`_write_grouped`).
        """
        if not entities:
            return []
        names = list(dict.fromkeys(e.name for e in entities))

        async def attempt() -> list[Entity]:
            epoch = self._entity_epoch
            existing = await self._read_entities(names)
            plan = plan_entities(entities, existing, mode="create", now=_now())
            vectors = await self.embedder.embed(
                [e.embedding_text() for e in plan.writes], use_cache=False
            )
            await self._write_grouped(
                _EntityWrite(
                    plan=plan, vectors=vectors, names=names, based_on=existing, epoch=epoch
                )
            )
            final = {e.name: e for e in plan.writes}
            return [final[name] for name in names]

        # Writers of the same names take turns (a merge must see the one before it); writers
        # of different names plan, embed and commit together.
        async with self._holding_names(names):
            return await self._replanning(attempt)

    @contextlib.asynccontextmanager
    async def _holding_names(self, names: Sequence[str]) -> AsyncIterator[None]:
        """Hold the per-name locks of ``names`` (taken in sorted order: no deadlock)."""
        held: list[tuple[str, _NameLock]] = []
        try:
            for name in sorted(set(names)):
                entry = self._name_locks.setdefault(name, _NameLock())
                entry.users += 1
                try:
                    await entry.lock.acquire()
                except BaseException:
                    self._drop_name_lock(name, entry)
                    raise
                held.append((name, entry))
            yield
        finally:
            for name, entry in reversed(held):
                entry.lock.release()
                self._drop_name_lock(name, entry)

    def _drop_name_lock(self, name: str, entry: _NameLock) -> None:
        entry.users -= 1
        if entry.users == 0:
            del self._name_locks[name]

    async def _write_grouped(self, job: _EntityWrite) -> None:
        """Commit ``job`` together with every other entity write waiting for the lock.

        Group commit: the caller that gets the write lock takes all the queued jobs (its own
        among them) and commits them in one transaction; the others find theirs done when
        the lock comes to them, which is right after that commit (the lock is fair). Each job
        is checked in the write against the entities it was planned on and against
        ``max_entities`` on its own, so one caller's stale plan or full memory fails only
        that caller.

        Raises:
            _PlannedOnStale: the entities changed since the plan read them (re-plan).
            MemoryLimitExceeded: this job's new entities would pass ``max_entities``.

        Cancellation:
            Cancelled while queued: the job leaves the queue, nothing is written. Once taken
            into a group it commits with it; the caller just does not hear of it.
        """
        self._entity_writes.append(job)
        try:
            async with self._write_lock:
                if not job.taken:
                    group = list(self._entity_writes)
                    self._entity_writes.clear()
                    for queued in group:
                        queued.taken = True
                    await self._commit_group(group)
        except BaseException:
            if not job.taken:
                self._entity_writes.remove(job)
            raise
        if job.error is not None:
            raise job.error

    async def _commit_group(self, group: list[_EntityWrite]) -> None:
        # A plan is re-read in the write only if something may have changed its entities since
        # it read them: another instance (a shared store), or a commit of this service that
        # touched them. Held under the write lock, so no commit lands meanwhile.
        unsure = [
            job for job in group if self.store.shared or self._changed_since(job.names, job.epoch)
        ]
        names = list(dict.fromkeys(name for job in unsure for name in job.names))

        totals = [0, 0]  # after the write: known from the count before it

        def write(conn: Connection) -> list[_EntityWrite]:
            current = self.sql.fetch_entities(conn, names) if names else {}
            # under the write lock: no other writer changes them until this commits
            count, totals[1] = self.sql.totals(conn)
            written: set[str] = set()
            accepted: list[_EntityWrite] = []
            for job in group:
                seen = (
                    {name: current[name] for name in job.names if name in current}
                    if job in unsure
                    else job.based_on
                )
                if seen != job.based_on or not written.isdisjoint(job.names):
                    job.error = _PlannedOnStale()
                    continue
                adding = len(job.plan.created)
                if self.max_entities is not None and adding and count + adding > self.max_entities:
                    job.error = MemoryLimitExceeded(
                        current=count, adding=adding, max_entities=self.max_entities
                    )
                    continue
                count += adding
                written.update(job.names)
                accepted.append(job)
            if accepted:
                # a created name was absent from what its job's plan read, which still holds
                self.sql.write_entities(
                    conn,
                    [entity for job in accepted for entity in job.plan.writes],
                    np.concatenate([job.vectors for job in accepted]),
                    new={name for job in accepted for name in job.plan.created},
                )
            totals[0] = count
            return accepted

        def change(accepted: list[_EntityWrite]) -> _Change:
            entities = [entity for job in accepted for entity in job.plan.writes]
            if not entities:
                return _Change(upsert=None, changes_entities=False)
            vectors = np.concatenate([job.vectors for job in accepted])
            return _Change(upsert=(entities, vectors))

        try:
            await self._commit_changes(
                write,
                change,
                touching=[name for job in group for name in job.names],
                counted=lambda _: (totals[0], totals[1]),
            )
        except BaseException as exc:
            for job in group:
                job.error = job.error or exc
            raise

    async def create_entity(self, entity: NewEntity) -> Entity:
        """Create (or merge into) one entity; see :meth:`create_entities`.

        Cancellation:
            As :meth:`create_entities`.

        Resource handling:
            As :meth:`create_entities`.
        """
        with span(
            "create_memory",
            lambda: {
                "gen_ai.operation.name": "create_memory",
                "gen_ai.agent.name": entity.agent,
                "caxton.memory.entity_type": entity.entity_type,
            },
        ):
            return (await self.create_entities([entity]))[0]

    async def _replanning(self, attempt: Callable[[], Awaitable[T]]) -> T:
        """Run ``attempt`` (read, plan, write) again while its write finds the entities it
        planned on changed by another instance, after a random pause that grows with each try
        (two instances retrying in step would keep beating each other); a Conflict after
        :data:`MAX_REPLANS` tries."""
        for tries in range(1, MAX_REPLANS + 1):
            try:
                return await attempt()
            except _PlannedOnStale:
                LOGGER.debug("entities changed on another instance while planning (try %d)", tries)
            await trio.sleep(random.uniform(0.0, REPLAN_PAUSE_S * tries))
        raise Conflict(
            "the entities kept changing on other instances while this write was planned "
            f"({MAX_REPLANS} tries); send it again",
        )

    async def _write_plan(
        self,
        plan: EntityPlan,
        relations: Sequence[Relation] = (),
        *,
        planned_on: tuple[Sequence[str], dict[str, Entity]],
    ) -> None:
        """Embed and write ``plan``; on a shared store, first check (under the write lock, in
        the write) that the entities named in ``planned_on`` are still as the plan read them.

        Raises:
            _PlannedOnStale: another instance changed them; nothing was written.
        """
        names, based_on = planned_on
        vectors = await self.embedder.embed(
            [e.embedding_text() for e in plan.writes], use_cache=False
        )
        adding = len(plan.created)

        def write(conn: Connection) -> None:
            # Only a shared store has writers outside this service's lock.
            if self.store.shared and self.sql.fetch_entities(conn, names) != based_on:
                raise _PlannedOnStale
            self._check_room(conn, adding)
            self.sql.write_entities(conn, plan.writes, vectors, new=plan.created)
            self.sql.write_relations(conn, relations)

        await self._commit(write, upsert=(plan.writes, vectors))

    async def get_entity(self, name: str) -> Entity:
        """Return one entity.

        Raises:
            NotFound: no entity has this name (404).

        Cancellation:
            As :meth:`caxton.store.Store.execute_fn`.

        Resource handling:
            One read.
        """
        found = await self._read_entities([name])
        if name not in found:
            raise _not_found(name)
        return found[name]

    async def delete_entity(self, name: str) -> int:
        """Delete an entity with its observations, embedding and relations.

        Returns:
            How many relations were removed with it.

        Raises:
            NotFound: no entity has this name (404).

        Cancellation:
            As :meth:`create_entities`.

        Resource handling:
            One write transaction.
        """
        async with self._write_lock:
            existed, relations = await self._commit(
                lambda c: self.sql.delete_entity(c, name), remove=[name]
            )
            if not existed:
                raise _not_found(name)
            return relations

    async def add_observations(self, name: str, observations: Sequence[str]) -> Entity:
        """Append observations to an existing entity (exact duplicates are dropped).

        Raises:
            NotFound: no entity has this name (404).
            ValidationFailed: no observations, a bad one, or too many for one entity.

        Cancellation:
            As :meth:`create_entities`.

        Resource handling:
            As :meth:`create_entities`.
        """
        if isinstance(observations, str | bytes) or not observations:
            raise validation.invalid("observations", "give a non-empty list of strings")
        texts = [
            validation.check_observation(
                validation.text(o, f"observations[{i}]"), f"observations[{i}]"
            )
            for i, o in enumerate(observations)
        ]

        async def attempt() -> Entity:
            found = await self.store.execute_fn(lambda c: self.sql.fetch_entities(c, [name]))
            if name not in found:
                raise _not_found(name)
            old = found[name]
            addition = NewEntity(
                name=name,
                entity_type=old.entity_type,
                observations=texts,
                scope=old.scope,
                agent=old.agent,
            )
            plan = plan_entities([addition], found, mode="create", now=_now())
            await self._write_plan(plan, planned_on=([name], found))
            return plan.writes[0]

        async with self._write_lock:
            return await self._replanning(attempt)

    # ----------------------------------------------------------------------------- relations

    async def create_relation(self, relation: NewRelation) -> Relation:
        """Create a relation, or update strength and confidence of an existing one.

        Raises:
            NotFound: ``from`` or ``to`` is not an entity (404).

        Cancellation:
            As :meth:`create_entities`.

        Resource handling:
            One read and one write transaction.
        """
        key = (relation.source, relation.target, relation.relation_type)
        async with self._write_lock:

            def read(conn: Connection) -> tuple[set[str], dict[RelationKey, Relation]]:
                names = self.sql.existing_names(conn, [relation.source, relation.target])
                return names, self.sql.fetch_relations(conn, [key])

            names, existing = await self.store.execute_fn(read)
            for end, name in (("from", relation.source), ("to", relation.target)):
                if name not in names:
                    raise NotFound(
                        f"relation {end} entity {name!r} does not exist; create it first",
                        details={"name": name, "end": end},
                    )
            plan = plan_relations([relation], existing, mode="create", now=_now())
            await self._commit(
                lambda c: self.sql.write_relations(c, plan.writes), changes_entities=False
            )
            return plan.writes[0]

    # ----------------------------------------------------------------------------- search

    async def search(
        self,
        query: str,
        *,
        limit: int = 10,
        min_similarity: float = 0.0,
        scope: Scope | str | None = None,
        agent: str | None = None,
        entity_types: Sequence[str] | None = None,
        exact: bool = False,
    ) -> list[SearchHit]:
        """Find the entities most similar in meaning to ``query``.

        Args:
            query: free text.
            limit: at most this many hits (1-1000).
            min_similarity: drop hits whose cosine similarity is below this (-1 to 1).
            scope: only entities of this scope.
            agent: the asking agent; ``agent``-scoped entities are visible only to their own
                agent, so without it they are never returned.
            entity_types: only entities of these types.
            exact: scan every embedding in SQL (no accelerator, no vector index).

        Returns:
            Hits, best first (ties by name).

        Raises:
            ValidationFailed: a bad argument.

        Cancellation:
            Safe to cancel at any point; nothing is written.

        Resource handling:
            One embedding (cached), then either an accelerator scan and one read for the
            entities (from the entity cache where it has them; on DuckDB the entity and
            observation rows side by side when two readers are free), or one store call for
            the SQL search and its entities together (on PostgreSQL shared with the searches
            waiting beside it: :mod:`caxton.memory.search_batches`). The latency goes into the p99
            window; with tracing on it runs in a ``search_memory`` span (issue #18).
        """
        with span(
            "search_memory",
            lambda: {
                "gen_ai.operation.name": "search_memory",
                "gen_ai.agent.name": agent,
                "caxton.memory.limit": limit,
                "caxton.memory.backend": self.store.dialect,
            },
        ) as current:
            started = time.perf_counter()
            text = validation.text(query, "q")
            if not text.strip():
                raise validation.invalid("q", "the search text must not be empty")
            validation.check_limit(limit, "limit", low=1, high=MAX_SEARCH_LIMIT)
            if not -1.0 <= float(min_similarity) <= 1.0:
                raise validation.invalid("min_similarity", "must be between -1 and 1")
            try:
                wanted_scope = None if scope is None else Scope(scope)
            except ValueError as exc:
                raise validation.invalid(
                    "scope", f"must be agent, workspace or global, got {scope!r}"
                ) from exc
            types = None if entity_types is None else list(entity_types)
            vector = await self.embedder.embed_one(text)
            filters: SearchFilters = {
                "limit": limit,
                "min_similarity": min_similarity,
                "scope": wanted_scope,
                "agent": agent,
                "entity_types": types,
            }
            if self._accelerator.ranks_in_process(exact=exact):
                ranked = await self._accelerator.rank(vector, **filters)
                found = await self._read_entities([name for name, _ in ranked])
            elif self._search_batcher is not None and not exact:
                ranked, found = await self._search_batcher.search(vector, filters)
            else:
                search_and_read = functools.partial(
                    self._search_in_sql, vector=vector, exact=exact, **filters
                )
                results = await self.store.read_statements([search_and_read])
                assert results is not None  # a single read always has its result
                ranked, found = results[0]
            hits = [
                SearchHit(entity=found[name], similarity=score)
                for name, score in ranked
                if name in found
            ]
            elapsed = time.perf_counter() - started
            self._latency.record(elapsed)
            if self._on_search is not None:
                self._on_search(elapsed)
            if current is not None:
                current.set_attribute("caxton.memory.hits", len(hits))
            return hits

    def _search_in_sql(
        self,
        conn: Connection,
        *,
        vector: NDArray[np.float32],
        exact: bool,
        **filters: Unpack[SearchFilters],
    ) -> tuple[list[tuple[str, float]], dict[str, Entity]]:
        """A search through the store's SQL and its hits' rows, in one store call outside a
        transaction (on PostgreSQL one statement, and the HNSW settings when the connection
        lacks them; elsewhere a hit deleted between the search and its read is left out)."""
        return self._accelerator.read_in_sql(conn, vector=vector, exact=exact, **filters)

    async def graph(self, name: str, *, max_depth: int = 2) -> Graph:
        """The entities around ``name`` up to ``max_depth`` relations away (both directions).

        Raises:
            NotFound: no entity has this name (404).
            ValidationFailed: ``max_depth`` outside 1-10.

        Cancellation:
            Safe to cancel; nothing is written.

        Resource handling:
            One read (one query per depth level).
        """
        validation.check_limit(max_depth, "max_depth", low=1, high=MAX_GRAPH_DEPTH)
        found = await self.store.execute_fn(lambda c: self.sql.neighbours(c, name, max_depth))
        if found is None:
            raise _not_found(name)
        nodes, edges = found
        return Graph(root=name, nodes=tuple(nodes), edges=tuple(edges))

    # ----------------------------------------------------------------------------- reports

    async def stats(self) -> MemoryStats:
        """Counts of entities (by type and scope), relations and observations, and DB size.

        Cancellation:
            Safe to cancel.

        Resource handling:
            One read.
        """
        figures = await self.store.execute_fn(self.sql.counts)
        self._entity_count = figures["entities"]
        self._relation_count = figures["relations"]
        self._counted_at = time.monotonic()
        return MemoryStats(
            entity_count=figures["entities"],
            relation_count=figures["relations"],
            observation_count=figures["observations"],
            entities_by_type=figures["by_type"],
            entities_by_scope=figures["by_scope"],
            db_size_bytes=await self.sql.size_bytes(self.store),
            max_entities=self.max_entities,
        )

    async def capacity(self) -> Capacity:
        """How full the memory is; ``warning`` from 90% of ``max_entities``.

        Cancellation:
            Safe to cancel.

        Resource handling:
            One read.
        """
        count = await self.store.execute_fn(self.sql.entity_count)
        self._entity_count = count
        size = await self.sql.size_bytes(self.store)
        ram = self._accelerator.ram_bytes
        if self.max_entities is None:
            return Capacity(
                entity_count=count,
                max_entities=None,
                used_ratio=0.0,
                db_size_bytes=size,
                warning=False,
                message=f"{count} entities; no limit (memory.max_entities is unset)",
                index_ram_bytes=ram(count),
            )
        ratio = count / self.max_entities
        warning = ratio >= CAPACITY_WARNING_RATIO
        message = f"{count} of {self.max_entities} entities ({ratio:.0%})"
        if warning:
            message += (
                "; over 90%: delete unused entities or raise memory.max_entities before "
                "writes start failing with MEMORY_LIMIT_EXCEEDED"
            )
        return Capacity(
            entity_count=count,
            max_entities=self.max_entities,
            used_ratio=ratio,
            db_size_bytes=size,
            warning=warning,
            message=message,
            index_ram_bytes=ram(count),
            index_ram_at_max_bytes=ram(self.max_entities),
        )

    async def optimize(
        self, *, checkpoint: bool = True, vacuum: bool = True, analyze: bool = True
    ) -> OptimizeReport:
        """Checkpoint, vacuum and refresh statistics (``caxton memory optimize``).

        The report says which steps ran: on PostgreSQL only ``ANALYZE`` of the memory tables
        (the server checkpoints, and autovacuum vacuums).

        Cancellation:
            As :meth:`caxton.store.Store.execute_write_fn`: a started step completes.

        Resource handling:
            DuckDB: each step runs in the writer's turn, outside a transaction. PostgreSQL: one
            write transaction.
        """
        started = time.perf_counter()
        before = await self.sql.size_bytes(self.store)
        checkpointed, vacuumed, analyzed = await self.sql.optimize(
            self.store, checkpoint=checkpoint, vacuum=vacuum, analyze=analyze
        )
        return OptimizeReport(
            checkpointed=checkpointed,
            vacuumed=vacuumed,
            analyzed=analyzed,
            size_before_bytes=before,
            size_after_bytes=await self.sql.size_bytes(self.store),
            seconds=time.perf_counter() - started,
        )

    # ----------------------------------------------------------------------------- transfer

    async def snapshot(self) -> transfer.Snapshot:
        """Every entity and relation from one consistent read (for exports).

        Cancellation:
            Safe to cancel.

        Resource handling:
            One read; the records are held in memory.
        """
        return await self.store.execute_fn(functools.partial(transfer.Snapshot.read, sql=self.sql))

    async def export_document(self) -> dict[str, JSONValue]:
        """The whole memory as one JSON export document.

        Cancellation:
            Safe to cancel.

        Resource handling:
            One consistent read; the document is built in memory.
        """
        return (await self.snapshot()).document()

    async def export_jsonl(self) -> AsyncIterator[str]:
        """Yield the memory as JSONL lines (each ending in a newline): metadata first.

        The data comes from one consistent read, so the counts in the metadata line always
        match the lines that follow; formatting is streamed in chunks.

        Cancellation:
            Safe to stop iterating or cancel at any point.

        Resource handling:
            Holds no store resource while yielding (the read completes first).
        """
        snapshot = await self.snapshot()
        for line in snapshot.jsonl_lines():
            yield line  # the consumer's sends are the checkpoints

    async def import_bytes(
        self,
        data: bytes,
        *,
        format: transfer.ImportFormat | None = None,
        merge_strategy: MergeStrategy | str = MergeStrategy.UPDATE_EXISTING,
    ) -> ImportReport:
        """Import an export file (JSON or JSONL, detected when ``format`` is None).

        Raises:
            ValidationFailed: see :meth:`import_data`, plus bytes that are not UTF-8 JSON.

        Cancellation:
            As :meth:`import_data`.

        Resource handling:
            As :meth:`import_data`.
        """
        return await self.import_data(
            transfer.parse_bytes(data, format=format), merge_strategy=merge_strategy
        )

    async def import_document(
        self,
        document: object,
        *,
        merge_strategy: MergeStrategy | str = MergeStrategy.UPDATE_EXISTING,
    ) -> ImportReport:
        """Import a parsed JSON export document (the body of ``POST /api/v1/memory/import``).

        Cancellation:
            As :meth:`import_data`.

        Resource handling:
            As :meth:`import_data`.
        """
        return await self.import_data(
            transfer.parse_document(document), merge_strategy=merge_strategy
        )

    async def import_data(
        self,
        data: transfer.ImportData,
        *,
        merge_strategy: MergeStrategy | str = MergeStrategy.UPDATE_EXISTING,
    ) -> ImportReport:
        """Merge imported entities and relations into the memory in one transaction.

        Raises:
            ValidationFailed: an unknown strategy, a relation whose end is neither in the file
                nor stored, or a record that fails validation. Nothing is written.
            Conflict: ``error_on_conflict`` met existing names or relations (409). Nothing is
                written.
            MemoryLimitExceeded: the new entities would pass ``max_entities``. Nothing is
                written.

        Cancellation:
            Cancelled before the write is queued (while reading or embedding): nothing is
            written. After that the import commits as a whole.

        Resource handling:
            Holds the service's write lock throughout; embeds every changed entity in batches.
        """
        strategy = transfer.parse_merge_strategy(merge_strategy)
        names = list(dict.fromkeys(e.name for e in data.entities))

        async def attempt() -> ImportReport:
            state = await self.store.execute_fn(
                functools.partial(transfer.read_import_state, data=data, sql=self.sql)
            )
            plan = transfer.plan_import(data, state, strategy=strategy, now=_now())
            await self._write_plan(
                plan.entities, plan.relations.writes, planned_on=(names, state.entities)
            )
            return plan.report()

        async with self._write_lock:
            return await self._replanning(attempt)

    # ----------------------------------------------------------------------------- statistics

    async def fresh_statistics(self) -> MemoryStatistics:
        """:meth:`statistics`, with the entity and relation totals read again first on a
        shared store when they are older than ``counts_refresh_s`` (other instances write
        too). Callers asking together share one read; a store that cannot answer leaves the
        totals as they were (logged), and is asked again only ``counts_refresh_s`` later (so
        scrapes while the database is down do not queue behind one another's attempts).

        Cancellation:
            Safe to cancel (a caller waiting for the same read then reads on its own).
        """
        if self.store.shared and time.monotonic() - self._counted_at >= self.counts_refresh_s:
            async with self._counting:
                if time.monotonic() - self._counted_at >= self.counts_refresh_s:
                    await self._count()
        return self.statistics()

    async def _count(self) -> None:
        try:
            # one statement outside a transaction: one round trip
            totals = await self.store.read_statements([self._totals])
        except CaxtonError as exc:  # StorageUnavailable and the like: tried again later
            LOGGER.debug("memory totals not read: %s", exc.message)
        else:
            assert totals is not None  # a single read always has its result
            self._entity_count, self._relation_count = totals[0]
        self._counted_at = time.monotonic()

    def statistics(self) -> MemoryStatistics:
        """Return a snapshot of the service's counters (search latency over the window),
        without waiting.

        On a shared store the entity and relation counts are those of this instance's last
        write or of the last :meth:`fresh_statistics` that read them, whichever came last.
        """
        cache = self._entity_cache
        return MemoryStatistics(
            entity_count=self._entity_count,
            relation_count=self._relation_count,
            max_entities=self.max_entities,
            searches_total=self._latency.count,
            search_window=len(self._latency),
            search_p50_ms=self._latency.percentile(0.5) * 1000.0,
            search_p99_ms=self._latency.percentile(0.99) * 1000.0,
            entity_cache_entries=0 if cache is None else len(cache),
            entity_cache_bytes=0 if cache is None else cache.nbytes,
            entity_cache_filling=not self._cache_filled.is_set(),
            entity_cache_fill_seconds=self._fill_seconds,
            **attrs.asdict(self._accelerator.statistics()),
        )


def _beside_database(store: Backend) -> Path | None:
    """``<db file>.hnsw`` for a store kept in a file (DuckDB's ``path``); else None."""
    path: object = getattr(store, "path", None)
    if not isinstance(path, Path):
        return None
    return path.with_name(path.name + ".hnsw")


@attrs.define(eq=False, kw_only=True)
class _EntityWrite:
    """One caller's planned and embedded entity write, waiting for a group commit."""

    plan: EntityPlan
    vectors: NDArray[np.float32]
    #: the names the plan read, and what it found of them
    names: Sequence[str]
    based_on: dict[str, Entity]
    #: the service's entity epoch before the plan read them (unchanged since: nothing to check)
    epoch: int
    #: taken into a group by the caller holding the lock
    taken: bool = False
    error: BaseException | None = None


@attrs.define(eq=False)
class _NameLock:
    """The lock of one entity name while writers of it are about (``users`` of them)."""

    lock: trio.Lock = attrs.field(factory=trio.Lock)
    users: int = 0


@attrs.frozen(kw_only=True)
class _Change:
    """What a committed write changed, for the accelerator and the entity cache."""

    upsert: tuple[Sequence[Entity], NDArray[np.float32]] | None = None
    remove: Sequence[str] = ()
    #: False: relations only
    changes_entities: bool = True

    def names(self) -> list[str] | None:
        """The entity names to forget; None: any may have changed."""
        touched = [entity.name for entity in self.upsert[0]] if self.upsert is not None else []
        touched.extend(self.remove)
        return touched or None


class _PlannedOnStale(Exception):
    """A write found the entities its plan was made from changed by another instance."""


def _not_found(name: str) -> NotFound:
    return NotFound(f"entity {name!r} does not exist", details={"name": name})
