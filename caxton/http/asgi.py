"""ASGI wrapper that keeps hypercorn's keep-alive connections healthy (DESIGN §11).

With hypercorn 0.18's trio worker, when the app answers before the request body has arrived
(an early 401/404/413), the next request on that kept-alive connection is never answered. The
wrapper therefore holds back the response start until the request body is complete (Quart's
own receive loop keeps reading it meanwhile) and, when waiting is pointless or takes too long
(a client that stalls), answers with ``Connection: close`` so the client opens a fresh
connection instead of hanging. A request that declares a body over ``server.max_request_size``
is refused here with 413 before any handler runs.

A second hypercorn 0.18 trap (issue #13, item 16): its trio ``TCPServer._close`` calls
``send_eof()`` without taking the connection's send lock. When the reading task meets a
protocol error (typically a client that pipelines more bytes after the body it declared,
right after an early 413), it closes the connection while the app's task is between the
response start and its body, and the app's ``send_all`` fails with ``trio.BusyResourceError``,
logged as "Error in ASGI Framework". The connection is going away at that moment, so the
wrapper treats that error on ``send`` as a client that disconnected: the response is dropped
quietly, as hypercorn itself does with ``BrokenResourceError``.
"""

from __future__ import annotations

import json
import logging
import os
import re
from typing import TYPE_CHECKING, Any

import trio

from caxton.errors import error_json

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, MutableMapping

    Scope = MutableMapping[str, Any]
    Message = MutableMapping[str, Any]
    Receive = Callable[[], Awaitable[Message]]
    Send = Callable[[Message], Awaitable[None]]
    ASGIApp = Callable[..., Awaitable[None]]


LOGGER = logging.getLogger("caxton.http")
REQUEST_ID_PATTERN = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")


class DrainRequestBody:
    """Wraps an ASGI app; see the module docstring.

    Args:
        app: the wrapped ASGI application.
        max_body: bodies declared larger than this are not waited for.
        drain_timeout_s: how long an early response waits for the rest of the body.
    """

    def __init__(self, app: ASGIApp, *, max_body: int, drain_timeout_s: float = 5.0) -> None:
        self.app = app
        self.max_body = max_body
        self.drain_timeout_s = drain_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, raw_send: Send) -> None:
        closing = False

        async def send(message: Message) -> None:
            nonlocal closing
            if closing:
                return
            try:
                await raw_send(message)
            except trio.BusyResourceError:
                # hypercorn's reader is closing the connection under us (module docstring)
                closing = True
                LOGGER.debug("connection closed while answering %s", scope.get("path"))

        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _declared_length(scope)
        if declared == 0:
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_body:
            await _refuse_too_large(scope, send, declared, self.max_body)
            return
        body_done = trio.Event()

        async def tracking_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect" or not message.get("more_body", False):
                body_done.set()
            return message

        async def guarded_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not body_done.is_set():
                if message.get("status") == 413:
                    message = _with_connection_close(message)
                else:
                    with trio.move_on_after(self.drain_timeout_s):
                        await body_done.wait()
                    if not body_done.is_set():
                        message = _with_connection_close(message)
            await send(message)

        await self.app(scope, tracking_receive, guarded_send)


def _declared_length(scope: Scope) -> int | None:
    """0 when the request has no body, its Content-Length, or None for chunked bodies."""
    length: int | None = 0
    for name, value in scope.get("headers", []):
        lowered = name.lower()
        if lowered == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
        if lowered == b"transfer-encoding":
            length = None
    return length


def _with_connection_close(message: Message) -> Message:
    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"connection"]
    headers.append((b"connection", b"close"))
    return {**message, "headers": headers}


async def _refuse_too_large(scope: Scope, send: Send, declared: int, limit: int) -> None:
    request_id = _header(scope, b"x-request-id")
    if not request_id or not REQUEST_ID_PATTERN.match(request_id):
        request_id = os.urandom(16).hex()
    body = json.dumps(
        error_json(
            "PAYLOAD_TOO_LARGE",
            f"the request body ({declared} bytes) is larger than server.max_request_size "
            f"({limit} bytes); send less, or raise the limit in caxton.yaml",
            {"content_length": declared, "max_request_size": limit},
            request_id=request_id,
        )
    ).encode()
    LOGGER.info(
        "%s %s 413 (body of %d bytes refused)",
        scope.get("method"),
        scope.get("path"),
        declared,
        extra={"status": 413, "request_id": request_id},
    )
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"x-request-id", request_id.encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value).decode("latin1")
    return None
