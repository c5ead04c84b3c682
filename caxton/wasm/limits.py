"""Per-agent resource limits of a WebAssembly guest, and the server-wide bounds around them.

``WasmLimits`` is the manifest's ``[limits]`` table. The constants below are not settings: they
bound what any guest can make the host do (issue #13), whatever its manifest says, and are
documented in README's Security section. :class:`LogBudget` and :class:`TokenBucket` are the
sans-IO accounting behind the guest log bounds.
"""

from __future__ import annotations

import os
import threading
import time
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Callable

MIB = 1024 * 1024
KIB = 1024

# -- the worker threads (issue #13 items 12 and 13) ------------------------------------------

_CORES = os.cpu_count() or 1

DEFAULT_MAX_CONCURRENT_CALLS = max(32, 16 * _CORES)
"""Guest calls running at once in the whole pool when ``wasm.max_concurrent_calls`` is unset.

Guest code runs outside the GIL and a blocked or spinning guest costs one thread, so the pool is
much larger than the core count: what keeps agents from starving each other is the per-agent
limit below, not this one."""

MAX_CONCURRENT_CALLS_PER_AGENT = max(2, _CORES)
"""Guest calls of one agent running at once (a caxton-v1 agent runs one at a time anyway).
With the default pool, 16 agents at this limit leave threads for every other agent."""

MAX_QUEUED_CALLS_PER_AGENT = 64
"""Calls of one agent version waiting for a worker thread (or, caxton-v1, for its instance)
beyond those running; one more is refused at once with ``AGENT_BUSY`` (503, Retry-After)."""

AGENT_BUSY_RETRY_AFTER_S = 1
"""The ``Retry-After`` of an ``AGENT_BUSY`` answer, in seconds."""

# -- guest logs (issue #13 item 4) -------------------------------------------------------------

MAX_LOG_BYTES_PER_CALL = 64 * KIB
"""Bytes of ``caxton.log`` lines (and wasi-stdio stderr) kept per guest call; the rest is
dropped, counted, and noted (at most one note line a second per agent: :class:`DropNotes`)."""

MAX_LOG_LINE_BYTES = 4 * KIB
"""A longer log line (or stderr write) is cut to this many bytes; the rest counts as dropped."""

LOG_LINES_PER_SECOND = 20.0
"""Sustained guest log lines per second per agent version (token bucket)."""

LOG_LINES_BURST = 200
"""Guest log lines an agent version may write back to back before the rate applies."""

# -- guest sends (issue #13 items 5 and 15) ----------------------------------------------------

MAX_SENDS_PER_CALL = 16
"""``caxton.send_message`` calls accepted in one guest call; later ones return -6."""


@attrs.frozen(kw_only=True)
class WasmLimits:
    """Limits applied to every guest call of one agent version.

    Attributes:
        max_memory_bytes: linear memory cap; ``memory.grow`` past it returns -1 in the guest.
        max_fuel: wasmtime fuel granted to each call (and to ``agent_init``).
        max_execution_time_s: wall-clock budget of each call, enforced by epoch interruption;
            time spent queued for a worker thread or the instance counts against it.
        max_message_size: cap in bytes on the incoming message and on the whole reply.
    """

    max_memory_bytes: int = attrs.field(default=10 * MIB, validator=attrs.validators.gt(0))
    max_fuel: int = attrs.field(default=500_000_000, validator=attrs.validators.gt(0))
    max_execution_time_s: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    max_message_size: int = attrs.field(default=100_000, validator=attrs.validators.gt(0))


class TokenBucket:
    """A thread-safe token bucket: ``rate_per_s`` tokens a second, at most ``burst`` saved.

    Args:
        rate_per_s: tokens added per second.
        burst: capacity (the bucket starts full).
        clock: seconds from any fixed origin (default ``time.monotonic``).
    """

    def __init__(
        self, *, rate_per_s: float, burst: int, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.rate_per_s = rate_per_s
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._at = clock()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Take one token; False (and nothing taken) when the bucket is empty."""
        with self._lock:
            now = self._clock()
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self.rate_per_s)
            self._at = now
            if self._tokens < 1.0:
                return False
            self._tokens -= 1.0
            return True


@attrs.define(eq=False)
class LogBudget:
    """What one guest call may still log; counts what it had to drop. Thread-safe.

    Attributes:
        bucket: the agent's line rate (shared by all its calls).
        max_bytes: bytes this call may log.
        max_line_bytes: the cap on one line.
        used_bytes: bytes kept so far.
        dropped_bytes: bytes refused so far (cut lines, lines past the budget or the rate).
        dropped_lines: lines refused whole.
    """

    bucket: TokenBucket
    max_bytes: int = MAX_LOG_BYTES_PER_CALL
    max_line_bytes: int = MAX_LOG_LINE_BYTES
    used_bytes: int = 0
    dropped_bytes: int = 0
    dropped_lines: int = 0
    _lock: threading.Lock = attrs.field(factory=threading.Lock, repr=False)

    def admit(self, length: int) -> int:
        """Return how many bytes of a ``length``-byte line to keep (0: drop it whole)."""
        if length <= 0:
            return 0
        with self._lock:
            keep = min(length, self.max_line_bytes, self.max_bytes - self.used_bytes)
            if keep > 0 and not self.bucket.take():
                keep = 0
            if keep <= 0:
                keep = 0
                self.dropped_lines += 1
            self.used_bytes += keep
            self.dropped_bytes += length - keep
            return keep

    def note(self) -> str | None:
        """The one line that says what this call dropped, or None when nothing was."""
        if not self.dropped_bytes:
            return None
        return self.note_for(self.dropped_bytes, self.dropped_lines, "in this call")

    def note_for(self, dropped_bytes: int, dropped_lines: int, when: str) -> str:
        """The note line for ``dropped_bytes`` (``dropped_lines`` of them whole lines)."""
        return (
            f"caxton: {dropped_bytes} bytes of guest log dropped {when} "
            f"({dropped_lines} whole lines; the bounds are {self.max_line_bytes} bytes a "
            f"line, {self.max_bytes} bytes a call, {self.bucket.rate_per_s:g} lines/s with "
            f"bursts of {self.bucket.burst} per agent)"
        )


DROP_NOTE_INTERVAL_S = 1.0
"""An agent's note about dropped guest log is written at most once a second, with what was
dropped since the last one: a guest past its line rate on every call must not write a note
line per call instead (the notes would be the flood the bounds stop)."""


class DropNotes:
    """When an agent's next note about dropped guest log is due, and what it will say.
    Thread-safe (every call of the agent version shares one).

    Args:
        interval_s: the least time between two notes.
        clock: seconds from any fixed origin (default ``time.monotonic``).
    """

    def __init__(
        self,
        *,
        interval_s: float = DROP_NOTE_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last: float | None = None
        self._bytes = 0
        self._lines = 0

    def add(self, dropped_bytes: int, dropped_lines: int) -> tuple[int, int, bool] | None:
        """Count what one call dropped; return ``(bytes, lines, alone)`` to note now (the
        totals since the last note, and whether they are this call's alone), or None."""
        with self._lock:
            self._bytes += dropped_bytes
            self._lines += dropped_lines
            now = self._clock()
            if self._last is not None and now - self._last < self.interval_s:
                return None
            alone = self._bytes == dropped_bytes
            due = (self._bytes, self._lines, alone)
            self._last, self._bytes, self._lines = now, 0, 0
            return due
