"""Streaming response bodies fed by a task, for SSE and NDJSON responses, and the forwarding
of an agent's reply chunks.

Quart iterates a response body in the request's task; the producer runs in the app's
lifespan nursery and is cancelled when the body is closed (the client went away, or the
response finished), so no nursery is held open across a ``yield``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any, TypeVar

import trio
from quart import current_app

from caxton.messages import open_chunk_stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from caxton.messages import ChunkSender

T = TypeVar("T")


LOGGER = logging.getLogger("caxton.http")


def sse_frame(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


def background_body(
    produce: Callable[[trio.MemorySendChannel[bytes]], Awaitable[None]],
) -> AsyncIterator[bytes]:
    """A response body whose bytes ``produce`` sends; ends when ``produce`` returns.

    Cancellation:
        Closing the body (client disconnect) cancels ``produce``.
    """
    send, receive = trio.open_memory_channel[bytes](64)
    scope = trio.CancelScope()

    async def runner() -> None:
        with scope:
            async with send:
                try:
                    await produce(send)
                except Exception:
                    # the producer runs in the app's nursery: an error here must end this
                    # stream, not the server
                    LOGGER.exception("a streaming response failed; its stream ends here")

    current_app.nursery.start_soon(runner)  # type: ignore[attr-defined]

    async def body() -> AsyncIterator[bytes]:
        try:
            async with receive:
                async for chunk in receive:
                    yield chunk
        finally:
            scope.cancel()

    return body()


async def forward_chunks(
    answer: Callable[[ChunkSender], Awaitable[T]],
    forward: Callable[[str], Awaitable[None]],
) -> T:
    """Run ``answer`` with the send side of a new chunk stream and drain the stream with
    ``forward`` (a child task); return the answer once every chunk before it is forwarded.

    Raises:
        Exception: what ``answer`` raised (the chunks before it were forwarded first), or what
            ``forward`` raised (``answer`` is then cancelled: the client is gone).
    """
    chunks, reader = open_chunk_stream()
    forward_failed: list[Exception] = []
    answer_failed: list[Exception] = []
    result: list[T] = []

    async def drain(cancel: trio.CancelScope) -> None:
        with reader:
            async for text in reader:
                try:
                    await forward(text)
                except Exception as exc:
                    forward_failed.append(exc)
                    cancel.cancel()
                    return

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain, nursery.cancel_scope)
        with chunks:
            try:
                result.append(await answer(chunks))
            except Exception as exc:
                answer_failed.append(exc)
    if forward_failed:
        raise forward_failed[0]
    if answer_failed:
        raise answer_failed[0]
    return result[0]
