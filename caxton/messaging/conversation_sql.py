"""What the conversations component asks of its SQL, whichever database holds it.

:class:`ConversationSQL` is the seam, with one implementation per dialect
(:mod:`~caxton.messaging.conversation_sql_duckdb`,
:mod:`~caxton.messaging.conversation_sql_postgres`), picked by the composition root together
with the store. What both share lives here: a conversation's summary, the batch of messages
not written yet, a message's row, and :class:`SharedConversationSQL`, the statements that
differ only in how a parameter is written.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs

from caxton.messages import Message

if TYPE_CHECKING:
    from collections.abc import Collection, Sequence

    from caxton.store.backend import Backend

ACTIVE = "active"
CLOSED = "closed"
STATUSES = (ACTIVE, CLOSED)

MESSAGE_COLUMNS = (
    "conversation_id, message_id, performative, sender, receiver, capability, content, "
    "reply_with, in_reply_to, created_at, hop"
)

encode = json.JSONEncoder(check_circular=False, separators=(",", ":")).encode


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


def message_values(message: Message) -> tuple[Any, ...]:
    """A message's row, in :data:`MESSAGE_COLUMNS` order (its content as JSON text)."""
    return (
        message.conversation_id,
        message.message_id,
        message.performative,
        message.sender,
        message.receiver,
        message.capability,
        encode(message.content),
        message.reply_with,
        message.in_reply_to,
        message.created_at,
        message.hop,
    )


def message_from_row(row: Sequence[Any]) -> Message:
    """The message a row in :data:`MESSAGE_COLUMNS` order holds."""
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


@attrs.define(eq=False)
class Batch:
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
        # a JSON array in MESSAGE_COLUMNS order: half the cost of a JSON object, for Python
        # and for the database
        self.rows.append(encode(message_values(message)))
        at = message.created_at
        entry = self.totals.get(message.conversation_id)
        if entry is None:
            self.totals[message.conversation_id] = [at, at, 1]
        else:
            entry[0] = min(entry[0], at)
            entry[1] = max(entry[1], at)
            entry[2] += 1

    def extend(self, later: Batch) -> None:
        """Append what was recorded after this batch (a batch held back for a retry)."""
        self.messages.extend(later.messages)
        self.rows.extend(later.rows)
        for cid, (first, last, count) in later.totals.items():
            entry = self.totals.get(cid)
            if entry is None:
                self.totals[cid] = [first, last, count]
            else:
                entry[0] = min(entry[0], first)
                entry[1] = max(entry[1], last)
                entry[2] += count

    def newest(self, keep: int) -> Batch:
        """A batch of the last ``keep`` messages only (the oldest dropped)."""
        kept = Batch()
        for message in self.messages[len(self.messages) - keep :]:
            kept.add(message)
        return kept


class ConversationSQL(Protocol):
    """The statements of the conversations component, in one dialect.

    The synchronous methods run inside a store call (``fn(conn)``, in a worker thread, in one
    transaction); :meth:`write_batch` makes its own store call, since how a batch is written
    best differs most between databases.
    """

    async def write_batch(
        self, store: Backend, batch: Batch, fresh: Collection[str], stored: Collection[str]
    ) -> float:
        """Write ``batch`` in one transaction: its messages, and its conversations' activity
        and message counts; return the writer thread's CPU seconds.

        Args:
            store: the running store.
            batch: what to write.
            fresh: conversations minted here whose row is not written yet (may be inserted).
            stored: conversations whose row this process wrote (may be updated in place).
                Any other conversation is upserted.

        Raises:
            StoreClosed, StorageUnavailable: the store cannot take the batch.
        """
        ...

    def set_status(self, conn: Any, conversation_id: str, status: str) -> bool:
        """Set a conversation's status; ``False`` when there is no such conversation."""
        ...

    def sweep(self, conn: Any, cutoff: float) -> list[str]:
        """Remove conversations idle since before ``cutoff`` with their messages; their ids."""
        ...

    def status(self, conn: Any, conversation_id: str) -> str | None:
        """A conversation's status, or ``None`` when it has no row."""
        ...

    def initiator(self, conn: Any, conversation_id: str) -> str | None:
        """The sender of the earliest message with a sender, or ``None``."""
        ...

    def messages(
        self, conn: Any, conversation_id: str, limit: int, *, latest: bool
    ) -> list[Message]:
        """The first ``limit`` messages, or with ``latest`` the last ``limit`` newest first."""
        ...

    def summary(self, conn: Any, conversation_id: str) -> ConversationSummary | None:
        """One conversation's summary, or ``None``."""
        ...

    def page(
        self,
        conn: Any,
        *,
        status: str | None,
        participant: str | None,
        limit: int,
        offset: int,
    ) -> tuple[list[ConversationSummary], int]:
        """Conversations, most recently active first, and how many match in all."""
        ...


#: A conversation ``c``'s summary (:class:`ConversationSummary` order), its participants the
#: distinct senders and receivers of its messages in name order.
_SUMMARY_COLUMNS = (
    "c.conversation_id, c.status, c.created_at, c.last_activity, c.message_count, "
    "(SELECT array_agg(DISTINCT n.name ORDER BY n.name) FROM ("
    "  SELECT sender AS name FROM conversation_messages m"
    "  WHERE m.conversation_id = c.conversation_id"
    "  UNION ALL SELECT receiver FROM conversation_messages m"
    "  WHERE m.conversation_id = c.conversation_id) n WHERE n.name IS NOT NULL)"
)


class SharedConversationSQL:
    """The members of :class:`ConversationSQL` that every dialect writes alike but for its
    parameter marker, :attr:`param`; a dialect's class adds ``write_batch`` and ``sweep``,
    which differ in more than that."""

    #: The positional parameter marker (``?``, ``%s``).
    param: ClassVar[str]

    def set_status(self, conn: Any, conversation_id: str, status: str) -> bool:
        row = conn.execute(
            f"UPDATE conversations SET status = {self.param} "
            f"WHERE conversation_id = {self.param} RETURNING conversation_id",
            [status, conversation_id],
        ).fetchone()
        return row is not None

    def status(self, conn: Any, conversation_id: str) -> str | None:
        row = conn.execute(
            f"SELECT status FROM conversations WHERE conversation_id = {self.param}",
            [conversation_id],
        ).fetchone()
        return None if row is None else str(row[0])

    def initiator(self, conn: Any, conversation_id: str) -> str | None:
        row = conn.execute(
            f"SELECT sender FROM conversation_messages WHERE conversation_id = {self.param} "
            "AND sender IS NOT NULL ORDER BY seq LIMIT 1",
            [conversation_id],
        ).fetchone()
        return None if row is None else str(row[0])

    def messages(
        self, conn: Any, conversation_id: str, limit: int, *, latest: bool
    ) -> list[Message]:
        order = "DESC" if latest else "ASC"
        rows = conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM conversation_messages "
            f"WHERE conversation_id = {self.param} ORDER BY seq {order} LIMIT {self.param}",
            [conversation_id, limit],
        ).fetchall()
        return [message_from_row(r) for r in rows]

    def summary(self, conn: Any, conversation_id: str) -> ConversationSummary | None:
        found = self._summaries(conn, f"WHERE c.conversation_id = {self.param}", [conversation_id])
        return found[0] if found else None

    def page(
        self, conn: Any, *, status: str | None, participant: str | None, limit: int, offset: int
    ) -> tuple[list[ConversationSummary], int]:
        clauses: list[str] = []
        params: list[object] = []
        if status is not None:
            clauses.append(f"c.status = {self.param}")
            params.append(status)
        if participant is not None:
            clauses.append(
                "c.conversation_id IN (SELECT conversation_id FROM conversation_messages "
                f"WHERE sender = {self.param} OR receiver = {self.param})"
            )
            params.extend([participant, participant])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        total_row = conn.execute(f"SELECT count(*) FROM conversations c {where}", params).fetchone()
        rows = self._summaries(
            conn,
            f"{where} ORDER BY c.last_activity DESC, c.conversation_id "
            f"LIMIT {self.param} OFFSET {self.param}",
            [*params, limit, offset],
        )
        return rows, int(total_row[0]) if total_row else 0

    def _summaries(self, conn: Any, where: str, params: list[object]) -> list[ConversationSummary]:
        rows = conn.execute(
            f"SELECT {_SUMMARY_COLUMNS} FROM conversations c {where}", params
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
