"""Streaming response bodies fed by a task, for SSE and NDJSON responses.

Quart iterates a response body in the request's task; the producer runs in the app's
lifespan nursery and is cancelled when the body is closed (the client went away, or the
response finished), so no nursery is held open across a ``yield``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import trio
from quart import current_app

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


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
