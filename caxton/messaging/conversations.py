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
import contextlib
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


_encode = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode


def _message_row(message: Message) -> str:
    """A message's row as a JSON array, in ``_MESSAGE_COLUMNS`` order (its content as JSON
    text): half the cost of a JSON object, for Python and for DuckDB."""
    return _encode(
        (
            message.conversation_id,
            message.message_id,
            message.performative,
            message.sender,
            message.receiver,
            message.capability,
            _encode(message.content),
            message.reply_with,
            message.in_reply_to,
            message.created_at,
            message.hop,
        )
    )


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


def _sql_text(text: str) -> str:
    """``text`` as a SQL string literal (no backslash escapes in DuckDB's standard strings)."""
    return "'" + text.replace("'", "''") + "'"


#: The rows of a batch travel as one JSON array of arrays of text, parsed by DuckDB and cast per
#: column (binding eleven parameters per row costs ten times more; arrays of text parse in
#: three quarters of the time of objects).
_ROWS = "unnest(from_json({rows}::JSON, '[[\"VARCHAR\"]]')) AS r"
_INSERT_MESSAGES = (
    f"INSERT INTO conversation_messages ({_MESSAGE_COLUMNS}) SELECT "
    "r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10]::DOUBLE, r[11]::INTEGER "
    f"FROM (SELECT {_ROWS})"
)
_CONVERSATION_ROWS = (
    f"SELECT r[1] AS id, r[2]::DOUBLE AS first, r[3]::DOUBLE AS last, r[4]::BIGINT AS count "
    f"FROM (SELECT {_ROWS})"
)
_INSERT_CONVERSATIONS = (
    f"INSERT INTO conversations SELECT id, '{ACTIVE}', first, last, count "
    f"FROM ({_CONVERSATION_ROWS})"
)
_UPDATE_CONVERSATIONS = (
    "UPDATE conversations SET last_activity = greatest(last_activity, c.last), "
    f"message_count = message_count + c.count FROM ({_CONVERSATION_ROWS}) c "
    "WHERE conversations.conversation_id = c.id"
)
_UPSERT_CONVERSATIONS = (
    f"{_INSERT_CONVERSATIONS} ON CONFLICT (conversation_id) DO UPDATE SET "
    "last_activity = greatest(last_activity, excluded.last_activity), "
    "message_count = message_count + excluded.message_count"
)


@attrs.define(eq=False)
class _Batch:
    """Messages recorded and not written yet, with what the writer needs already worked out.

    Each message's row is encoded when it is recorded (about 3 us on the recording task), and
    its conversation's activity and count summed, so that the writer thread holds the GIL only
    to join strings: a batch encoded there held it for ~0.3 ms at a time, which stalled the
    guest calls and the router running meanwhile.
    """

    messages: list[Message] = attrs.field(factory=list)
    rows: list[str] = attrs.field(factory=list)
    # conversation id -> [first activity, last activity, messages]
    totals: dict[str, list[Any]] = attrs.field(factory=dict)

    def add(self, message: Message) -> None:
        self.messages.append(message)
        self.rows.append(_message_row(message))
        at = message.created_at
        entry = self.totals.get(message.conversation_id)
        if entry is None:
            self.totals[message.conversation_id] = [at, at, 1]
        else:
            entry[0] = min(entry[0], at)
            entry[1] = max(entry[1], at)
            entry[2] += 1


def _write_batch(
    batch: _Batch, fresh: Collection[str], stored: Collection[str], conn: Connection
) -> None:
    """Write ``batch`` in one transaction: its messages, and its conversations' activity and
    message counts.

    Conversations in ``fresh`` (ids minted here, not written yet) are plain inserts, those in
    ``stored`` (written here before) plain updates; the others are upserts, which cost DuckDB
    about twice as much as either. The transaction is one script, one call into DuckDB: every
    statement called on its own costs DuckDB ~0.4 ms and the writer thread a wait for the GIL.
    """
    groups: tuple[list[str], list[str], list[str]] = ([], [], [])
    for cid, (first, last, count) in batch.totals.items():
        group = 0 if cid in fresh else 1 if cid in stored else 2
        groups[group].append(_encode((cid, first, last, count)))
    script = ["BEGIN", _INSERT_MESSAGES.format(rows=_sql_text("[" + ",".join(batch.rows) + "]"))]
    for statement, rows in zip(
        (_INSERT_CONVERSATIONS, _UPDATE_CONVERSATIONS, _UPSERT_CONVERSATIONS), groups, strict=True
    ):
        if rows:
            script.append(statement.format(rows=_sql_text("[" + ",".join(rows) + "]")))
    script.append("COMMIT")
    try:
        conn.execute(";\n".join(script))
    except BaseException:
        with contextlib.suppress(duckdb.Error):  # (no transaction left open to roll back)
            conn.rollback()
        raise


def _messages_of(
    conn: Connection, conversation_id: str, limit: int, *, latest: bool
) -> list[Message]:
    """The first ``limit`` messages of a conversation, or with ``latest`` its last ``limit``
    newest first."""
    order = "DESC" if latest else "ASC"
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM conversation_messages "
        f"WHERE conversation_id = ? ORDER BY seq {order} LIMIT ?",
        [conversation_id, limit],
    ).fetchall()
    return [_message_from_row(r) for r in rows]


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
        self._pending = _Batch()
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
            await self._flush_locked()

    async def _flush_locked(self) -> None:
        if not self._pending.messages:
            return
        batch, self._pending = self._pending, _Batch()
        fresh = {cid for cid in batch.totals if cid in self._fresh}
        for cid in fresh:
            del self._fresh[cid]
        stored = {cid for cid in batch.totals if cid in self._stored}
        self._writing = batch.totals.keys()

        def write(conn: Connection, fresh: Collection[str], stored: Collection[str]) -> float:
            started = time.thread_time()
            _write_batch(batch, fresh, stored, conn)
            return time.thread_time() - started

        started = time.perf_counter()
        with trio.CancelScope(shield=True):
            try:
                try:
                    cpu = await self.store.execute_write_fn(
                        lambda conn: write(conn, fresh, stored), transaction=False
                    )
                except duckdb.ConstraintException:
                    # a "fresh" id was there after all (never expected): upsert them all
                    cpu = await self.store.execute_write_fn(
                        lambda conn: write(conn, (), ()), transaction=False
                    )
            except CaxtonError:
                raise
            except Exception:
                LOGGER.exception("writing %d conversation messages failed", len(batch.messages))
                return
            finally:
                self._writing = ()
        self._batches += 1
        self._written += len(batch.messages)
        self._write_cpu_s += cpu
        self._write_wall_s += time.perf_counter() - started
        for cid in batch.totals:
            self._stored[cid] = None
            self._stored.move_to_end(cid)
        while len(self._stored) > self._status_cache:
            self._stored.popitem(last=False)

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
        """Remove conversations idle for longer than the TTL; return how many.

        Holds the batch writer meanwhile: a batch that updates a conversation this removes
        must not be worked out before the removal and written after it.
        """
        async with self._flush_lock:
            return await self._sweep_locked()

    async def _sweep_locked(self) -> int:
        await self._flush_locked()
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
            self._stored.pop(cid, None)
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

        latest = await self.store.execute_fn(
            lambda conn: _messages_of(conn, conversation_id, limit, latest=True)
        )
        return latest[::-1]

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

        first = await self.store.execute_fn(
            lambda conn: _messages_of(conn, conversation_id, limit, latest=False)
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
        """Messages recorded and queued; batches and messages written, and what writing them
        cost: the writer thread's CPU and the time from handing a batch to the store to its
        commit, in microseconds."""
        return {
            "recorded": self._recorded,
            "queued": len(self._pending.messages),
            "batches": self._batches,
            "written": self._written,
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
