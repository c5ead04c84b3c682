"""A chain of LLM clients tried in order: the ``fallback`` list of an ``[llm]`` table."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING

from caxton.llm.errors import LLMError, LLMTimeout, LLMUnavailable

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Sequence

    from caxton.llm.client import LLMClient
    from caxton.llm.types import ChatRequest, LLMEvent

LOGGER = logging.getLogger("caxton.llm")

_LLM_ERRORS = (LLMUnavailable, LLMError, LLMTimeout)


class FallbackClient:
    """Tries each client in turn until one starts streaming.

    A client is abandoned for the next only while nothing of its reply has been delivered;
    once an event has gone to the caller, its errors are the caller's. When every client
    fails, the error names each provider and URL with what went wrong there.

    Args:
        clients: the primary first, then the fallbacks; at least one.
    """

    def __init__(self, clients: Sequence[LLMClient]) -> None:
        if not clients:
            raise ValueError("a fallback chain needs at least one client")
        self.clients = tuple(clients)

    @property
    def provider(self) -> str:
        return self.clients[0].provider

    @property
    def url(self) -> str:
        return self.clients[0].url

    @contextlib.asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[LLMEvent]]:
        """See :meth:`caxton.llm.client.LLMClient.stream`.

        Cancellation:
            Safe at any await; the current client's stream is closed on the way out.
        """
        events = _FallbackStream(self.clients, request)
        try:
            yield events
        finally:
            await events.aclose()


class _FallbackStream:
    def __init__(self, clients: tuple[LLMClient, ...], request: ChatRequest) -> None:
        self._clients = clients
        self._request = request
        self._index = 0
        self._stack: contextlib.AsyncExitStack | None = None
        self._events: AsyncIterator[LLMEvent] | None = None
        self._errors: list[LLMUnavailable | LLMError | LLMTimeout] = []
        self._delivered = False

    def __aiter__(self) -> _FallbackStream:
        return self

    async def __anext__(self) -> LLMEvent:
        while True:
            if self._index >= len(self._clients):
                raise StopAsyncIteration
            try:
                if self._events is None:
                    self._stack = contextlib.AsyncExitStack()
                    client = self._clients[self._index]
                    stream = client.stream(self._request)
                    self._events = await self._stack.enter_async_context(stream)
                event = await self._events.__anext__()
            except _LLM_ERRORS as exc:
                if self._delivered:
                    raise
                await self.aclose()
                self._errors.append(exc)
                self._index += 1
                if self._index >= len(self._clients):
                    raise self._exhausted() from exc
                following = self._clients[self._index]
                LOGGER.warning(
                    "LLM %s at %s failed (%s); falling back to %s at %s",
                    exc.provider,
                    exc.url,
                    exc.code,
                    following.provider,
                    following.url,
                    extra={"provider": exc.provider, "url": exc.url},
                )
                continue
            self._delivered = True
            return event

    async def aclose(self) -> None:
        stack, self._stack, self._events = self._stack, None, None
        if stack is not None:
            await stack.aclose()

    def _exhausted(self) -> LLMUnavailable | LLMError | LLMTimeout:
        if len(self._errors) == 1:
            return self._errors[0]
        first = self._errors[0]
        kinds = {type(error) for error in self._errors}
        kind = kinds.pop() if len(kinds) == 1 else LLMError
        tried = "; ".join(
            f"{error.provider} at {error.url}: {error.problem}" for error in self._errors
        )
        return kind(
            first.provider,
            first.url,
            f"every LLM of the fallback chain failed ({tried})",
            attempts=[error.details for error in self._errors],
        )
