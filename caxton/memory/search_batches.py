"""Concurrent memory searches on PostgreSQL, answered several to a statement (issue #21).

On a shared store every search is a statement in a worker thread (no process-local mirror:
other instances write the same tables). Under concurrent searches each one paid its own
thread trip, pooled connection, plan and result parsing, most of it Python holding the GIL
that the event loop needs. :class:`SearchBatcher` lets at most ``slots`` statements run at
once; searches that arrive while they run wait, and the next free slot takes every waiting
search with the same terms (limit, similarity floor, scope, types; each its own asking
agent) into one statement
(:func:`caxton.memory.postgres_sql.search_entities_many`). A search that finds a slot free
and nobody waiting runs at once, alone, in its own task: nothing waits for company.

Each caller gets what its own statement would have given. If a shared statement fails for
another reason than the store being unavailable, its searches run again one by one, so a
search that breaks a statement fails only itself. A caller that is cancelled while waiting
leaves the queue; once its statement has started, the statement finishes for the others.
"""

from __future__ import annotations

import collections
import functools
from typing import TYPE_CHECKING, Any, NoReturn

import attrs
import numpy as np
import trio
from numpy.typing import NDArray

from caxton.errors import ServiceUnavailable
from caxton.memory import postgres_sql
from caxton.memory.accelerator import SearchFilters

if TYPE_CHECKING:
    from collections.abc import Sequence

    from caxton.memory.types import Entity
    from caxton.store.backend import Backend

#: Statements in flight at once: few enough that searches gather while they run, enough to
#: keep PostgreSQL's backends and the event loop both busy. Under 16 connections of searches
#: on 2 cores, 2 slots gave 495-544 searches/s (p99 40-44 ms) against 390-452 (p99 64-77)
#: one statement per search, 458-466 with 4 slots, 401-500 with 1. A statement is an index
#: search with a limit, which pgvector bounds (``hnsw.max_scan_tuples`` for filtered ones) and
#: ``storage.postgres.statement_timeout`` caps; ``exact`` scans do not take a slot.
DEFAULT_SLOTS = 2


def default_slots(*, workers: int = 1) -> int:
    """Search statements in flight per server process: :data:`DEFAULT_SLOTS` shared among the
    host's ``server.workers`` processes, at least one each.

    Two workers with two slots each ran four statements beside two event loops on the same
    cores: under 16 connections of searches on this 2-core machine 834-1040 searches/s with a
    p99 of 43-743 ms (a worker's searches waited behind the others' in the kernel's run queue),
    against 1090-1189 searches/s, p99 22-26 ms and at most 38 ms with one slot each (five
    runs each way, alternating servers).
    """
    return max(1, DEFAULT_SLOTS // max(1, workers))


#: The most searches one statement answers (a longer wait than this is a queue anyway).
MAX_BATCH = 32

Result = tuple[list[tuple[str, float]], dict[str, "Entity"]]
_Key = tuple[int, float, Any, Any]


@attrs.define(eq=False)
class _Search:
    vector: NDArray[np.float32]
    filters: SearchFilters
    key: _Key
    done: trio.Event = attrs.field(factory=trio.Event)
    result: Result | None = None
    error: BaseException | None = None
    started: bool = False

    def succeed(self, result: Result) -> None:
        self.result = result
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


def _key(filters: SearchFilters) -> _Key:
    """The terms a shared statement holds in common: all but the asking agent, which is each
    row's own."""
    types = filters["entity_types"]
    return (
        filters["limit"],
        filters["min_similarity"],
        filters["scope"],
        None if types is None else tuple(types),
    )


class SearchBatcher:
    """Index searches on a PostgreSQL store, several to a statement when they wait together.

    Args:
        store: the shared store the memory tables are in.
        ef_search: pgvector's ``hnsw.ef_search`` for the statements (as the single search's).
        slots: statements in flight at once.
        max_batch: searches per statement.
    """

    def __init__(
        self,
        store: Backend,
        *,
        ef_search: int,
        slots: int = DEFAULT_SLOTS,
        max_batch: int = MAX_BATCH,
    ) -> None:
        if slots < 1 or max_batch < 1:
            raise ValueError(f"slots and max_batch must be at least 1, got {slots}, {max_batch}")
        self.store = store
        self.ef_search = ef_search
        self.max_batch = max_batch
        self._slots = trio.Semaphore(slots)
        self._queue: collections.deque[_Search] = collections.deque()
        self._queued = trio.Event()
        self._running = False
        self.statements = 0
        self.searches = 0

    async def run(
        self, *, task_status: trio.TaskStatus[SearchBatcher] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Report started, then send waiting searches to the store until cancelled.

        Cancellation:
            Statements in flight finish first (a store call runs to its end); searches still
            waiting then fail with RuntimeError.
        """
        self._running = True
        try:
            async with trio.open_nursery() as nursery:
                task_status.started(self)
                while True:
                    await self._queued.wait()
                    self._queued = trio.Event()
                    while self._queue:
                        await self._slots.acquire()
                        batch = self._take()
                        if batch:
                            nursery.start_soon(self._answer, batch)
                        else:
                            self._slots.release()
        finally:
            self._running = False
            waiting, self._queue = self._queue, collections.deque()
            for search in waiting:
                search.fail(RuntimeError("the memory service stopped"))

    def _take(self) -> list[_Search]:
        """The oldest waiting search and every other waiting one with its terms (none when
        the waiting ones were cancelled meanwhile)."""
        if not self._queue:
            return []
        first = self._queue.popleft()
        batch = [first]
        kept: collections.deque[_Search] = collections.deque()
        while self._queue:
            search = self._queue.popleft()
            if search.key == first.key and len(batch) < self.max_batch:
                batch.append(search)
            else:
                kept.append(search)
        self._queue = kept
        for search in batch:
            search.started = True
        return batch

    async def search(self, vector: NDArray[np.float32], filters: SearchFilters) -> Result:
        """The hits of one index search and their entities, as
        :func:`caxton.memory.postgres_sql.search_entities` gives them.

        Raises:
            RuntimeError: the batcher is not running.
            Exception: what the store raised for this search's statement.

        Cancellation:
            A search still waiting leaves the queue; one whose statement started does not
            stop it (the others in it get their results).
        """
        if not self._running:
            raise RuntimeError("the search batcher is not running")
        search = _Search(vector=vector, filters=filters, key=_key(filters))
        if not self._queue:
            # nobody waits and a slot is free: the statement runs in this task, without the
            # hand-over to the batching task and back (0.3-0.5 ms of a lone search here)
            try:
                self._slots.acquire_nowait()
            except trio.WouldBlock:
                pass
            else:
                try:
                    return (await self._statement([search]))[0]
                finally:
                    self._slots.release()
        self._queue.append(search)
        self._queued.set()
        try:
            await search.done.wait()
        except BaseException:
            if not search.started:
                self._queue.remove(search)
            raise
        if search.error is not None:
            raise search.error
        assert search.result is not None
        return search.result

    async def _answer(self, batch: list[_Search]) -> None:
        try:
            try:
                results = await self._statement(batch)
            except ServiceUnavailable as exc:  # the store is down: no search would do better
                for search in batch:
                    search.fail(exc)
                return
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].fail(exc)
                    return
                # one search broke the statement: find out whose, one at a time
                for search in batch:
                    try:
                        search.succeed((await self._statement([search]))[0])
                    except Exception as alone:
                        search.fail(alone)
                return
            for search, result in zip(batch, results, strict=True):
                search.succeed(result)
        except BaseException as exc:  # cancelled: nobody of this batch waits in vain
            for search in batch:
                if not search.done.is_set():
                    search.fail(RuntimeError(f"the memory service stopped ({type(exc).__name__})"))
            raise
        finally:
            self._slots.release()

    async def _statement(self, batch: Sequence[_Search]) -> list[Result]:
        self.statements += 1
        self.searches += len(batch)
        filters = batch[0].filters
        read = functools.partial(
            postgres_sql.search_entities_many,
            queries=[search.vector for search in batch],
            agents=[search.filters["agent"] for search in batch],
            exact=False,
            ef_search=self.ef_search,
            **filters,
        )
        results = await self.store.read_statements([read])
        assert results is not None  # a single read always has its result
        return results[0]
