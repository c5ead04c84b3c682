"""The memory component: entities, relations, semantic search and graph walks (DESIGN §6).

DuckDB (through :class:`caxton.store.Store`) is the truth. Every mutation runs under one lock
as: read what exists -> plan the final state (:mod:`caxton.memory.plan`, pure) -> embed the
changed entities -> one write transaction -> update the numpy accelerator. The last two steps
are shielded from cancellation so a committed write always reaches the accelerator; if the
accelerator ever fails to follow, searches fall back to the exact DuckDB path until
:meth:`MemoryService.rebuild_index` succeeds.
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
from caxton.memory import queries, transfer, validation
from caxton.memory.errors import MemoryLimitExceeded
from caxton.memory.index import IndexEntry, VectorIndex
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
    ) -> None:
        if max_entities is not None and max_entities < 1:
            raise ValueError(f"max_entities must be at least 1, got {max_entities}")
        self.store = store
        self.embedder = embedder
        self.max_entities = max_entities
        self.accelerator = accelerator
        self._index = VectorIndex(embedder.dim)
        self._index_ready = False
        self._index_limiter = trio.CapacityLimiter(1)
        self._write_lock = trio.Lock()
        self._latency = LatencyWindow(latency_window)
        self._on_search = on_search
        self._entity_count = 0

    # ----------------------------------------------------------------------------- lifecycle

    async def run(
        self, *, task_status: trio.TaskStatus[MemoryService] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Build the accelerator from DuckDB, report started with this service, then wait.

        Cancellation:
            Cancelling ``run`` stops the service; the store and embedder are not closed (they
            belong to outer nurseries).

        Resource handling:
            The accelerator's matrix is dropped when ``run`` exits.
        """
        await self.rebuild_index()
        try:
            task_status.started(self)
            await trio.sleep_forever()
        finally:
            self._index_ready = False
            self._index.clear()

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
            if not self.accelerator:
                return len(entries)
            fresh = VectorIndex(self.embedder.dim)
            await self._in_index(lambda _: fresh.upsert(entries, matrix))
            self._index = fresh
            self._index_ready = True
            return len(entries)

    async def _in_index(self, fn: Callable[[VectorIndex], T]) -> T:
        index = self._index
        return await trio.to_thread.run_sync(fn, index, limiter=self._index_limiter)

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
            max_entities=self.max_entities,
            searches_total=self._latency.count,
            search_window=len(self._latency),
            search_p50_ms=self._latency.percentile(0.5) * 1000.0,
            search_p99_ms=self._latency.percentile(0.99) * 1000.0,
            accelerator_enabled=self.accelerator,
            accelerator_ready=self._index_ready,
            index_rows=len(self._index),
        )


def _execute(statement: str, conn: Connection) -> None:
    conn.execute(statement)


def _index_entry(entity: Entity) -> IndexEntry:
    return IndexEntry(
        name=entity.name, entity_type=entity.entity_type, scope=entity.scope, agent=entity.agent
    )


def _not_found(name: str) -> NotFound:
    return NotFound(f"entity {name!r} does not exist", details={"name": name})
