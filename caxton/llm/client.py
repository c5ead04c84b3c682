"""The :class:`LLMClient` protocol and the HTTP streaming shell the providers share.

A call is ``async with client.stream(request) as events: async for event in events: ...``.
The context manager owns the HTTP response; the iterator is a plain object (not an async
generator), so no cancel scope or nursery is ever held across a ``yield`` and leaving the
``async with`` early closes the connection at once.
"""

from __future__ import annotations

import abc
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any, Final, Protocol, cast

import httpx
import trio

from caxton.errors import CaxtonError
from caxton.llm.breaker import CircuitBreaker
from caxton.llm.errors import LLMError, LLMFailure, LLMTimeout, LLMUnavailable
from caxton.llm.redact import redact_text, redact_url
from caxton.llm.retry import Backoff, parse_retry_after
from caxton.llm.sse import SSEDecoder
from caxton.llm.wire import WireError

if TYPE_CHECKING:
    from collections.abc import AsyncGenerator, AsyncIterator
    from contextlib import AbstractAsyncContextManager

    from caxton.llm.settings import ProviderSettings
    from caxton.llm.types import ChatRequest, LLMEvent
    from caxton.llm.wire import StreamParser

LOGGER = logging.getLogger("caxton.llm")

#: Bound on closing a response, which runs shielded from cancellation.
CLOSE_TIMEOUT_S: Final = 5.0
#: How long a finished reply's connection is read to its end before it is cut instead.
DRAIN_TIMEOUT_S: Final = 1.0
#: How much of an error body is quoted in an error message.
ERROR_BODY_CHARS: Final = 300


class LLMClient(Protocol):
    """What an agent needs from a model; see the module docstring for the call shape."""

    @property
    def provider(self) -> str: ...

    @property
    def url(self) -> str: ...

    def stream(self, request: ChatRequest) -> AbstractAsyncContextManager[AsyncIterator[LLMEvent]]:
        """Open a streamed reply to ``request``.

        The iterator yields :class:`~caxton.llm.types.TextDelta` and
        :class:`~caxton.llm.types.ToolCall` events in order and ends with one
        :class:`~caxton.llm.types.Finish`.

        Raises:
            LLMUnavailable: the provider cannot be reached (or its breaker is open).
            LLMError: the provider refused the request or sent something malformed.
            LLMTimeout: the reply did not complete within the settings' ``timeout_s``.

        Cancellation:
            Safe at any await; the response is closed (shielded, bounded) on the way out.
        """
        ...


class _Retryable(Exception):
    """An attempt failed in a way another attempt may fix."""

    def __init__(self, error: LLMFailure, retry_after_s: float | None = None) -> None:
        super().__init__(error.message)
        self.error = error
        self.retry_after_s = retry_after_s


class HTTPClient(abc.ABC):
    """Streams one provider's replies over HTTP with retries, timeouts and a breaker.

    Args:
        settings: the resolved endpoint (model, URL, key, timeouts, max_retries).
        http: the shared ``httpx.AsyncClient``; the caller owns and closes it.
        breaker: this endpoint's circuit breaker; share one per endpoint between clients
            (see :class:`~caxton.llm.breaker.Breakers`). A private one by default.
        backoff: delays between retries when the provider sends no ``Retry-After``.

    Resource handling:
        Each call holds at most one connection of ``http``'s pool, released when the
        ``stream`` context exits.
    """

    def __init__(
        self,
        settings: ProviderSettings,
        *,
        http: httpx.AsyncClient,
        breaker: CircuitBreaker | None = None,
        backoff: Backoff | None = None,
    ) -> None:
        self.settings = settings
        self.http = http
        self.breaker = breaker if breaker is not None else CircuitBreaker()
        self.backoff = backoff if backoff is not None else Backoff()

    @property
    def provider(self) -> str:
        return self.settings.provider

    @property
    def url(self) -> str:
        """The endpoint as views, logs and errors show it: credentials masked (issue #13)."""
        return redact_url(self.endpoint, self._secrets())

    @property
    def endpoint(self) -> str:
        """The URL calls are POSTed to."""
        return self.endpoint_for(self.settings)

    @classmethod
    @abc.abstractmethod
    def endpoint_for(cls, settings: ProviderSettings) -> str:
        """The URL calls with ``settings`` are POSTed to."""

    @abc.abstractmethod
    def headers(self) -> dict[str, str]:
        """Request headers, authentication included."""

    @abc.abstractmethod
    def payload(self, request: ChatRequest) -> dict[str, Any]:
        """The JSON body for ``request``."""

    @abc.abstractmethod
    def parser(self) -> StreamParser:
        """A fresh parser for one attempt's stream."""

    @contextlib.asynccontextmanager
    async def stream(self, request: ChatRequest) -> AsyncIterator[AsyncIterator[LLMEvent]]:
        """See :meth:`LLMClient.stream`; the ``timeout_s`` clock starts on entry."""
        events = _EventStream(self, request)
        try:
            yield events
        finally:
            await events.aclose()

    def unavailable(self, problem: str, **details: Any) -> LLMUnavailable:
        return LLMUnavailable(self.provider, self.url, self._redact(problem), **details)

    def error(self, problem: str, **details: Any) -> LLMError:
        return LLMError(self.provider, self.url, self._redact(problem), **details)

    def timeout(self, problem: str) -> LLMTimeout:
        return LLMTimeout(self.provider, self.url, problem, timeout_s=self.settings.timeout_s)

    def _secrets(self) -> tuple[str | None, ...]:
        return (self.settings.api_key, *self.settings.secrets)

    def _redact(self, text: str) -> str:
        return redact_text(text, self._secrets())


class _EventStream:
    """One call: attempts, the open response, and the events parsed but not yet delivered."""

    def __init__(self, client: HTTPClient, request: ChatRequest) -> None:
        self._client = client
        self._payload = client.payload(request)
        self._deadline = trio.current_time() + client.settings.timeout_s
        self._pending: collections.deque[LLMEvent] = collections.deque()
        self._response: httpx.Response | None = None
        self._body: AsyncGenerator[bytes, None] | None = None
        self._decoder = SSEDecoder()
        self._parser = client.parser()
        self._attempt = 0
        self._delivered = False
        self._done = False

    def __aiter__(self) -> _EventStream:
        return self

    async def __anext__(self) -> LLMEvent:
        while not self._pending:
            if self._done:
                raise StopAsyncIteration
            try:
                with trio.move_on_at(self._deadline) as scope:
                    await self._advance()
            except CaxtonError:
                self._done = True
                raise
            if scope.cancelled_caught:
                self._done = True
                self._client.breaker.record_failure()
                await self._discard()
                raise self._client.timeout(
                    f"no complete reply within {self._client.settings.timeout_s:g}s"
                )
        self._delivered = True
        return self._pending.popleft()

    async def aclose(self) -> None:
        """Close the response; idempotent."""
        self._done = True
        await self._discard()

    async def _advance(self) -> None:
        """Read until an event is pending or the stream has ended, retrying failed attempts."""
        client = self._client
        while not self._pending and not self._done:
            try:
                if self._body is None:
                    await self._connect()
                await self._read()
            except _Retryable as failure:
                await self._discard()
                if self._delivered or self._attempt >= client.settings.max_retries:
                    raise failure.error from failure.__cause__
                self._attempt += 1
                delay = client.backoff.delay(self._attempt, retry_after_s=failure.retry_after_s)
                if trio.current_time() + delay >= self._deadline:
                    raise failure.error from failure.__cause__
                LOGGER.warning(
                    "LLM call to %s failed (%s); retry %d of %d in %.2fs",
                    client.url,
                    failure.error.problem,
                    self._attempt,
                    client.settings.max_retries,
                    delay,
                    extra={"provider": client.provider, "url": client.url},
                )
                await trio.sleep(delay)
                self._decoder = SSEDecoder()
                self._parser = client.parser()

    async def _connect(self) -> None:
        client = self._client
        breaker = client.breaker
        if not breaker.allow():
            stats = breaker.statistics()
            raise client.unavailable(
                f"circuit breaker open after {stats.consecutive_failures} consecutive failures; "
                f"next try in {stats.seconds_until_half_open:.1f}s",
                breaker=stats.state,
            )
        settled = False
        try:
            request = client.http.build_request(
                "POST",
                client.endpoint,
                json=self._payload,
                headers=client.headers(),
                timeout=httpx.Timeout(
                    client.settings.timeout_s, connect=client.settings.connect_timeout_s
                ),
            )
            LOGGER.debug(
                "LLM call to %s (model %s, attempt %d)",
                client.url,
                client.settings.model,
                self._attempt + 1,
                extra={"provider": client.provider, "url": client.url},
            )
            try:
                response = await client.http.send(request, stream=True)
            except httpx.HTTPError as exc:
                breaker.record_failure()
                settled = True
                raise _Retryable(self._transport_error(exc, connecting=True)) from exc
            status = response.status_code
            if status < 300:
                breaker.record_success()
                settled = True
                self._response = response
                self._body = cast("AsyncGenerator[bytes, None]", response.aiter_raw())
                return
            body = await _error_body(response)
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            problem = f"answered HTTP {status}" + (f": {body}" if body else "")
            if status == 429:
                breaker.release()
                settled = True
                raise _Retryable(
                    client.unavailable(f"rate limited ({problem})", status=status), retry_after
                )
            if status >= 500:
                breaker.record_failure()
                settled = True
                error = (
                    client.unavailable(problem, status=status)
                    if status == 503
                    else client.error(problem, status=status)
                )
                raise _Retryable(error, retry_after)
            breaker.record_success()
            settled = True
            raise client.error(problem, status=status)
        finally:
            if not settled:
                breaker.release()

    async def _read(self) -> None:
        client = self._client
        assert self._body is not None
        try:
            chunk = await self._body.__anext__()
        except StopAsyncIteration:
            try:
                events = self._parser.end_of_stream()
            except WireError as exc:
                client.breaker.record_failure()
                raise _Retryable(client.error(str(exc))) from exc
            self._finish(events)
            return
        except httpx.HTTPError as exc:
            client.breaker.record_failure()
            raise _Retryable(self._transport_error(exc, connecting=False)) from exc
        try:
            for sse in self._decoder.feed(chunk):
                self._pending.extend(self._parser.feed(sse))
                if self._parser.finished:
                    break
        except WireError as exc:
            self._done = True
            if exc.overloaded:
                raise client.unavailable(str(exc)) from exc
            raise client.error(str(exc)) from exc
        if self._parser.finished:
            self._finish([])

    def _finish(self, events: list[LLMEvent]) -> None:
        self._pending.extend(events)
        self._done = True

    def _transport_error(self, exc: httpx.HTTPError, *, connecting: bool) -> LLMFailure:
        client = self._client
        reason = str(exc) or type(exc).__name__
        if isinstance(exc, httpx.ConnectTimeout):
            return client.unavailable(
                f"did not accept a connection within {client.settings.connect_timeout_s:g}s"
            )
        if isinstance(exc, httpx.ConnectError):
            return client.unavailable(f"cannot connect ({reason})")
        if isinstance(exc, httpx.TimeoutException):
            return client.timeout(f"timed out waiting for data ({type(exc).__name__})")
        if connecting:
            return client.unavailable(f"the request failed ({reason})")
        return client.error(f"the connection broke during the reply ({reason})")

    async def _discard(self) -> None:
        body, response = self._body, self._response
        self._body = self._response = None
        if body is None and response is None:
            return
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT_S):
            if body is not None:
                await _unwind(body, drain_s=DRAIN_TIMEOUT_S if self._parser.finished else 0.0)
            if response is not None:
                await response.aclose()


async def _unwind(body: AsyncGenerator[bytes, None], *, drain_s: float) -> None:
    """Finish httpx's body iterator so that nothing is left for the garbage collector.

    The body is a chain of async generators (httpx, then httpcore); closing the outer one
    leaves the inner ones suspended, and trio warns when they are collected. A reply that
    ended normally is read to its end (the connection then goes back to the pool, usually
    within one read); otherwise, or when that takes longer than ``drain_s``, the pending read
    is cancelled, which unwinds every generator of the chain and closes the connection.
    """
    with trio.move_on_after(drain_s) as scope:
        if drain_s <= 0:
            scope.cancel()
        with contextlib.suppress(StopAsyncIteration, httpx.HTTPError):
            while True:
                await body.__anext__()


async def _error_body(response: httpx.Response) -> str:
    """The start of an error response's body, whitespace collapsed; the response is closed."""
    try:
        raw = await response.aread()
    except httpx.HTTPError:
        raw = b""
    finally:
        with trio.CancelScope(shield=True, deadline=trio.current_time() + CLOSE_TIMEOUT_S):
            await response.aclose()
    return " ".join(raw.decode("utf-8", errors="replace").split())[:ERROR_BODY_CHARS]
