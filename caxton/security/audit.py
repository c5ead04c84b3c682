"""The audit log: one JSON line per mutating call, in ``security.audit.log_file``.

Each line holds ``time``, ``identity``, ``role``, ``auth`` (api_key | jwt | none), ``method``,
``route`` (the declared rule), ``target`` (the concrete path), ``status``, ``outcome``
(ok | denied | rejected | error), ``request_id``, ``client`` and ``protocol`` (http; mcp
for tool calls through ``/mcp``; a2a for A2A JSON-RPC methods). Calls refused by
authentication, authorization or the rate limit are recorded too, as ``denied``.

The file is rotated by size: ``audit.log`` becomes ``audit.log.1`` and so on, keeping
``backups`` old files. Lines are written by one worker thread at a time (a limiter of 1), so
lines never interleave and their order is the order of the calls' completion. Calls that end
while a write is under way have their lines written together by the next one, one worker-thread
trip and one ``write(2)`` for all (issue #21: under 16 concurrent entity writes a trip per line
cost more than the line); each call still returns only once its own line is written.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

LOGGER = logging.getLogger("caxton.audit")
DEFAULT_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_BACKUPS = 5


def outcome_of(status: int) -> str:
    if status in (401, 403, 429):
        return "denied"
    if status >= 500:
        return "error"
    if status >= 400:
        return "rejected"
    return "ok"


@attrs.frozen(kw_only=True)
class AuditRecord:
    time: str
    identity: str
    role: str | None
    auth: str
    method: str
    route: str
    target: str
    status: int
    outcome: str
    request_id: str | None
    client: str | None
    #: how the call came: ``http`` (the REST API), ``mcp`` (a tool call through ``/mcp``)
    #: or ``a2a`` (an A2A JSON-RPC method, which is then the ``method``; issue #19)
    protocol: str = "http"

    @classmethod
    def now(cls, **fields: object) -> AuditRecord:
        stamp = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        status = int(str(fields["status"]))
        return cls(time=stamp, outcome=outcome_of(status), **fields)  # type: ignore[arg-type]

    def line(self) -> str:
        return json.dumps(attrs.asdict(self), separators=(",", ":")) + "\n"


@attrs.define
class _Batch:
    """Lines waiting to be written together, and what became of them."""

    lines: list[str] = attrs.field(factory=list)
    #: whether a caller took on writing this batch (the first to add a line)
    led: bool = False
    written: trio.Event = attrs.field(factory=trio.Event)
    error: Exception | None = None


class AuditLog:
    """Appends :class:`AuditRecord` lines to ``path``, rotating past ``max_bytes``.

    Args:
        path: the log file; its directory is created when missing.
        max_bytes: size at which the file is rotated.
        backups: rotated files kept (``path.1`` is the newest).
    """

    def __init__(
        self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, backups: int = DEFAULT_BACKUPS
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._limiter = trio.CapacityLimiter(1)
        #: the batch lines join; it closes when its writer's turn comes
        self._open = _Batch()
        self._turn = trio.Lock()
        self._writes = 0

    @property
    def writes(self) -> int:
        """Worker-thread writes so far (each wrote one batch of lines)."""
        return self._writes

    async def record(self, record: AuditRecord) -> None:
        """Append ``record``; return once it is written. A failed write is logged, never
        raised into the request.

        The first caller to add a line to the open batch writes it once the write before has
        finished, with every line added meanwhile; the others wait for that write.

        Cancellation:
            The write runs in a worker thread and a batch's writer is shielded (one short
            write waits for it at most), so a batch is always written, and a line is whole or
            absent; a cancelled caller's line is still written.
        """
        line = record.line()
        batch = self._open
        batch.lines.append(line)
        if batch.led:
            await batch.written.wait()
        else:
            batch.led = True
            with trio.CancelScope(shield=True):
                await self._write(batch)
        if batch.error is not None:
            LOGGER.error(
                "audit log %s: cannot write (%s); the call was: %s",
                self.path,
                batch.error,
                line.strip(),
            )

    async def _write(self, batch: _Batch) -> None:
        async with self._turn:
            if self._open is batch:
                self._open = _Batch()  # lines from now on go to the next write
            try:
                self._writes += 1
                await trio.to_thread.run_sync(self.write_lines, batch.lines, limiter=self._limiter)
            except Exception as exc:  # OSError mostly: a full disk, a file made unwritable
                batch.error = exc
            finally:
                batch.written.set()

    def write_line(self, line: str) -> None:
        """Append one line, rotating first when it would pass ``max_bytes`` (blocking)."""
        self.write_lines([line])

    def write_lines(self, lines: Sequence[str]) -> None:
        """Append ``lines`` in order, rotating before any that would pass ``max_bytes``
        (blocking; one ``write(2)`` for all when no rotation falls among them)."""
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = 0
        chunk = bytearray()
        for line in lines:
            data = line.encode("utf-8")
            if size and size + len(data) > self.max_bytes:
                if chunk:
                    self._append(chunk)
                    chunk.clear()
                self._rotate()
                size = 0
            chunk += data
            size += len(data)
        if chunk:
            self._append(chunk)

    def _append(self, data: bytes | bytearray) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)

    def _rotate(self) -> None:
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink()
