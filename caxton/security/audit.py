"""The audit log: one JSON line per mutating call, in ``security.audit.log_file``.

Each line holds ``time``, ``identity``, ``role``, ``auth`` (api_key | jwt | none), ``method``,
``route`` (the declared rule), ``target`` (the concrete path), ``status``, ``outcome``
(ok | denied | rejected | error), ``request_id``, ``client`` and ``protocol`` (http; mcp
for tool calls through ``/mcp``; a2a for A2A JSON-RPC methods). Calls refused by
authentication, authorization or the rate limit are recorded too, as ``denied``.

The file is rotated by size: ``audit.log`` becomes ``audit.log.1`` and so on, keeping
``backups`` old files. Lines are written by one worker thread at a time (a limiter of 1), so
lines never interleave and their order is the order of the calls' completion.
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

    async def record(self, record: AuditRecord) -> None:
        """Append ``record``; a failed write is logged, never raised into the request.

        Cancellation:
            The write runs in a worker thread; if the caller is cancelled the thread still
            finishes the line (it is short), so a line is either whole or absent.
        """
        try:
            await trio.to_thread.run_sync(self.write_line, record.line(), limiter=self._limiter)
        except OSError as exc:
            LOGGER.error(
                "audit log %s: cannot write (%s); the call was: %s",
                self.path,
                exc,
                record.line().strip(),
            )

    def write_line(self, line: str) -> None:
        """Append one line, rotating first when it would pass ``max_bytes`` (blocking)."""
        data = line.encode("utf-8")
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
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
