"""The FIPA-style message envelope (DESIGN §5) as a frozen value, and the stream of a reply's
chunks."""

from __future__ import annotations

import json
import math
import os
import time
from typing import TYPE_CHECKING, Any, Literal, Self

import attrs
import trio

if TYPE_CHECKING:
    from types import TracebackType

Performative = Literal[
    "request",
    "inform",
    "query",
    "propose",
    "accept_proposal",
    "reject_proposal",
    "failure",
    "not_understood",
]
PERFORMATIVES: tuple[str, ...] = (
    "request",
    "inform",
    "query",
    "propose",
    "accept_proposal",
    "reject_proposal",
    "failure",
    "not_understood",
)


def content_of(text: str) -> str | dict[str, Any]:
    """Text as message content: the JSON object it holds, when it is one, else the text."""
    stripped = text.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            return text
        if isinstance(value, dict):
            return value
    return text


def new_id() -> str:
    """32 random lowercase hex characters, as ``uuid4().hex`` gives, at a third of its cost."""
    return os.urandom(16).hex()


@attrs.frozen(kw_only=True)
class Message:
    """One message between a client or an agent and an agent.

    ``hop`` counts agent-to-agent sends (0 for a message from outside), for the loop guard.
    A message goes to a ``receiver`` (an agent name) or to a ``capability``, never both;
    replies name their receiver (the original sender, which may be absent for a client).
    """

    performative: Performative = attrs.field(
        default="request", validator=attrs.validators.in_(PERFORMATIVES)
    )
    sender: str | None = None
    receiver: str | None = None
    capability: str | None = attrs.field(default=None)
    content: str | dict[str, Any] = ""
    conversation_id: str = attrs.field(factory=new_id)
    reply_with: str | None = None
    in_reply_to: str | None = None
    message_id: str = attrs.field(factory=new_id)
    created_at: float = attrs.field(factory=time.time)
    hop: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: The W3C ``traceparent`` of the sender's span (issue #18), set when tracing is on; not
    #: part of the JSON envelope.
    trace_context: str | None = None

    @capability.validator
    def _one_destination(self, _: attrs.Attribute[str | None], value: str | None) -> None:
        if value is not None and self.receiver is not None:
            raise ValueError(
                f"a message goes to a receiver or to a capability, not both "
                f"(receiver {self.receiver!r}, capability {value!r})"
            )

    def as_json(self) -> dict[str, Any]:
        return {
            "performative": self.performative,
            "sender": self.sender,
            "receiver": self.receiver,
            "capability": self.capability,
            "content": self.content,
            "conversation_id": self.conversation_id,
            "reply_with": self.reply_with,
            "in_reply_to": self.in_reply_to,
            "message_id": self.message_id,
            "created_at": self.created_at,
        }

    def reply(
        self, content: str | dict[str, Any], *, sender: str, performative: Performative = "inform"
    ) -> Message:
        """The answer to this message, in the same conversation."""
        return Message(
            performative=performative,
            sender=sender,
            receiver=self.sender,
            content=content,
            conversation_id=self.conversation_id,
            in_reply_to=self.reply_with or self.message_id,
            hop=self.hop,
        )


CHUNK_BUFFER_BYTES = 65_536
"""How many bytes of reply chunks a chunk stream holds before :meth:`ChunkSender.send` waits
for its reader."""


@attrs.define(eq=False)
class _ChunkRoom:
    """The bytes a chunk stream holds, shared by its two ends (trio thread only)."""

    limit: int
    held: int = 0
    reader_gone: bool = False
    freed: trio.Event = attrs.field(factory=trio.Event)

    def release(self, size: int) -> None:
        self.held -= size
        self.freed.set()
        self.freed = trio.Event()


def open_chunk_stream(
    max_buffered_bytes: int = CHUNK_BUFFER_BYTES,
) -> tuple[ChunkSender, ChunkReceiver]:
    """Open the stream of one reply's chunks (text, in order).

    The handler that forwards a reply to its client opens it, passes the send side down with
    the message, and drains the receive side itself while the agent answers; the send side is
    closed once the answer is done, which ends the draining.
    """
    send, receive = trio.open_memory_channel[str](math.inf)
    room = _ChunkRoom(limit=max_buffered_bytes)
    return ChunkSender(send, room), ChunkReceiver(receive, room)


class _Closing:
    """``with end:`` closes ``end`` when the block exits."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class ChunkSender(_Closing):
    """The send side of a chunk stream: what an agent streams its reply into.

    A producer that runs in trio waits for room with :meth:`send`; one that must never wait
    (a WASM guest, whose reply is bounded by its ``max_message_size``) uses
    :meth:`send_nowait`. Both raise ``trio.BrokenResourceError`` once the reader is gone.
    """

    def __init__(self, channel: trio.MemorySendChannel[str], room: _ChunkRoom) -> None:
        self._channel = channel
        self._room = room

    async def send(self, text: str) -> None:
        """Put one chunk in the stream, waiting while it holds its byte bound or more."""
        room = self._room
        while room.held >= room.limit and not room.reader_gone:
            await room.freed.wait()
        self.send_nowait(text)

    def send_nowait(self, text: str) -> None:
        """Put one chunk in the stream now, whatever it already holds."""
        self._channel.send_nowait(text)
        self._room.held += len(text.encode())

    def close(self) -> None:
        """End the stream (its reader takes what is left, then stops). Idempotent."""
        self._channel.close()


class ChunkReceiver(_Closing):
    """The receive side of a chunk stream: ``async for text in receiver`` until it ends."""

    def __init__(self, channel: trio.MemoryReceiveChannel[str], room: _ChunkRoom) -> None:
        self._channel = channel
        self._room = room

    def __aiter__(self) -> ChunkReceiver:
        return self

    async def __anext__(self) -> str:
        try:
            text = await self._channel.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        self._room.release(len(text.encode()))
        return text

    def close(self) -> None:
        """Stop reading: the sender's next chunk raises ``trio.BrokenResourceError``."""
        self._channel.close()
        self._room.reader_gone = True
        self._room.release(0)
