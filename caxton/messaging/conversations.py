"""The conversations component: every routed message, kept in the store.

Recording is on the routing hot path, so :meth:`Conversations.record` only queues the message;
the component's task writes queued messages in batches (one transaction per batch, at most
``flush_interval_s`` after the first message of the batch). Every read of messages first waits
for what is queued to be written, so a reader always sees the messages recorded before it asked;
a conversation's status is answered from memory when it has messages not written yet. Shutdown
writes what is still queued; a crash loses at most the last ``flush_interval_s`` of messages.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import duckdb
import trio

from caxton.errors import CaxtonError
from caxton.messages import Message
from caxton.messaging.errors import ConversationNotFound

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from caxton.store import Connection, Store

LOGGER = logging.getLogger("caxton.conversations")

ACTIVE = "active"
CLOSED = "closed"
STATUSES = (ACTIVE, CLOSED)

_MESSAGE_COLUMNS = (
    "conversation_id, message_id, performative, sender, receiver, capability, content, "
    "reply_with, in_reply_to, created_at, hop"
)


@attrs.frozen(kw_only=True)
class ConversationSummary:
    """One conversation without its messages."""

    conversation_id: str
    status: str
    participants: tuple[str, ...]
    created_at: float
    last_activity: float
    message_count: int

    def as_json(self) -> dict[str, Any]:
        return {
            "conversation_id": self.conversation_id,
            "status": self.status,
            "participants": list(self.participants),
            "created_at": self.created_at,
            "last_activity": self.last_activity,
            "message_count": self.message_count,
        }


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


#: ``from_json`` shapes of a batch: the rows travel as one JSON parameter, parsed by DuckDB
#: (binding eleven parameters per row costs ten times more).
_MESSAGES_SHAPE = json.dumps(
    [
        {
            "conversation_id": "VARCHAR",
            "message_id": "VARCHAR",
            "performative": "VARCHAR",
            "sender": "VARCHAR",
            "receiver": "VARCHAR",
            "capability": "VARCHAR",
            "content": "VARCHAR",
            "reply_with": "VARCHAR",
            "in_reply_to": "VARCHAR",
            "created_at": "DOUBLE",
            "hop": "INTEGER",
        }
    ]
)
_CONVERSATIONS_SHAPE = json.dumps(
    [{"id": "VARCHAR", "first": "DOUBLE", "last": "DOUBLE", "count": "BIGINT"}]
)


def _message_row(message: Message) -> dict[str, object]:
    return {
        "conversation_id": message.conversation_id,
        "message_id": message.message_id,
        "performative": message.performative,
        "sender": message.sender,
        "receiver": message.receiver,
        "capability": message.capability,
        "content": json.dumps(message.content),
        "reply_with": message.reply_with,
        "in_reply_to": message.in_reply_to,
        "created_at": message.created_at,
        "hop": message.hop,
    }


def _message_from_row(row: Sequence[Any]) -> Message:
    content = json.loads(row[6])
    return Message(
        conversation_id=row[0],
        message_id=row[1],
        performative=row[2],
        sender=row[3],
        receiver=row[4],
        capability=row[5],
        content=content if isinstance(content, str | dict) else json.dumps(content),
        reply_with=row[7],
        in_reply_to=row[8],
        created_at=float(row[9]),
        hop=int(row[10]),
    )


#: The batch's rows as one struct each (``r``): field access is about a third cheaper for DuckDB
#: than ``unnest(..., recursive := true)``.
_INSERT_MESSAGES = (
    f"INSERT INTO conversation_messages ({_MESSAGE_COLUMNS}) SELECT "
    + ", ".join(f"r.{name.strip()}" for name in _MESSAGE_COLUMNS.split(","))
    + " FROM (SELECT unnest(from_json(?::JSON, ?)) AS r)"
)
_INSERT_CONVERSATIONS = (
    "INSERT INTO conversations SELECT r.id, ?, r.first, r.last, r.count "
    "FROM (SELECT unnest(from_json(?::JSON, ?)) AS r)"
)
_UPSERT_CONVERSATIONS = (
    f"{_INSERT_CONVERSATIONS} ON CONFLICT (conversation_id) DO UPDATE SET "
    "last_activity = greatest(last_activity, excluded.last_activity), "
    "message_count = message_count + excluded.message_count"
)


def _write_batch(batch: Sequence[Message], fresh: Collection[str], conn: Connection) -> None:
    """Write ``batch``: its messages, and its conversations' activity and message counts.

    Conversations in ``fresh`` (ids minted here and not written yet) are plain inserts; the
    others are upserts, which cost DuckDB about four times as much.
    """
    totals: dict[str, list[Any]] = {}
    for message in batch:
        at = message.created_at
        entry = totals.get(message.conversation_id)
        if entry is None:
            totals[message.conversation_id] = [at, at, 1]
        else:
            entry[0] = min(entry[0], at)
            entry[1] = max(entry[1], at)
            entry[2] += 1
    conn.execute(_INSERT_MESSAGES, [json.dumps([_message_row(m) for m in batch]), _MESSAGES_SHAPE])
    new: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    for cid, (first, last, count) in totals.items():
        (new if cid in fresh else known).append(
            {"id": cid, "first": first, "last": last, "count": count}
        )
    if new:
        conn.execute(_INSERT_CONVERSATIONS, [ACTIVE, json.dumps(new), _CONVERSATIONS_SHAPE])
    if known:
        conn.execute(_UPSERT_CONVERSATIONS, [ACTIVE, json.dumps(known), _CONVERSATIONS_SHAPE])


def _summaries(conn: Connection, where: str, params: list[object]) -> list[ConversationSummary]:
    rows = conn.execute(
        "SELECT c.conversation_id, c.status, c.created_at, c.last_activity, c.message_count, "
        "(SELECT list(DISTINCT name ORDER BY name) FROM ("
        "  SELECT sender AS name FROM conversation_messages m"
        "  WHERE m.conversation_id = c.conversation_id"
        "  UNION ALL SELECT receiver FROM conversation_messages m"
        "  WHERE m.conversation_id = c.conversation_id) WHERE name IS NOT NULL) "
        f"FROM conversations c {where}",
        params,
    ).fetchall()
    return [
        ConversationSummary(
            conversation_id=str(r[0]),
            status=str(r[1]),
            created_at=float(r[2]),
            last_activity=float(r[3]),
            message_count=int(r[4]),
            participants=tuple(r[5] or ()),
        )
        for r in rows
    ]


class Conversations:
    """Conversations (DESIGN §5): participants, messages in order, status, last activity.

    Args:
        store: the running store, migrated with :data:`CONVERSATION_MIGRATIONS`.
        ttl_s: conversations idle longer than this are removed by :meth:`sweep`.
        flush_interval_s: how long recorded messages may wait to be written as one batch.
        status_cache: how many conversations' status is kept in memory.
        clock: the wall clock (epoch seconds), for the TTL.
    """

    def __init__(
        self,
        store: Store,
        *,
        ttl_s: float = 86_400.0,
        flush_interval_s: float = 0.1,
        status_cache: int = 10_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.ttl_s = ttl_s
        self.flush_interval_s = flush_interval_s
        self.clock = clock
        self._status_cache = status_cache
        self._status: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._initiators: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._pending: list[Message] = []
        self._writing: Sequence[Message] = ()  # the batch being written
        # conversations minted here (mark_new) whose first message is not written yet
        self._fresh: dict[str, None] = {}
        self._wake = trio.Event()
        self._flush_lock = trio.Lock()
        self._recorded = 0

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
                except CaxtonError as exc:
                    LOGGER.error("conversation messages not written: %s", exc.message)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(10):
                try:
                    await self.flush()
                except CaxtonError as exc:
                    LOGGER.warning("conversation messages not written at shutdown: %s", exc.message)

    # -- writes --------------------------------------------------------------------------------

    def record(self, message: Message) -> None:
        """Queue ``message`` for its conversation (created on its first message)."""
        self._pending.append(message)
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
        """Who sent the first message of a conversation recorded since the server started."""
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
            if not self._pending:
                return
            batch, self._pending = self._pending, []
            fresh = {m.conversation_id for m in batch if m.conversation_id in self._fresh}
            for cid in fresh:
                del self._fresh[cid]
            self._writing = batch
            with trio.CancelScope(shield=True):
                try:
                    try:
                        await self.store.execute_write_fn(
                            lambda conn: _write_batch(batch, fresh, conn)
                        )
                    except duckdb.ConstraintException:
                        # a "fresh" id was there after all (never expected): upsert them all
                        await self.store.execute_write_fn(
                            lambda conn: _write_batch(batch, (), conn)
                        )
                except CaxtonError:
                    raise
                except Exception:
                    LOGGER.exception("writing %d conversation messages failed", len(batch))
                finally:
                    self._writing = ()

    async def close(self, conversation_id: str) -> ConversationSummary:
        """Close a conversation: nothing more can be sent in it.

        Raises:
            ConversationNotFound: no such conversation.
        """
        await self.flush()

        def close(conn: Connection) -> bool:
            row = conn.execute(
                "UPDATE conversations SET status = ? WHERE conversation_id = ? "
                "RETURNING conversation_id",
                [CLOSED, conversation_id],
            ).fetchone()
            return row is not None

        if not await self.store.execute_write_fn(close):
            raise ConversationNotFound(conversation_id)
        self._remember(conversation_id, CLOSED)
        return await self.summary(conversation_id)

    async def sweep(self) -> int:
        """Remove conversations idle for longer than the TTL; return how many."""
        await self.flush()
        cutoff = self.clock() - self.ttl_s

        def sweep(conn: Connection) -> list[str]:
            ids = [
                str(r[0])
                for r in conn.execute(
                    "SELECT conversation_id FROM conversations WHERE last_activity < ?", [cutoff]
                ).fetchall()
            ]
            if ids:
                conn.execute(
                    "DELETE FROM conversation_messages WHERE conversation_id IN "
                    "(SELECT conversation_id FROM conversations WHERE last_activity < ?)",
                    [cutoff],
                )
                conn.execute("DELETE FROM conversations WHERE last_activity < ?", [cutoff])
            return ids

        removed = await self.store.execute_write_fn(sweep)
        for cid in removed:
            self._status.pop(cid, None)
            self._initiators.pop(cid, None)
        if removed:
            LOGGER.info("removed %d conversations idle for over %gs", len(removed), self.ttl_s)
        return len(removed)

    # -- reads ---------------------------------------------------------------------------------

    async def status(self, conversation_id: str) -> str | None:
        """``active``, ``closed``, or ``None`` for a conversation never seen.

        Never waits for queued messages to be written: on a routed message's path, a new
        conversation id costs one store read, not a batch write and a read.
        """
        known = self._status.get(conversation_id)
        if known is not None:
            self._status.move_to_end(conversation_id)
            return known
        # not in the cache: its messages not written yet (the cache forgot it) are looked for
        # in memory; the store holds the rest, so nothing queued has to be written first
        if self._unwritten(conversation_id):
            self._remember(conversation_id, ACTIVE)
            return ACTIVE

        def status(conn: Connection) -> str | None:
            row = conn.execute(
                "SELECT status FROM conversations WHERE conversation_id = ?", [conversation_id]
            ).fetchone()
            return None if row is None else str(row[0])

        found = await self.store.execute_fn(status)
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

        def recent(conn: Connection) -> list[Message]:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM conversation_messages "
                "WHERE conversation_id = ? ORDER BY seq DESC LIMIT ?",
                [conversation_id, limit],
            ).fetchall()
            return [_message_from_row(r) for r in reversed(rows)]

        return await self.store.execute_fn(recent)

    async def summary(self, conversation_id: str) -> ConversationSummary:
        """One conversation's summary.

        Raises:
            ConversationNotFound: no such conversation.
        """
        await self.flush()
        found = await self.store.execute_fn(
            lambda conn: _summaries(conn, "WHERE c.conversation_id = ?", [conversation_id])
        )
        if not found:
            raise ConversationNotFound(conversation_id)
        return found[0]

    async def get(self, conversation_id: str, *, limit: int = 1000) -> Conversation:
        """One conversation with its first ``limit`` messages.

        Raises:
            ConversationNotFound: no such conversation.
        """
        summary = await self.summary(conversation_id)

        def messages(conn: Connection) -> list[Message]:
            rows = conn.execute(
                f"SELECT {_MESSAGE_COLUMNS} FROM conversation_messages "
                "WHERE conversation_id = ? ORDER BY seq LIMIT ?",
                [conversation_id, limit],
            ).fetchall()
            return [_message_from_row(r) for r in rows]

        return Conversation(summary=summary, messages=tuple(await self.store.execute_fn(messages)))

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
        clauses, params = [], []
        if status is not None:
            clauses.append("c.status = ?")
            params.append(status)
        if participant is not None:
            clauses.append(
                "c.conversation_id IN (SELECT conversation_id FROM conversation_messages "
                "WHERE sender = ? OR receiver = ?)"
            )
            params.extend([participant, participant])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""

        def page(conn: Connection) -> tuple[list[ConversationSummary], int]:
            total_row = conn.execute(
                f"SELECT count(*) FROM conversations c {where}", params
            ).fetchone()
            rows = _summaries(
                conn,
                f"{where} ORDER BY c.last_activity DESC, c.conversation_id LIMIT ? OFFSET ?",
                [*params, limit, offset],
            )
            return rows, int(total_row[0]) if total_row else 0

        return await self.store.execute_fn(page)

    def statistics(self) -> dict[str, int]:
        return {"recorded": self._recorded, "queued": len(self._pending)}

    def _unwritten(self, conversation_id: str) -> bool:
        """Whether a message of ``conversation_id`` is queued or being written."""
        return any(
            m.conversation_id == conversation_id
            for batch in (self._pending, self._writing)
            for m in batch
        )

    def _remember(self, conversation_id: str, status: str) -> None:
        self._status[conversation_id] = status
        self._status.move_to_end(conversation_id)
        while len(self._status) > self._status_cache:
            self._status.popitem(last=False)
