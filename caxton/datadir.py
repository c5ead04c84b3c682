"""The data directory: created on start, locked so two servers cannot share it.

The lock is an ``flock`` on ``data_dir/caxton.lock`` held for the life of the process (the
kernel drops it if the process dies, so a crash never leaves a stale lock). ``state.json``
counts starts and records whether the last stop was clean, for
``caxton_server_restarts_total`` and the unclean-stop warning.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from caxton.errors import DataDirLockedError, StartupError

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator

LOGGER = logging.getLogger("caxton.datadir")
LOCK_NAME = "caxton.lock"
STATE_NAME = "state.json"


@attrs.frozen(kw_only=True)
class DataDirState:
    """What the previous runs left behind."""

    path: Path
    starts: int
    previous_stop_clean: bool | None


def _acquire(path: Path) -> tuple[int, DataDirState]:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise StartupError(
            f"cannot create data_dir {path}: {exc.strerror}; create it and give the server "
            "user write access, or set server.data_dir to a writable directory",
            details={"data_dir": str(path)},
        ) from None
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise StartupError(
            f"cannot open {lock_path}: {exc.strerror}; check the permissions of data_dir",
            details={"data_dir": str(path)},
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        holder = _read_holder(fd)
        os.close(fd)
        if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise DataDirLockedError(
                f"data_dir {path} is already in use by another Caxton server{holder}; stop it, "
                "or give this server its own server.data_dir",
                details={"data_dir": str(path)},
            ) from None
        raise
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd, _record_start(path)


def _read_holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except OSError:
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _load_state(path: Path) -> dict[str, object]:
    try:
        data = json.loads((path / STATE_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_state(path: Path, data: dict[str, object]) -> None:
    tmp = path / f"{STATE_NAME}.tmp"
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path / STATE_NAME)


def _record_start(path: Path) -> DataDirState:
    data = _load_state(path)
    starts_value = data.get("starts", 0)
    starts = starts_value if isinstance(starts_value, int) else 0
    running = data.get("running")
    previous_clean = None if starts == 0 else not bool(running)
    data.update(starts=starts + 1, running=True, pid=os.getpid(), started_at=time.time(), version=1)
    _write_state(path, data)
    return DataDirState(path=path, starts=starts + 1, previous_stop_clean=previous_clean)


def _release(path: Path, fd: int) -> None:
    try:
        data = _load_state(path)
        data.update(running=False, stopped_at=time.time())
        _write_state(path, data)
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@contextlib.contextmanager
def hold_offline(path: Path, *, wait_s: float = 0.0) -> Iterator[None]:
    """Hold ``path``'s lock while a command works on the files of a stopped server.

    Used by ``caxton backup restore`` and the other commands that change a stopped server's
    files, so that no server starts in the middle. Start counts are not touched.

    Args:
        path: the data_dir (created if missing).
        wait_s: how long to wait for a running server to release the lock.

    Raises:
        DataDirLockedError: a server still holds the lock after ``wait_s``.
    """
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                if time.monotonic() >= deadline:
                    raise DataDirLockedError(
                        f"a Caxton server is running on data_dir {path}{_read_holder(fd)}; "
                        "stop it first (systemctl stop caxton, or SIGTERM)",
                        details={"data_dir": str(path)},
                    ) from None
                time.sleep(0.1)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def holder_pid(path: Path) -> int | None:
    """The pid of the server holding ``path``'s lock, or None when no server runs there."""
    lock_path = path / LOCK_NAME
    if not lock_path.is_file():
        return None
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            holder = _read_holder(fd).strip(" ()").removeprefix("pid ")
            return int(holder) if holder.isdigit() else 0
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


@contextlib.asynccontextmanager
async def open_data_dir(path: Path) -> AsyncIterator[DataDirState]:
    """Create and lock ``path`` for the duration of the block.

    Raises:
        DataDirLockedError: another server holds the lock.
        StartupError: the directory cannot be created or opened.

    Resource handling:
        The lock is released, and the stop recorded as clean, when the block exits, also by
        cancellation. A crash leaves ``running: true`` behind, which the next start reports.
    """
    fd, state = await trio.to_thread.run_sync(_acquire, path)
    if state.previous_stop_clean is False:
        LOGGER.warning(
            "the previous run on %s did not stop cleanly (crash or SIGKILL); check the logs "
            "of that run",
            path,
        )
    try:
        yield state
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(_release, path, fd)
