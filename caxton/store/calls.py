"""What the stores on a server (PostgreSQL, Qdrant) do around their calls.

* :class:`DownProbe` — while the server does not answer, calls fail at once (a 503 of the
  store's own code) except one every ``DOWN_PROBE_INTERVAL_S``, which tries the server again;
  the first call that is answered ends it. Callers get their 503 quickly instead of each waiting
  the store's timeout, and the store recovers by itself. It logs when the server stops and
  starts answering.
* :func:`holding_every_token` and :func:`close_within` — a store's close: wait for the running
  calls (every token of the store's limiter), bounded as a whole and shielded from the
  cancellation that ends the store.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Iterator

#: While a server does not answer, calls fail at once except one every this many seconds,
#: which tries the server again; the first that succeeds ends it.
DOWN_PROBE_INTERVAL_S = 1.0


class Unavailable(Protocol):
    """How a store builds its 503 (:class:`~caxton.store.errors.StorageUnavailable`,
    :class:`~caxton.store.errors.MemoryUnavailable`): where the server is, and why."""

    def __call__(self, where: str, reason: str, /) -> Exception: ...


@attrs.define(kw_only=True)
class DownProbe:
    """Whether a store's server answers, as its last calls found.

    Args:
        server: the server's kind in the log lines ("PostgreSQL", "Qdrant").
        where: the server (redacted), in the errors and log lines.
        logger: the store's logger.
        unavailable: the store's error for a server that does not answer.
        down_reason: the reason in an error a call raised when it says the server does not
            answer (it goes down, or stays down), ``None`` for any other error.
        interval_s: the time between probes while the server is down.
        clock: the monotonic clock, in seconds.

    Attributes:
        down_since: the ``clock`` at the first call that found the server down, or
            ``None`` while it answers.
        reason: why the last call found it down.
        next_probe: when a call may try the server again.
        refused_total: the calls failed at once, without trying the server.
    """

    server: str
    where: str
    logger: logging.Logger
    unavailable: Unavailable
    down_reason: Callable[[Exception], str | None]
    interval_s: float = DOWN_PROBE_INTERVAL_S
    clock: Callable[[], float] = time.monotonic
    down_since: float | None = attrs.field(default=None, init=False)
    reason: str = attrs.field(default="", init=False)
    next_probe: float = attrs.field(default=0.0, init=False)
    refused_total: int = attrs.field(default=0, init=False)

    @contextlib.contextmanager
    def call(self) -> Iterator[None]:
        """Guard one call to the server (:meth:`check` before, :meth:`failed` or
        :meth:`answered` after).

        Raises:
            Exception: the store's ``unavailable`` error at once while the server is known
                down, but for one call each ``interval_s``.
        """
        started = self.check()
        try:
            yield
        except Exception as exc:
            reason = self.down_reason(exc)
            if reason is not None:
                self.failed(reason, started=started)
            raise
        self.answered()

    def check(self) -> float:
        """Before a call: fail it at once while the server is known down, unless it is time
        to try again (this call is then the probe). Returns the time the call started.

        Raises:
            Exception: the store's ``unavailable`` error.
        """
        now = self.clock()
        if self.down_since is not None:
            if now < self.next_probe:
                # the server did not answer the last call: fail at once instead of making
                # every caller wait the timeout; one call a probe interval tries again
                self.refused_total += 1
                raise self.unavailable(
                    self.where,
                    f"{self.reason} ({now - self.down_since:.0f} s ago; trying again "
                    f"every {self.interval_s:g} s)",
                )
            self.next_probe = now + self.interval_s
        return now

    def failed(self, reason: str, *, started: float) -> None:
        """After a call, started at ``started``, that found the server down for ``reason``."""
        if self.down_since is None:
            self.down_since = started
            self.logger.warning("%s %s stopped answering: %s", self.server, self.where, reason)
        self.reason = reason
        self.next_probe = self.clock() + self.interval_s

    def answered(self) -> None:
        """After a call the server answered."""
        if self.down_since is not None:
            self.logger.info(
                "%s %s answers again after %.1f s",
                self.server,
                self.where,
                self.clock() - self.down_since,
            )
            self.down_since = None


@contextlib.asynccontextmanager
async def holding_every_token(limiter: trio.CapacityLimiter) -> AsyncIterator[None]:
    """Wait for the calls running under ``limiter`` (take every token), and hold off new ones
    for the block.

    Cancellation:
        Cancelling the wait releases the tokens taken so far.
    """
    borrowers = [object() for _ in range(int(limiter.total_tokens))]
    acquired: list[object] = []
    try:
        for borrower in borrowers:
            await limiter.acquire_on_behalf_of(borrower)
            acquired.append(borrower)
        yield
    finally:
        for borrower in acquired:
            limiter.release_on_behalf_of(borrower)


async def close_within(timeout_s: float, close: Callable[[], Awaitable[None]]) -> bool:
    """Run ``close()`` shielded from cancellation but bounded by ``timeout_s``; whether it
    finished in time (the caller logs what was left)."""
    with trio.CancelScope(shield=True) as scope:
        scope.deadline = trio.current_time() + timeout_s
        await close()
    return not scope.cancelled_caught


__all__ = [
    "DOWN_PROBE_INTERVAL_S",
    "DownProbe",
    "Unavailable",
    "close_within",
    "holding_every_token",
]
