"""Bounded replies from streamable HTTP MCP servers: the httpx transport under the SDK's client.

The SDK reads a JSON reply whole (``response.aread()``) and an SSE reply event by event with
no limit, so a hostile server could make Caxton hold a body of any size. :class:`BoundedReplies`
sits below it and reads at most ``max_response_size`` bytes of a JSON reply, of one SSE event,
and ``4 * max_response_size`` bytes of the whole SSE stream a POST (one call) gets. A reply
past a bound is not read further: the connection is closed (the server sees its write fail),
and in place of the reply the SDK gets a JSON-RPC error for the request, so the call ends at
once with an error the model reads (waiting for the call's timeout would hold the agent for
nothing) and the session stays usable. ``report`` tells the connection, so its state says why.

Replies are asked for uncompressed (``Accept-Encoding: identity``): the bounds hold on what is
parsed, and a compressed reply the server sends anyway is refused, not inflated.
"""

from __future__ import annotations

import contextlib
import json
from typing import TYPE_CHECKING, Any, Final

import httpx

from caxton.units import format_size

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

#: The whole SSE stream of one call, in multiples of ``max_response_size``.
STREAM_FACTOR: Final = 4
#: JSON-RPC error code of a reply that was cut off (implementation-defined server error range).
REPLY_TOO_LARGE: Final = -32001
_SSE: Final = "text/event-stream"


class BoundedReplies(httpx.AsyncBaseTransport):
    """An httpx transport reading bounded MCP replies (see the module docstring).

    Args:
        max_bytes: ``max_response_size`` of the server.
        report: called with one line when a reply was cut off.
        inner: the real transport (a new ``AsyncHTTPTransport`` by default).
    """

    def __init__(
        self,
        max_bytes: int,
        report: Callable[[str], None],
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.report = report
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["Accept-Encoding"] = "identity"
        rpc_id = _request_id(request)
        response = await self._inner.handle_async_request(request)
        headers = httpx.Headers(
            [(k, v) for k, v in response.headers.multi_items() if k.lower() != "content-length"]
        )
        problem = None
        encoding = response.headers.get("content-encoding", "identity").strip().lower()
        if encoding not in ("", "identity"):
            problem = f"a reply compressed with {encoding[:40]!r} was refused (asked for none)"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            problem = (
                f"a reply of {int(declared) / 1024**2:.1f}MiB was refused: larger than "
                f"max_response_size ({format_size(self.max_bytes)})"
            )
        if problem is not None:
            await response.aclose()
            return self._refused(request, response, headers, rpc_id, problem)
        assert isinstance(response.stream, httpx.AsyncByteStream)
        is_sse = response.headers.get("content-type", "").lower().startswith(_SSE)
        stream: httpx.AsyncByteStream
        if is_sse:
            total = self.max_bytes * STREAM_FACTOR if request.method == "POST" else None
            stream = _BoundedEvents(response.stream, self, rpc_id, total)
        else:
            stream = _BoundedBody(response.stream, self, rpc_id)
        return httpx.Response(
            status_code=response.status_code,
            headers=headers,
            stream=stream,
            extensions=response.extensions,
        )

    def _refused(
        self,
        request: httpx.Request,
        response: httpx.Response,
        headers: httpx.Headers,
        rpc_id: str | int | None,
        problem: str,
    ) -> httpx.Response:
        self.report(problem)
        if rpc_id is None or not 200 <= response.status_code < 300:
            raise httpx.ReadError(problem, request=request)
        body = error_body(rpc_id, problem)
        headers["content-type"] = "application/json"
        headers.pop("content-encoding", None)
        return httpx.Response(status_code=response.status_code, headers=headers, content=body)

    async def aclose(self) -> None:
        await self._inner.aclose()


def error_body(rpc_id: str | int, problem: str) -> bytes:
    """A JSON-RPC error for ``rpc_id`` saying what was cut off and how to allow more."""
    message = (
        f"{problem}; the reply was not read further (raise max_response_size in the agent's "
        "[[mcp_servers]] table if the server's replies are that large)"
    )
    return json.dumps(
        {"jsonrpc": "2.0", "id": rpc_id, "error": {"code": REPLY_TOO_LARGE, "message": message}}
    ).encode()


@contextlib.asynccontextmanager
async def _closing(stream: httpx.AsyncByteStream) -> AsyncIterator[AsyncIterator[bytes]]:
    """Iterate ``stream``; on leaving, close its iterator (which may not have been exhausted)
    and the stream itself (the connection of a reply not read to the end is dropped)."""
    chunks = stream.__aiter__()
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()
        await stream.aclose()


def _request_id(request: httpx.Request) -> str | int | None:
    """The JSON-RPC id of the request a POST carries (``None``: a notification, or a GET)."""
    if request.method != "POST":
        return None
    try:
        document: Any = json.loads(request.content)
    except (ValueError, httpx.RequestNotRead):
        return None
    rpc_id = document.get("id") if isinstance(document, dict) else None
    return rpc_id if isinstance(rpc_id, str | int) and not isinstance(rpc_id, bool) else None


class _BoundedBody(httpx.AsyncByteStream):
    """A JSON reply: read whole up to the bound (the SDK reads it whole anyway), then given on
    as one chunk; past the bound, a JSON-RPC error instead."""

    def __init__(
        self, inner: httpx.AsyncByteStream, owner: BoundedReplies, rpc_id: str | int | None
    ) -> None:
        self._inner = inner
        self._owner = owner
        self._rpc_id = rpc_id

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit = self._owner.max_bytes
        body = bytearray()
        async with _closing(self._inner) as chunks:
            async for chunk in chunks:
                body += chunk
                if len(body) > limit:
                    break
        if len(body) <= limit:
            yield bytes(body)
            return
        problem = f"a reply larger than max_response_size ({format_size(limit)}) was cut off"
        self._owner.report(problem)
        if self._rpc_id is None:
            raise httpx.ReadError(problem)
        yield error_body(self._rpc_id, problem)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _BoundedEvents(httpx.AsyncByteStream):
    """An SSE reply given on one whole event at a time (each at most ``max_bytes``, the
    stream at most ``total``); past a bound, the stream ends with a JSON-RPC error event for
    the call (or, for the GET stream that carries no call, a read error)."""

    def __init__(
        self,
        inner: httpx.AsyncByteStream,
        owner: BoundedReplies,
        rpc_id: str | int | None,
        total: int | None,
    ) -> None:
        self._inner = inner
        self._owner = owner
        self._rpc_id = rpc_id
        self._total = total

    async def __aiter__(self) -> AsyncIterator[bytes]:
        limit = self._owner.max_bytes
        event = bytearray()  # complete lines of the event being read
        pending = bytearray()  # bytes after the last line end
        seen = 0
        problem = None
        async with _closing(self._inner) as chunks:
            async for chunk in chunks:
                seen += len(chunk)
                if self._total is not None and seen > self._total:
                    problem = (
                        "the reply stream of one call grew past "
                        f"{format_size(self._total)} ({STREAM_FACTOR} x max_response_size)"
                    )
                    break
                pending += chunk
                while (end := pending.find(b"\n")) >= 0 and len(event) <= limit:
                    line = bytes(pending[: end + 1])
                    del pending[: end + 1]
                    event += line
                    if line.strip(b"\r\n") or len(event) > limit:
                        continue
                    yield bytes(event)  # a blank line: the event is complete
                    event.clear()
                if len(event) + len(pending) > limit:
                    problem = (
                        f"an event of the reply was larger than max_response_size "
                        f"({format_size(limit)}) and was cut off"
                    )
                    break
            else:
                if event or pending:
                    yield bytes(event + pending)
        if problem is None:
            return
        self._owner.report(problem)
        if self._rpc_id is None:
            raise httpx.ReadError(problem)
        yield b"event: message\ndata: " + error_body(self._rpc_id, problem) + b"\n\n"

    async def aclose(self) -> None:
        await self._inner.aclose()
