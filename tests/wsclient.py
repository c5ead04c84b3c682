"""A WebSocket client for tests that owns (and always closes) its TCP stream.

trio-websocket's ``open_websocket_url`` leaves the socket open when the server closes first
(its reader stops on EOF without closing the stream), which ``-W error`` turns into a
ResourceWarning; wrapping our own stream avoids that.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import trio
from trio_websocket import wrap_client_stream

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from trio_websocket import WebSocketConnection


@contextlib.asynccontextmanager
async def open_ws(
    url: str, headers: Mapping[str, str] | None = None, *, host_with_port: bool = False
) -> AsyncIterator[WebSocketConnection]:
    """Open a WebSocket to ``url``, sending ``headers`` (credentials, Origin) in the handshake;
    ``host_with_port`` sends ``Host`` with the port, as browsers do."""
    parts = urlsplit(url)
    assert parts.hostname is not None
    assert parts.port is not None
    extra = [(k.encode(), v.encode()) for k, v in (headers or {}).items()]
    async with trio.open_nursery() as nursery:
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        async with stream:
            host = f"{parts.hostname}:{parts.port}" if host_with_port else parts.hostname
            ws = await wrap_client_stream(
                nursery, stream, host, parts.path or "/", extra_headers=extra
            )
            try:
                yield ws
            finally:
                with trio.move_on_after(2):
                    await ws.aclose()
        nursery.cancel_scope.cancel()
