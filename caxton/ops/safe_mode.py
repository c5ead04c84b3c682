"""Safe mode: the server answers reads and talks to agents, and refuses every change.

While safe mode is on, every route declared ``mutating=True`` answers 503 ``SAFE_MODE``
(except the safe-mode route itself and the backup route), and the agents_dir watcher holds
file changes until safe mode is lifted (then it re-scans the directory).

Where the flag lives is a :class:`SafeModeFlag`: ``data_dir/safe_mode.json`` with the embedded
backend (:class:`FileSafeModeFlag`; ``caxton safe-mode --enable`` writes the file directly when
the server is stopped), or one row in PostgreSQL (:class:`PostgresSafeModeFlag`,
:data:`SAFE_MODE_POSTGRES_MIGRATIONS`) that every instance on the database shares. Either way a
restart stays in safe mode, and :meth:`SafeMode.refresh` re-reads the flag when another
instance changed it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio

from caxton.store import Migration

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.store.backend import Backend

LOGGER = logging.getLogger("caxton.ops.safe_mode")
FLAG_FILE = "safe_mode.json"

Listener = Callable[[bool], Awaitable[None]]


@attrs.frozen(kw_only=True)
class SafeModeStatus:
    """Whether safe mode is on, since when and why."""

    enabled: bool
    since: str | None = None
    reason: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"enabled": self.enabled, "since": self.since, "reason": self.reason}


OFF = SafeModeStatus(enabled=False)


def refuses(*, enabled: bool, mutating: bool, endpoint: str, exempt: frozenset[str]) -> bool:
    """Whether a call to ``endpoint`` is refused (pure)."""
    return enabled and mutating and endpoint not in exempt


def read_flag(data_dir: Path) -> SafeModeStatus:
    """The persisted flag (blocking); a missing or unreadable file means off."""
    path = data_dir / FLAG_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return OFF
    except (OSError, ValueError):
        LOGGER.warning("%s is unreadable; starting in safe mode to be careful", path)
        return SafeModeStatus(enabled=True, reason=f"{path} was unreadable")
    if not isinstance(data, dict) or not data.get("enabled"):
        return OFF
    return SafeModeStatus(
        enabled=True,
        since=str(data["since"]) if data.get("since") else None,
        reason=str(data["reason"]) if data.get("reason") else None,
    )


def write_flag(data_dir: Path, status: SafeModeStatus) -> None:
    """Persist ``status`` (blocking): the file is written atomically, or removed when off."""
    path = data_dir / FLAG_FILE
    if not status.enabled:
        path.unlink(missing_ok=True)
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{FLAG_FILE}.partial")
    partial.write_text(json.dumps(status.to_json(), indent=2), encoding="utf-8")
    os.replace(partial, path)


def enabled_now(reason: str | None) -> SafeModeStatus:
    now = dt.datetime.now(dt.UTC).isoformat().replace("+00:00", "Z")
    return SafeModeStatus(enabled=True, since=now, reason=reason)


class SafeModeFlag(Protocol):
    """Where the safe-mode flag is kept."""

    async def read(self) -> SafeModeStatus:
        """The flag as kept now (off when it was never set)."""
        ...

    async def write(self, status: SafeModeStatus) -> None:
        """Keep ``status``."""
        ...


class FileSafeModeFlag:
    """The flag as ``data_dir/safe_mode.json`` (:func:`read_flag`, :func:`write_flag`), read and
    written in a worker thread."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir

    async def read(self) -> SafeModeStatus:
        return await trio.to_thread.run_sync(read_flag, self.data_dir)

    async def write(self, status: SafeModeStatus) -> None:
        await trio.to_thread.run_sync(write_flag, self.data_dir, status)


#: One row (``id`` is always true), absent until safe mode is first turned on.
SAFE_MODE_POSTGRES_MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        feature="safe_mode",
        version=1,
        description="the safe-mode flag every instance shares",
        statements=(
            """
            CREATE TABLE safe_mode (
                id BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (id),
                enabled BOOLEAN NOT NULL,
                since TEXT,
                reason TEXT,
                updated_at TIMESTAMPTZ NOT NULL DEFAULT now()
            )
            """,
        ),
    ),
)


class PostgresSafeModeFlag:
    """The flag as the one row of the ``safe_mode`` table, shared by every instance.

    Args:
        store: the running store, migrated with :data:`SAFE_MODE_POSTGRES_MIGRATIONS`.
        notify: called with the connection inside each write's transaction (to send the other
            instances a notice that is delivered only if the change commits).
    """

    def __init__(self, store: Backend, *, notify: Callable[[Any], None] | None = None) -> None:
        self.store = store
        self.notify = notify

    async def read(self) -> SafeModeStatus:
        row = await self.store.execute_fn(
            lambda conn: conn.execute("SELECT enabled, since, reason FROM safe_mode").fetchone()
        )
        if row is None or not row[0]:
            return OFF
        return SafeModeStatus(enabled=True, since=row[1], reason=row[2])

    async def write(self, status: SafeModeStatus) -> None:
        def write(conn: Any) -> None:
            conn.execute(
                "INSERT INTO safe_mode (id, enabled, since, reason) VALUES (TRUE, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET enabled = excluded.enabled, "
                "since = excluded.since, reason = excluded.reason, updated_at = now()",
                [status.enabled, status.since, status.reason],
            )
            if self.notify is not None:
                self.notify(conn)

        await self.store.execute_write_fn(write)


class SafeMode:
    """The server's safe-mode switch.

    Args:
        data_dir: the flag is kept as ``data_dir/safe_mode.json`` (when no ``flag`` is given);
            None with no ``flag`` keeps it in memory only.
        status: the state to start in (read with :func:`read_flag`, or :meth:`refresh`).
        flag: where the flag is kept (a PostgreSQL row, say), instead of ``data_dir``.
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        status: SafeModeStatus = OFF,
        *,
        flag: SafeModeFlag | None = None,
    ) -> None:
        self.data_dir = data_dir
        self.flag: SafeModeFlag | None = (
            flag if flag is not None else None if data_dir is None else FileSafeModeFlag(data_dir)
        )
        self._status = status
        self._listeners: list[Listener] = []
        self._lock = trio.Lock()

    @property
    def enabled(self) -> bool:
        return self._status.enabled

    @property
    def status(self) -> SafeModeStatus:
        return self._status

    def on_change(self, listener: Listener) -> None:
        """Call ``await listener(enabled)`` after each change (the watcher re-scans on exit)."""
        self._listeners.append(listener)

    async def set(self, enabled: bool, *, reason: str | None = None) -> SafeModeStatus:
        """Turn safe mode on or off, persist it, then tell the listeners.

        Cancellation:
            The flag is written off the event loop; once written, the change is applied
            (shielded) so memory and the kept flag agree.

        Resource handling:
            Changes are serialised; setting the current state again does nothing.
        """
        async with self._lock:
            if enabled == self._status.enabled:
                return self._status
            status = enabled_now(reason) if enabled else OFF
            if self.flag is not None:
                await self.flag.write(status)
            with trio.CancelScope(shield=True):
                await self._apply(status)
            return status

    async def refresh(self) -> SafeModeStatus:
        """Re-read the kept flag and apply it (another instance, or the CLI, changed it); the
        listeners are told when it turned on or off. Nothing is written.

        Raises:
            StorageUnavailable: the flag cannot be read now (the state stays as it was).

        Cancellation:
            Once read, the change is applied (shielded).
        """
        async with self._lock:
            if self.flag is None:
                return self._status
            status = await self.flag.read()
            with trio.CancelScope(shield=True):
                if status.enabled != self._status.enabled:
                    await self._apply(status)
                else:
                    self._status = status  # the same switch, perhaps another reason
            return status

    async def _apply(self, status: SafeModeStatus) -> None:
        self._status = status
        if status.enabled:
            LOGGER.warning(
                "safe mode enabled%s: changes are refused with 503 SAFE_MODE and "
                "agents_dir changes are held until it is disabled",
                f" ({status.reason})" if status.reason else "",
            )
        else:
            LOGGER.warning("safe mode disabled: changes are accepted again")
        for listener in self._listeners:
            try:
                await listener(status.enabled)
            except Exception:
                LOGGER.exception("a safe-mode listener failed")
