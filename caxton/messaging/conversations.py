"""The conversations component: every routed message, kept in the store.

Recording is on the routing hot path, so :meth:`Conversations.record` only queues the message;
the component's task writes queued messages in batches (one transaction per batch, at most
``flush_interval_s`` after the first message of the batch). Every read of messages first waits
for what is queued to be written, so a reader always sees the messages recorded before it asked;
a conversation's status is answered from memory when it has messages not written yet. Shutdown
writes what is still queued; a crash loses at most the last ``flush_interval_s`` of messages.

The SQL is a :class:`~caxton.messaging.conversation_sql.ConversationSQL` for the store's
dialect. On a store other processes share (``store.shared``), another instance may create,
continue, close or sweep the same conversation: then the status and the initiator are read from
the database (this process's memory only answers for what it has not written yet), and every
conversation is upserted, never assumed to be still there. A conversation begun on one instance
continues on another with its earlier turns once the first has written them (within
``flush_interval_s``).
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from caxton.errors import CaxtonError
from caxton.messages import Message
from caxton.messaging.conversation_sql import (
    ACTIVE,
    CLOSED,
    STATUSES,
    Batch,
    ConversationSQL,
    ConversationSummary,
)
from caxton.messaging.conversation_sql_duckdb import DUCKDB_CONVERSATION_SQL
from caxton.messaging.errors import ConversationNotFound
from caxton.store.errors import StorageUnavailable

if TYPE_CHECKING:
    from collections.abc import Callable, Collection

    from caxton.store.backend import Backend

__all__ = [
    "ACTIVE",
    "CLOSED",
    "STATUSES",
    "Conversation",
    "ConversationSummary",
    "Conversations",
]

LOGGER = logging.getLogger("caxton.conversations")

#: While the database does not answer, held messages are tried again this often.
HOLD_RETRY_S = 1.0


@attrs.frozen(kw_only=True)
class Conversation:
    """One conversation and its messages, oldest first."""

    summary: ConversationSummary
    messages: tuple[Message, ...]

    def as_json(self) -> dict[str, Any]:
        return {
            **self.summary.as_json(),
            "messages": [{**m.as_json(), "hop": m.hop} for m in self.messages],
        }


class Conversations:
    """Conversations (DESIGN §5): participants, messages in order, status, last activity.

    Args:
        store: the running store, migrated with :data:`CONVERSATION_MIGRATIONS` (DuckDB) or
            :data:`CONVERSATION_POSTGRES_MIGRATIONS` (PostgreSQL).
        ttl_s: conversations idle longer than this are removed by :meth:`sweep`.
        flush_interval_s: how long recorded messages may wait to be written as one batch.
        status_cache: how many conversations' status is kept in memory.
        clock: the wall clock (epoch seconds), for the TTL.
        sql: the statements in the store's dialect (DuckDB's by default).
        max_held: while the database does not answer, recorded messages are held (and
            written once it answers); past this many the oldest are dropped and counted.
    """

    def __init__(
        self,
        store: Backend,
        *,
        ttl_s: float = 86_400.0,
        flush_interval_s: float = 0.1,
        status_cache: int = 10_000,
        clock: Callable[[], float] = time.time,
        sql: ConversationSQL = DUCKDB_CONVERSATION_SQL,
        max_held: int = 100_000,
    ) -> None:
        self.store = store
        self.max_held = max_held
        self._holding_since = 0.0
        self._dropped = 0
        self._writing_messages = 0
        self.sql = sql
        self.ttl_s = ttl_s
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self._status_cache = status_cache
        self._status: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._initiators: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._pending = Batch()
        self._writing: Collection[str] = ()  # the conversations of the batch being written
        # conversations minted here (mark_new) whose first message is not written yet
        self._fresh: dict[str, None] = {}
        # conversations whose row this process wrote (and no sweep removed since)
        self._stored: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._wake = trio.Event()
        self._flush_lock = trio.Lock()
        self._recorded = 0
        self._written = 0
        self._batches = 0
        self._write_cpu_s = 0.0  # the writer thread's CPU (not what DuckDB's own threads spend)
        self._write_wall_s = 0.0

    # -- component -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Conversations] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Write recorded messages in batches until cancelled.

        Cancellation:
            What is still queued is written before returning (shielded, at most 10 s).
        """
        task_status.started(self)
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                await trio.sleep(self.flush_interval_s)
                try:
                    await self.flush()
                except StorageUnavailable as exc:
                    # the batch is held (_hold): try again shortly, whether or not more come
                    if not self._holding_since:
                        self._holding_since = time.monotonic()
                        LOGGER.warning(
                            "conversation messages held until the database answers: %s",
                            exc.message,
                        )
                    self._wake.set()
                    await trio.sleep(HOLD_RETRY_S)
                    continue
                except CaxtonError as exc:
                    LOGGER.error("conversation messages not written: %s", exc.message)
                if self._holding_since:
                    LOGGER.info(
                        "held conversation messages written after %.1f s",
                        time.monotonic() - self._holding_since,
                    )
                    self._holding_since = 0.0
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                try:
                    await self.flush()
                except CaxtonError as exc:
                    LOGGER.warning("conversation messages not written at shutdown: %s", exc.message)

    # -- writes --------------------------------------------------------------------------------

    def record(self, message: Message) -> None:
        """Queue ``message`` for its conversation (created on its first message)."""
        self._pending.add(message)
        self._recorded += 1
        cid = message.conversation_id
        if self._status.get(cid) is None:
            self._remember(cid, ACTIVE)
        if message.sender and cid not in self._initiators:
            self._initiators[cid] = message.sender
            while len(self._initiators) > self._status_cache:
                self._initiators.popitem(last=False)
        self._wake.set()

    def initiator(self, conversation_id: str) -> str | None:
        """Who sent the first message of a conversation recorded since the server started (on
        a shared store: or whose status was asked for, which reads it from the database)."""
        return self._initiators.get(conversation_id)

    def mark_new(self, conversation_id: str) -> None:
        """``conversation_id`` was just minted here: no need to look it up before using it."""
        self._remember(conversation_id, ACTIVE)
        self._fresh[conversation_id] = None
        while len(self._fresh) > self._status_cache:
            # forgetting only costs an upsert instead of an insert
            del self._fresh[next(iter(self._fresh))]

    async def flush(self) -> None:
        """Write every message recorded so far.

        Raises:
            StoreClosed: the store is not running (the messages are dropped).

        Cancellation:
            A batch that started being written finishes first (shielded): a recorded message
            is either written or still queued, never half-written.
        """
        async with self._flush_lock:
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if not self._pending.messages:
            return
        batch, self._pending = self._pending, Batch()
        fresh = {cid for cid in batch.totals if cid in self._fresh}
        for cid in fresh:
            del self._fresh[cid]
        # on a shared store another instance may have swept a row this process wrote
        stored: Collection[str] = (
            () if self.store.shared else {cid for cid in batch.totals if cid in self._stored}
        )
        self._writing = batch.totals.keys()
        self._writing_messages = len(batch.messages)
        started = time.perf_counter()
        with trio.CancelScope(shield=True):
            try:
                cpu = await self.sql.write_batch(self.store, batch, fresh, stored)
            except StorageUnavailable:
                self._hold(batch, fresh)
                raise
            except CaxtonError:
                raise
            except Exception:
                LOGGER.exception("writing %d conversation messages failed", len(batch.messages))
                return
            finally:
                self._writing = ()
                self._writing_messages = 0
        self._batches += 1
        self._written += len(batch.messages)
        self._write_cpu_s += cpu
        self._write_wall_s += time.perf_counter() - started
        for cid in batch.totals:
            self._stored[cid] = None
            self._stored.move_to_end(cid)
        while len(self._stored) > self._status_cache:
            self._stored.popitem(last=False)

    def _hold(self, batch: Batch, fresh: Collection[str]) -> None:
        """Keep a batch the database did not take ahead of what came since, to be written
        when it answers again; past ``max_held`` messages the oldest are dropped (counted)."""
        self._writing_messages = 0
        batch.extend(self._pending)
        for cid in fresh:
            self._fresh[cid] = None
        overflow = len(batch.messages) - self.max_held
        if overflow > 0:
            batch = batch.newest(self.max_held)
            self._dropped += overflow
            LOGGER.error(
                "%d conversation messages dropped: the database has not answered for a while "
                "and %d are held (the most kept)",
                overflow,
                self.max_held,
            )
        self._pending = batch

    async def close(self, conversation_id: str) -> ConversationSummary:
        """Close a conversation: nothing more can be sent in it.

        Raises:
            ConversationNotFound: no such conversation.
        """
        await self.flush()
        if not await self.store.execute_write_fn(
            lambda conn: self.sql.set_status(conn, conversation_id, CLOSED)
        ):
            raise ConversationNotFound(conversation_id)
        self._remember(conversation_id, CLOSED)
        return await self.summary(conversation_id)

    async def sweep(self) -> int:
        """Remove conversations idle for longer than the TTL; return how many.

        Holds the batch writer meanwhile: a batch that updates a conversation this removes
        must not be worked out before the removal and written after it.
        """
        async with self._flush_lock:
            return await self._sweep_locked()

    async def _sweep_locked(self) -> int:
        await self._flush_locked()
        cutoff = self.clock() - self.ttl_s
        removed = await self.store.execute_write_fn(lambda conn: self.sql.sweep(conn, cutoff))
        for cid in removed:
            self._status.pop(cid, None)
            self._initiators.pop(cid, None)
            self._stored.pop(cid, None)
        if removed:
            LOGGER.info("removed %d conversations idle for over %gs", len(removed), self.ttl_s)
        return len(removed)

    # -- reads ---------------------------------------------------------------------------------

    async def status(self, conversation_id: str) -> str | None:
        """``active``, ``closed``, or ``None`` for a conversation never seen.

        Never waits for queued messages to be written: on a routed message's path, a new
        conversation id costs one store read, not a batch write and a read.

        On a shared store every conversation this process has no unwritten message of is read
        from the database (another instance may have closed it), with its initiator.
        """
        if self.store.shared:
            return await self._shared_status(conversation_id)
        known = self._status.get(conversation_id)
        if known is not None:
            self._status.move_to_end(conversation_id)
            return known
        # not in the cache: its messages not written yet (the cache forgot it) are looked for
        # in memory; the store holds the rest, so nothing queued has to be written first
        if self._unwritten(conversation_id):
            self._remember(conversation_id, ACTIVE)
            return ACTIVE
        found = await self.store.execute_fn(lambda conn: self.sql.status(conn, conversation_id))
        if found is not None:
            self._remember(conversation_id, found)
        return found

    async def _shared_status(self, conversation_id: str) -> str | None:
        if conversation_id in self._fresh:
            return ACTIVE  # minted here, not written yet: no other instance knows of it
        known_initiator = conversation_id in self._initiators

        def read(conn: Any) -> tuple[str | None, str | None]:
            found = self.sql.status(conn, conversation_id)
            if found is None or known_initiator:
                return found, None
            return found, self.sql.initiator(conn, conversation_id)

        found, initiator = await self.store.execute_fn(read)
        if initiator is not None and conversation_id not in self._initiators:
            self._initiators[conversation_id] = initiator
            while len(self._initiators) > self._status_cache:
                self._initiators.popitem(last=False)
        if found is None and self._unwritten(conversation_id):
            found = ACTIVE
        if found is not None:
            self._remember(conversation_id, found)
        return found

    async def recent(self, conversation_id: str, limit: int) -> list[Message]:
        """The last ``limit`` messages of a conversation, oldest first ([] when unknown).

        Cancellation:
            As :meth:`caxton.store.Store.execute_fn`.
        """
        if limit <= 0:
            return []
        await self.flush()

        latest = await self.store.execute_fn(
            lambda conn: self.sql.messages(conn, conversation_id, limit, latest=True)
        )
        return latest[::-1]

    async def summary(self, conversation_id: str) -> ConversationSummary:
        """One conversation's summary.

        Raises:
            ConversationNotFound: no such conversation.
        """
        await self.flush()
        found = await self.store.execute_fn(lambda conn: self.sql.summary(conn, conversation_id))
        if found is None:
            raise ConversationNotFound(conversation_id)
        return found

    async def get(self, conversation_id: str, *, limit: int = 1000) -> Conversation:
        """One conversation with its first ``limit`` messages.

        Raises:
            ConversationNotFound: no such conversation.
        """
        summary = await self.summary(conversation_id)

        first = await self.store.execute_fn(
            lambda conn: self.sql.messages(conn, conversation_id, limit, latest=False)
        )
        return Conversation(summary=summary, messages=tuple(first))

    async def list(
        self,
        *,
        status: str | None = None,
        participant: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> tuple[list[ConversationSummary], int]:
        """Conversations, most recently active first, and how many match in all."""
        await self.flush()
        return await self.store.execute_fn(
            lambda conn: self.sql.page(
                conn, status=status, participant=participant, limit=limit, offset=offset
            )
        )

    def statistics(self) -> dict[str, int]:
        """Messages recorded and queued (held ones and the batch being written included), and
        dropped (past ``max_held``); batches and messages written, and what writing them
        cost: the writer thread's CPU and the time from handing a batch to the store to its
        commit, in microseconds."""
        return {
            "recorded": self._recorded,
            "queued": len(self._pending.messages) + self._writing_messages,
            "batches": self._batches,
            "written": self._written,
            "dropped": self._dropped,
            "write_cpu_us": round(self._write_cpu_s * 1e6),
            "write_wall_us": round(self._write_wall_s * 1e6),
        }

    def _unwritten(self, conversation_id: str) -> bool:
        """Whether a message of ``conversation_id`` is queued or being written."""
        return conversation_id in self._pending.totals or conversation_id in self._writing

    def _remember(self, conversation_id: str, status: str) -> None:
        self._status[conversation_id] = status
        self._status.move_to_end(conversation_id)
        while len(self._status) > self._status_cache:
            self._status.popitem(last=False)
