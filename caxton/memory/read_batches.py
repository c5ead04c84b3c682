"""Concurrent reads of entities by name on a shared store, several to a statement (issue #21).

Every entity write first reads the entities it names (its merge is planned on them). On a
shared store each of those reads was a statement in a worker thread of its own: under 16
connections of writes, a thread trip, a pooled connection and a result to parse per write,
most of it Python holding the GIL that the event loop needs. :class:`ReadBatcher` lets at most
``slots`` reads run at once; the callers that come while they run add their names to one open
read, which the first of them sends when a slot frees, with every name added until then.

No task of its own: the first caller of a read sends it and the others wait for it. A lone
read finds a slot free and goes at once. Each caller gets the stored entities among its own
names, as a read of those alone would have given (a later snapshot at most, which a plan on a
shared store must allow for anyway: its commit checks what it read). A read that fails fails
every caller in it (an entity name cannot break a statement; the store being down can). A
caller cancelled while waiting leaves; its names stay in the read, which the others still
get. If the caller sending a read is cancelled before it starts, the others send their own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs
import trio

from caxton.memory.types import Entity

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

#: Reads in flight at once (as the search batcher's slots: few enough that callers gather).
DEFAULT_SLOTS = 2
#: The most names one read asks for; callers beyond it start the next read.
MAX_NAMES = 256


@attrs.define(eq=False)
class _Read:
    """Names to read together, and what became of the read."""

    names: dict[str, None] = attrs.field(factory=dict)
    #: whether one of its callers took on sending it
    sending: bool = False
    done: trio.Event = attrs.field(factory=trio.Event)
    found: dict[str, Entity] | None = None
    error: Exception | None = None


class ReadBatcher:
    """Reads of entities by name, several callers' to a statement when they come together.

    Args:
        fetch: reads the stored entities among the names it is given (a store call).
        slots: reads in flight at once.
        max_names: names per read.
    """

    def __init__(
        self,
        fetch: Callable[[Sequence[str]], Awaitable[dict[str, Entity]]],
        *,
        slots: int = DEFAULT_SLOTS,
        max_names: int = MAX_NAMES,
    ) -> None:
        if slots < 1 or max_names < 1:
            raise ValueError(f"slots and max_names must be at least 1, got {slots}, {max_names}")
        self.fetch = fetch
        self.max_names = max_names
        self._slots = trio.Semaphore(slots)
        self._open = _Read()
        #: statements sent, and the callers they answered
        self.reads = 0
        self.callers = 0

    async def read(self, names: Sequence[str]) -> dict[str, Entity]:
        """The stored entities among ``names``, keyed by name.

        Raises:
            Exception: what the store raised for the read these names were in.

        Cancellation:
            A caller waiting for a read leaves it; the read goes on for the others.
        """
        self.callers += 1
        while True:
            batch = self._join(names)
            if not batch.sending:
                batch.sending = True
                await self._send(batch)
            else:
                await batch.done.wait()
            if batch.error is not None:
                raise batch.error
            if batch.found is not None:
                return {name: batch.found[name] for name in names if name in batch.found}
            # its sender was cancelled before it started: read again

    def _join(self, names: Sequence[str]) -> _Read:
        batch = self._open
        if batch.names and len(batch.names) + len(names) > self.max_names:
            batch = self._open = _Read()
        batch.names.update(dict.fromkeys(names))
        return batch

    async def _send(self, batch: _Read) -> None:
        try:
            await self._slots.acquire()
        except BaseException:
            # cancelled before the read started: the others in it read again on their own
            if self._open is batch:
                self._open = _Read()
            batch.done.set()
            raise
        try:
            if self._open is batch:
                self._open = _Read()  # names from now on go to the next read
            self.reads += 1
            try:
                batch.found = await self.fetch(list(batch.names))
            except Exception as exc:
                batch.error = exc
                raise
            # cancelled (its sender's own, not the others'): they read again on their own
        finally:
            self._slots.release()
            batch.done.set()
