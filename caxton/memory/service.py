"""The memory component: entities, relations, semantic search and graph walks (DESIGN §6).

DuckDB (through :class:`caxton.store.Store`) is the truth. Every mutation runs under one lock
as: read what exists -> plan the final state (:mod:`caxton.memory.plan`, pure) -> embed the
changed entities -> one write transaction -> update the numpy accelerator. The last two steps
are shielded from cancellation so a committed write always reaches the accelerator; if the
accelerator ever fails to follow, searches fall back to the exact DuckDB path until
:meth:`MemoryService.rebuild_index` succeeds.

Above ``hnsw_threshold`` rows the accelerator also keeps an HNSW graph
(:mod:`caxton.memory.layered`), saved next to the DB file and loaded at start when it matches
what DuckDB holds. It is built or loaded in a worker thread by a task in :meth:`run`'s nursery;
until it is installed, searches use the numpy scan.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import time
from typing import TYPE_CHECKING, NoReturn, TypeVar

import trio

from caxton.errors import NotFound
from caxton.latency import LatencyWindow
from caxton.memory import hnsw, queries, transfer, validation
from caxton.memory.errors import MemoryLimitExceeded
from caxton.memory.index import IndexEntry
from caxton.memory.layered import DEFAULT_HNSW_THRESHOLD, LayeredIndex
from caxton.memory.plan import plan_entities, plan_relations
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

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence
    from pathlib import Path

    import numpy as np
    from numpy.typing import NDArray

    from caxton.errors import JSONValue
    from caxton.memory.embedder import TextEncoder
    from caxton.memory.plan import EntityPlan, WriteMode
    from caxton.store import Connection, Store

LOGGER = logging.getLogger("caxton.memory")
T = TypeVar("T")

MAX_SEARCH_LIMIT = 1000
MAX_GRAPH_DEPTH = 10
CAPACITY_WARNING_RATIO = 0.9
HNSW_SAVE_INTERVAL_S = 600.0
HNSW_SHUTDOWN_SAVE_S = 30.0


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class MemoryService:
    """Embedded memory over the store and the embedder.

    Args:
        store: the running store, migrated with :data:`caxton.memory.MEMORY_MIGRATIONS`.
        embedder: the running embedder (:class:`caxton.memory.Embedder`).
        max_entities: ``memory.max_entities``; None for no limit.
        accelerator: keep the numpy mirror for searches (the exact path is always available
            with ``search(..., exact=True)``).
        latency_window: searches the p50/p99 figures cover.
        hnsw_threshold: keep an HNSW graph over the accelerator from this many entities; None
            never does.
        hnsw_path: where the graph is saved; by default ``<db file>.hnsw`` (plus a ``.json``
            sidecar). None with ``persist_hnsw=False``: never saved.
        persist_hnsw: save the graph after builds, every ``hnsw_save_interval`` seconds when it
            changed, and at shutdown; load it at start when it matches DuckDB.
    """

    def __init__(
        self,
        store: Store,
        embedder: TextEncoder,
        *,
        max_entities: int | None = 100_000,
        accelerator: bool = True,
        latency_window: int = 1000,
        on_search: Callable[[float], None] | None = None,
        hnsw_threshold: int | None = DEFAULT_HNSW_THRESHOLD,
        hnsw_path: Path | None = None,
        persist_hnsw: bool = True,
        hnsw_save_interval: float = HNSW_SAVE_INTERVAL_S,
    ) -> None:
        if max_entities is not None and max_entities < 1:
            raise ValueError(f"max_entities must be at least 1, got {max_entities}")
        self.store = store
        self.embedder = embedder
        self.max_entities = max_entities
        self.accelerator = accelerator
        self.hnsw_threshold = hnsw_threshold
        if not persist_hnsw:
            hnsw_path = None
        elif hnsw_path is None:
            hnsw_path = store.path.with_name(store.path.name + ".hnsw")
        self.hnsw_path = hnsw_path
        self.hnsw_save_interval = hnsw_save_interval
        self._index = LayeredIndex(embedder.dim, threshold=hnsw_threshold)
        self._index_ready = False
        self._index_limiter = trio.CapacityLimiter(1)
        self._graph_limiter = trio.CapacityLimiter(1)
        self._graph_wanted = trio.Event()
        self._graph_attempted = trio.Event()  # set (then replaced) after each load or build
        self._graph_builds = 0
        self._graph_loads = 0
        self._graph_build_seconds = 0.0
        self._write_lock = trio.Lock()
        self._latency = LatencyWindow(latency_window)
        self._on_search = on_search
        self._entity_count = 0
        self._relation_count = 0

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[MemoryService] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Build the accelerator from DuckDB, report started with this service, then wait.

        The HNSW graph (above ``hnsw_threshold`` entities) is loaded or built afterwards by a
        background task, so start-up does not wait for it.

        Cancellation:
            Cancelling ``run`` stops the service (a graph build stops at its next chunk); the
            store and embedder are not closed (they belong to outer nurseries).

        Resource handling:
            A changed graph is saved at exit (shielded, bounded by ``HNSW_SHUTDOWN_SAVE_S``);
            the accelerator's matrix and graph are dropped when ``run`` exits.
        """
        await self.rebuild_index()
        try:
            async with trio.open_nursery() as nursery:
                if self.accelerator and self.hnsw_threshold is not None:
                    nursery.start_soon(self._maintain_graph)
                    if self.hnsw_path is not None and self.hnsw_save_interval > 0:
                        nursery.start_soon(self._save_periodically)
                task_status.started(self)
                await trio.sleep_forever()
        finally:
            with trio.CancelScope(shield=True) as scope:
                scope.deadline = trio.current_time() + HNSW_SHUTDOWN_SAVE_S
                try:
                    await self.save_graph()
                except Exception:
                    LOGGER.exception("saving the HNSW index at shutdown failed")
            self._index_ready = False
            self._index.clear()
        raise AssertionError("the memory service stopped without being cancelled")

    async def rebuild_index(self) -> int:
        """Reload the accelerator from DuckDB (``caxton memory cache-clear --rebuild``).

        Returns:
            The number of vectors loaded.

        Cancellation:
            Safe to cancel; the old accelerator is kept until the new one is complete.

        Resource handling:
            Reads every embedding once (~1 s per 100k); holds the write lock so no write slips
            between the read and the swap.
        """
        async with self._write_lock:
            entries, matrix = await self.store.execute_fn(queries.load_index)
            self._entity_count = await self.store.execute_fn(queries.entity_count)
            self._relation_count = await self.store.execute_fn(queries.relation_count)
            if not self.accelerator:
                return len(entries)
            fresh = LayeredIndex(self.embedder.dim, threshold=self.hnsw_threshold)
            await self._in_index(lambda _: fresh.upsert(entries, matrix))
            self._index = fresh
            self._index_ready = True
            self._want_graph()
            return len(entries)

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
        snapshot = await trio.to_thread.run_sync(index.begin_build, limiter=self._index_limiter)
        if snapshot is None:
            return
        keys, vectors = snapshot
        started = time.perf_counter()
        try:
            graph, loaded, saved = await trio.to_thread.run_sync(
                functools.partial(self._load_or_build_sync, keys, vectors),
                limiter=self._graph_limiter,
            )
        except Exception:
            LOGGER.exception("building the HNSW index failed; searches use the numpy scan")
            await trio.to_thread.run_sync(index.abort_build, limiter=self._index_limiter)
            return
        if loaded:
            self._graph_loads += 1
        else:
            self._graph_builds += 1
            self._graph_build_seconds = time.perf_counter() - started
        await trio.to_thread.run_sync(
            functools.partial(index.finish_build, graph, saved=saved),
            limiter=self._index_limiter,
        )
        attempted, self._graph_attempted = self._graph_attempted, trio.Event()
        attempted.set()
        LOGGER.info(
            "HNSW index over %d entities %s in %.1fs",
            len(keys),
            "loaded" if loaded else "built",
            time.perf_counter() - started,
        )

    async def wait_graph(self) -> None:
        """Wait until the HNSW graph is installed (at once when it is).

        Cancellation:
            Safe to cancel; waits forever when no graph is wanted (below ``hnsw_threshold``).
        """
        while self._index.graph is None:
            await self._graph_attempted.wait()

    def _load_or_build_sync(
        self, keys: NDArray[np.uint64], vectors: NDArray[np.float32]
    ) -> tuple[hnsw.HnswGraph, bool, bool]:
        """(graph, loaded from the file, the file holds it); runs in a worker thread."""
        content = hnsw.fingerprint(keys, vectors)
        path = self.hnsw_path
        if path is not None:
            graph = hnsw.load(path, self.embedder.dim, content)
            if graph is not None:
                return graph, True, True
        graph = hnsw.build(
            self.embedder.dim, keys, vectors, checkpoint=trio.from_thread.check_cancelled
        )
        if path is None:
            return graph, False, False
        try:
            hnsw.save(graph, path, content)
        except OSError:
            LOGGER.exception("cannot save the HNSW index to %s", path)
            return graph, False, False
        return graph, False, True

    async def _save_periodically(self) -> NoReturn:
        while True:
            await trio.sleep(self.hnsw_save_interval)
            try:
                await self.save_graph()
            except OSError:
                LOGGER.exception("saving the HNSW index failed; retrying later")

    async def save_graph(self) -> bool:
        """Save the HNSW graph next to the DB file if it changed since it was last saved.

        Returns:
            Whether a file was written.

        Cancellation:
            A started save completes.

        Resource handling:
            Holds the accelerator (searches wait) while the graph is written (~1 s per 100k).
        """
        path = self.hnsw_path
        if path is None:
            return False
        index = self._index

        def save() -> bool:
            graph = index.graph
            if graph is None or not index.dirty or index.building:
                return False
            keys, vectors = index.content()
            hnsw.save(graph, path, hnsw.fingerprint(keys, vectors))
            index.dirty = False
            return True

        return await trio.to_thread.run_sync(save, limiter=self._index_limiter)

    async def _commit(
        self,
        write: Callable[[Connection], T],
        *,
        upsert: tuple[Sequence[Entity], NDArray[np.float32]] | None = None,
        remove: Sequence[str] = (),
    ) -> T:
        # Shielded: once the write is queued it commits, and the accelerator must follow it.
        with trio.CancelScope(shield=True):
            result = await self.store.execute_write_fn(write)
            if self.accelerator and self._index_ready:
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
                    self._index_ready = False
        return result

    def _check_room(self, conn: Connection, adding: int) -> int:
        current = queries.entity_count(conn)
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
            Conflict: a name exists with another type or scope (409).
            MemoryLimitExceeded: the new entities would pass ``max_entities`` (507).
            ValidationFailed: a merge would pass the observation limit.

        Cancellation:
            Cancelled before the write is queued: nothing is written. After that the write
            completes (atomically) and the accelerator is updated before cancellation is
            delivered.

        Resource handling:
            Mutations are serialised by the service's lock; embedding runs in the embedder's
            thread, the write in the store's writer.
        """
        if not entities:
            return []
        async with self._write_lock:
            names = list(dict.fromkeys(e.name for e in entities))
            existing = await self.store.execute_fn(lambda c: queries.fetch_entities(c, names))
            plan = plan_entities(entities, existing, mode="create", now=_now())
            await self._write_plan(plan)
            final = {e.name: e for e in plan.writes}
            return [final[name] for name in names]

    async def create_entity(self, entity: NewEntity) -> Entity:
        """Create (or merge into) one entity; see :meth:`create_entities`.

        Cancellation:
            As :meth:`create_entities`.

        Resource handling:
            As :meth:`create_entities`.
        """
        return (await self.create_entities([entity]))[0]

    async def _write_plan(
        self,
        plan: EntityPlan,
        relations: Sequence[Relation] = (),
    ) -> None:
        vectors = await self.embedder.embed(
            [e.embedding_text() for e in plan.writes], use_cache=False
        )
        adding = len(plan.created)

        def write(conn: Connection) -> int:
            total = self._check_room(conn, adding)
            queries.write_entities(conn, plan.writes, vectors)
            queries.write_relations(conn, relations)
            return total

        self._entity_count = await self._commit(write, upsert=(plan.writes, vectors))

    async def get_entity(self, name: str) -> Entity:
        """Return one entity.

        Raises:
            NotFound: no entity has this name (404).

        Cancellation:
            As :meth:`caxton.store.Store.execute_fn`.

        Resource handling:
            One read.
        """
        found = await self.store.execute_fn(lambda c: queries.fetch_entities(c, [name]))
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
                lambda c: queries.delete_entity(c, name), remove=[name]
            )
            if not existed:
                raise _not_found(name)
            self._entity_count -= 1
            self._relation_count -= relations
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
        async with self._write_lock:
            found = await self.store.execute_fn(lambda c: queries.fetch_entities(c, [name]))
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
            await self._write_plan(plan)
            return plan.writes[0]

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

            def read(conn: Connection) -> tuple[set[str], dict[queries.RelationKey, Relation]]:
                names = queries.existing_names(conn, [relation.source, relation.target])
                return names, queries.fetch_relations(conn, [key])

            names, existing = await self.store.execute_fn(read)
            for end, name in (("from", relation.source), ("to", relation.target)):
                if name not in names:
                    raise NotFound(
                        f"relation {end} entity {name!r} does not exist; create it first",
                        details={"name": name, "end": end},
                    )
            plan = plan_relations([relation], existing, mode="create", now=_now())
            await self._commit(lambda c: queries.write_relations(c, plan.writes))
            self._relation_count += plan.created
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
            exact: use DuckDB's exact scan even when the accelerator is ready.

        Returns:
            Hits, best first (ties by name).

        Raises:
            ValidationFailed: a bad argument.

        Cancellation:
            Safe to cancel at any point; nothing is written.

        Resource handling:
            One embedding (cached), one accelerator scan or DuckDB read, one read for the
            entities. The latency goes into the p99 window.
        """
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
        if exact or not (self.accelerator and self._index_ready):
            ranked = await self.store.execute_fn(
                lambda c: queries.search_exact(
                    c,
                    vector,
                    limit=limit,
                    min_similarity=min_similarity,
                    scope=wanted_scope,
                    agent=agent,
                    entity_types=types,
                )
            )
        else:
            ranked = await self._in_index(
                lambda index: index.search(
                    vector,
                    limit=limit,
                    min_similarity=min_similarity,
                    scope=wanted_scope,
                    agent=agent,
                    entity_types=types,
                )
            )
        names = [name for name, _ in ranked]
        found = await self.store.execute_fn(lambda c: queries.fetch_entities(c, names))
        hits = [
            SearchHit(entity=found[name], similarity=score)
            for name, score in ranked
            if name in found
        ]
        elapsed = time.perf_counter() - started
        self._latency.record(elapsed)
        if self._on_search is not None:
            self._on_search(elapsed)
        return hits

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
        found = await self.store.execute_fn(lambda c: queries.neighbours(c, name, max_depth))
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
        figures = await self.store.execute_fn(queries.counts)
        return MemoryStats(
            entity_count=figures["entities"],
            relation_count=figures["relations"],
            observation_count=figures["observations"],
            entities_by_type=figures["by_type"],
            entities_by_scope=figures["by_scope"],
            db_size_bytes=self.store.size_bytes(),
            max_entities=self.max_entities,
        )

    async def capacity(self) -> Capacity:
        """How full the memory is; ``warning`` from 90% of ``max_entities``.

        Cancellation:
            Safe to cancel.

        Resource handling:
            One read.
        """
        count = await self.store.execute_fn(queries.entity_count)
        size = self.store.size_bytes()
        if self.max_entities is None:
            return Capacity(
                entity_count=count,
                max_entities=None,
                used_ratio=0.0,
                db_size_bytes=size,
                warning=False,
                message=f"{count} entities; no limit (memory.max_entities is unset)",
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
        )

    async def optimize(
        self, *, checkpoint: bool = True, vacuum: bool = True, analyze: bool = True
    ) -> OptimizeReport:
        """Checkpoint, vacuum and refresh statistics (``caxton memory optimize``).

        Cancellation:
            As :meth:`caxton.store.Store.execute_write_fn`: a started step completes.

        Resource handling:
            Each step runs in the writer's turn, outside a transaction.
        """
        started = time.perf_counter()
        before = self.store.size_bytes()
        if checkpoint:
            await self.store.checkpoint()
        for enabled, statement in ((vacuum, "VACUUM"), (analyze, "ANALYZE")):
            if enabled:
                await self.store.execute_write_fn(
                    functools.partial(_execute, statement), transaction=False
                )
        return OptimizeReport(
            checkpointed=checkpoint,
            vacuumed=vacuum,
            analyzed=analyze,
            size_before_bytes=before,
            size_after_bytes=self.store.size_bytes(),
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
        entities, relations = await self.store.execute_fn(queries.snapshot)
        return transfer.Snapshot(
            entities=tuple(entities), relations=tuple(relations), exported_at=_now()
        )

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
        try:
            strategy = MergeStrategy(merge_strategy)
        except ValueError as exc:
            raise validation.invalid(
                "merge_strategy",
                f"must be one of {', '.join(s.value for s in MergeStrategy)}, "
                f"got {merge_strategy!r}",
            ) from exc
        mode: WriteMode = strategy
        async with self._write_lock:
            names = list({e.name for e in data.entities})
            ends = list({n for r in data.relations for n in (r.source, r.target)})
            keys = [(r.source, r.target, r.relation_type) for r in data.relations]

            def read(
                conn: Connection,
            ) -> tuple[dict[str, Entity], set[str], dict[queries.RelationKey, Relation]]:
                return (
                    queries.fetch_entities(conn, names),
                    queries.existing_names(conn, ends),
                    queries.fetch_relations(conn, keys),
                )

            existing, stored_ends, existing_relations = await self.store.execute_fn(read)
            transfer.check_relation_ends(data, stored_ends)
            now = _now()
            plan = plan_entities(data.entities, existing, mode=mode, now=now)
            relation_plan = plan_relations(data.relations, existing_relations, mode=mode, now=now)
            await self._write_plan(plan, relation_plan.writes)
            self._relation_count += relation_plan.created
            return ImportReport(
                merge_strategy=strategy,
                entities_created=len(plan.created),
                entities_updated=len(plan.updated),
                entities_skipped=len(plan.skipped),
                relations_created=relation_plan.created,
                relations_updated=relation_plan.updated,
                relations_skipped=relation_plan.skipped,
            )

    # ----------------------------------------------------------------------------- statistics

    def statistics(self) -> MemoryStatistics:
        """Return a snapshot of the service's counters (search latency over the window)."""
        return MemoryStatistics(
            entity_count=self._entity_count,
            relation_count=self._relation_count,
            max_entities=self.max_entities,
            searches_total=self._latency.count,
            search_window=len(self._latency),
            search_p50_ms=self._latency.percentile(0.5) * 1000.0,
            search_p99_ms=self._latency.percentile(0.99) * 1000.0,
            accelerator_enabled=self.accelerator,
            accelerator_ready=self._index_ready,
            index_rows=len(self._index),
            hnsw_ready=self._index.graph is not None,
            hnsw_building=self._index.building,
            hnsw_rows=0 if self._index.graph is None else len(self._index.graph),
            hnsw_searches=self._index.graph_searches,
            hnsw_fallbacks=self._index.fallbacks,
            hnsw_builds=self._graph_builds,
            hnsw_loads=self._graph_loads,
            hnsw_build_seconds=self._graph_build_seconds,
        )


def _execute(statement: str, conn: Connection) -> None:
    conn.execute(statement)


def _index_entry(entity: Entity) -> IndexEntry:
    return IndexEntry(
        name=entity.name, entity_type=entity.entity_type, scope=entity.scope, agent=entity.agent
    )


def _not_found(name: str) -> NotFound:
    return NotFound(f"entity {name!r} does not exist", details={"name": name})
