"""An httpx transport for one remote A2A agent: it talks to one origin only (the one its
credentials are for) and reads bounded answers."""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import httpx

if TYPE_CHECKING:
    from collections.abc import AsyncIterator


class _RefusedOrigin(httpx.ConnectError):
    pass


class _BoundedStream(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, limit: int) -> None:
        self._inner = inner
        self._limit = limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        seen = 0
        async for chunk in self._inner:
            seen += len(chunk)
            if seen > self._limit:
                raise httpx.ReadError(
                    f"the answer is larger than a2a.max_response_size ({self._limit} bytes)"
                )
            yield chunk

    async def aclose(self) -> None:
        await self._inner.aclose()


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that talks to one origin only and reads bounded answers.

    Args:
        origin: ``scheme://host:port`` requests may go to.
        max_response_bytes: the most bytes of one answer's body.
        inner: the real transport (a new ``AsyncHTTPTransport`` by default).
    """

    def __init__(
        self,
        origin: str,
        max_response_bytes: int,
        inner: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.origin = origin
        self.max_response_bytes = max_response_bytes
        self._inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if origin_of(str(request.url)) != self.origin:
            raise _RefusedOrigin(
                f"refused to send a request to {origin_of(str(request.url))}: this remote "
                f"agent's credentials are for {self.origin} only",
                request=request,
            )
        response = await self._inner.handle_async_request(request)
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_response_bytes:
            await response.aclose()
            raise httpx.ReadError(
                f"the answer declares {declared} bytes, more than a2a.max_response_size "
                f"({self.max_response_bytes} bytes)",
                request=request,
            )
        assert isinstance(response.stream, httpx.AsyncByteStream)
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_BoundedStream(response.stream, self.max_response_bytes),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def origin_of(url: str) -> str:
    """``scheme://host:port`` of ``url`` (the default port written out)."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    port = parts.port or {"http": 80, "https": 443}.get(scheme, 0)
    return f"{scheme}://{(parts.hostname or '').lower()}:{port}"
