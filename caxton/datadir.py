"""The data directory: created on start, locked so two servers cannot share it.

Everything under data_dir is the server's alone: the directory is 0700, its files 0600
(agent files may hold API keys, the database holds every message). Start tightens what an older
version or another umask left open, and logs what it changed (issue #13).

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
#: Modes of what the server creates under data_dir: owner only.
DIR_MODE = 0o700
FILE_MODE = 0o600
#: The process umask ``caxton serve`` sets, so every file it creates is owner-only.
SERVER_UMASK = 0o077


@attrs.frozen(kw_only=True)
class DataDirState:
    """What the previous runs left behind."""

    path: Path
    starts: int
    previous_stop_clean: bool | None


def tighten_tree(path: Path) -> list[Path]:
    """Remove group and other access from ``path`` and everything below it; return what changed.

    Symbolic links are not followed (nor changed); paths of another owner are left alone.
    """
    changed: list[Path] = []

    def tighten(target: Path, *, directory: bool) -> None:
        try:
            info = target.lstat()
            if info.st_uid != os.geteuid():
                return  # another user's file (say an operator's agent file): theirs to set
            mode = info.st_mode & 0o7777
            if mode & 0o077:
                os.chmod(target, (mode & 0o700) | (DIR_MODE if directory else 0))
                changed.append(target)
        except OSError as exc:
            LOGGER.warning("cannot restrict %s to its owner: %s", target, exc.strerror)

    if path.is_symlink() or not path.is_dir():
        return changed
    tighten(path, directory=True)
    for root, dirs, files in os.walk(path, followlinks=False):
        for name in dirs:
            if not os.path.islink(os.path.join(root, name)):
                tighten(Path(root, name), directory=True)
        for name in files:
            if not os.path.islink(os.path.join(root, name)):
                tighten(Path(root, name), directory=False)
    return changed


def restrict_file(path: Path) -> None:
    """Make one file the server wrote (or a tool like DuckDB wrote for it) owner-only."""
    with contextlib.suppress(FileNotFoundError):
        if path.lstat().st_mode & 0o077 and not path.is_symlink():
            os.chmod(path, FILE_MODE)


def _acquire(path: Path) -> tuple[int, DataDirState]:
    try:
        path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
        changed = tighten_tree(path)
    except OSError as exc:
        raise StartupError(
            f"cannot create data_dir {path}: {exc.strerror}; create it and give the server "
            "user write access, or set server.data_dir to a writable directory",
            details={"data_dir": str(path)},
        ) from None
    if changed:
        shown = ", ".join(str(p.relative_to(path)) or "." for p in changed[:5])
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        LOGGER.warning(
            "data_dir %s: removed group/other access from %d paths (%s%s); data_dir is now "
            "0700 and its files 0600",
            path,
            len(changed),
            shown,
            more,
        )
    lock_path = path / LOCK_NAME
    try:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, FILE_MODE)
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
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(json.dumps(data, indent=2))
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
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, FILE_MODE)
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
        The process umask is 0077 inside the block. The lock is released, the umask restored,
        and the stop recorded as clean, when the block exits, also by cancellation. A crash
        leaves ``running: true`` behind, which the next start reports.
    """
    # Files the server creates from now on (DuckDB's, models, logs, backups) are owner-only
    # too; the previous umask comes back when the last open block exits (in-process servers,
    # tests: several may run at once and stop in any order).
    _hold_server_umask()
    try:
        fd, state = await trio.to_thread.run_sync(_acquire, path)
    except BaseException:
        _release_server_umask()
        raise
    if state.previous_stop_clean is False:
        LOGGER.warning(
            "the previous run on %s did not stop cleanly (crash or SIGKILL); check the logs "
            "of that run",
            path,
        )
    try:
        yield state
    finally:
        try:
            with trio.CancelScope(shield=True):
                await trio.to_thread.run_sync(_release, path, fd)
        finally:
            _release_server_umask()


#: how many open data directories hold the server umask, and the umask from before the first
_umask_holders = 0
_umask_before = 0


def _hold_server_umask() -> None:
    global _umask_holders, _umask_before
    previous = os.umask(SERVER_UMASK)
    if _umask_holders == 0:
        _umask_before = previous
    _umask_holders += 1


def _release_server_umask() -> None:
    global _umask_holders
    _umask_holders -= 1
    if _umask_holders == 0:
        os.umask(_umask_before)
