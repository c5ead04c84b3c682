"""Safe mode: the server answers reads and talks to agents, and refuses every change.

While safe mode is on, every route declared ``mutating=True`` answers 503 ``SAFE_MODE``
(except the safe-mode route itself and the backup route), and the agents_dir watcher holds
file changes until safe mode is lifted (then it re-scans the directory). The flag lives in
``data_dir/safe_mode.json``, so a restart stays in safe mode; ``caxton safe-mode --enable``
writes the file directly when the server is stopped.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from pathlib import Path

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


class SafeMode:
    """The server's safe-mode switch.

    Args:
        data_dir: where the flag is persisted; None keeps it in memory only.
        status: the state to start in (read with :func:`read_flag`).
    """

    def __init__(self, data_dir: Path | None = None, status: SafeModeStatus = OFF) -> None:
        self.data_dir = data_dir
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
            The flag file is written in a worker thread; once written, the change is applied
            (shielded) so memory and disk agree.

        Resource handling:
            Changes are serialised; setting the current state again does nothing.
        """
        async with self._lock:
            if enabled == self._status.enabled:
                return self._status
            status = enabled_now(reason) if enabled else OFF
            if self.data_dir is not None:
                await trio.to_thread.run_sync(write_flag, self.data_dir, status)
            with trio.CancelScope(shield=True):
                self._status = status
                if enabled:
                    LOGGER.warning(
                        "safe mode enabled%s: changes are refused with 503 SAFE_MODE and "
                        "agents_dir changes are held until it is disabled",
                        f" ({reason})" if reason else "",
                    )
                else:
                    LOGGER.warning("safe mode disabled: changes are accepted again")
                for listener in self._listeners:
                    try:
                        await listener(enabled)
                    except Exception:
                        LOGGER.exception("a safe-mode listener failed")
            return status
