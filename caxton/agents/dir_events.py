"""Changes to the files of one directory, from Linux inotify, for a worker thread to wait on.

``watchfiles`` (which the watcher used alone before) waits for changes in a loop that wakes
every ``step`` milliseconds to look at its stop event, taking the GIL each time: four times a
second, a sixth of an idle server's CPU (issue #21), and up to two steps before a change is
even seen. :class:`DirectoryEvents` blocks in ``poll(2)`` on the inotify descriptor and a
pipe instead: its thread sleeps until a file changes or :meth:`DirectoryEvents.stop` writes to
the pipe, so an idle server is not woken for it and a change is seen at once.

Only Linux has inotify; :func:`open_directory_events` returns None where it is missing or
cannot be had (no ``libc`` entry, the per-user instance limit), and the watcher falls back to
``watchfiles``. So does ``agents.force_polling``, for network filesystems, where inotify
does not see other hosts' writes.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import select
import struct
import time
from typing import TYPE_CHECKING, Final

import attrs

if TYPE_CHECKING:
    from pathlib import Path

LOGGER = logging.getLogger("caxton.watcher")

IN_MODIFY: Final = 0x00000002
IN_ATTRIB: Final = 0x00000004
IN_CLOSE_WRITE: Final = 0x00000008
IN_MOVED_FROM: Final = 0x00000040
IN_MOVED_TO: Final = 0x00000080
IN_CREATE: Final = 0x00000100
IN_DELETE: Final = 0x00000200
IN_DELETE_SELF: Final = 0x00000400
IN_MOVE_SELF: Final = 0x00000800
IN_Q_OVERFLOW: Final = 0x00004000
IN_IGNORED: Final = 0x00008000
IN_ONLYDIR: Final = 0x01000000
IN_NONBLOCK: Final = os.O_NONBLOCK
IN_CLOEXEC: Final = os.O_CLOEXEC

#: What is asked for: anything that can change a file's content or presence in the directory.
WATCH_MASK: Final = (
    IN_MODIFY
    | IN_ATTRIB
    | IN_CLOSE_WRITE
    | IN_MOVED_FROM
    | IN_MOVED_TO
    | IN_CREATE
    | IN_DELETE
    | IN_DELETE_SELF
    | IN_MOVE_SELF
    | IN_ONLYDIR
)
#: The directory itself went away (deleted, moved, or its filesystem unmounted).
GONE_MASK: Final = IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED

_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len; then the name
#: Bytes read at a time: the kernel's queue holds 16384 events by default; a read returns
#: whole events only, and one of the longest names (255 bytes) fits.
READ_SIZE: Final = 64 * 1024
#: Changes closer together than the debounce are one batch, but a batch is gathered for at
#: most this many debounces, so that files that never stop changing still get reloaded.
MAX_DEBOUNCES: Final = 10


@attrs.frozen
class Changes:
    """What one :meth:`DirectoryEvents.wait` saw: the names of the files that changed,
    ``overflow`` when the kernel dropped events (the caller then re-reads the directory), and
    ``gone`` when the directory itself went away (nothing more will be reported)."""

    names: frozenset[str]
    overflow: bool = False
    gone: bool = False


class DirectoryEvents:
    """inotify on ``directory`` (not its subdirectories), for :meth:`wait` in a worker thread.

    Resource handling:
        Holds the inotify descriptor and a pipe until :meth:`close`. The kernel queues events
        while nobody waits (up to its queue size; past that :attr:`Changes.overflow`).
    """

    def __init__(self, directory: Path, inotify_fd: int) -> None:
        self.directory = directory
        self._fd = inotify_fd
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._gone = False

    def wait(self, debounce_s: float) -> Changes | None:
        """Block until files change, then gather changes until none came for ``debounce_s``
        (at most :data:`MAX_DEBOUNCES` times that after the first); None once :meth:`stop`
        was called.

        Runs in a worker thread; sleeps in ``poll(2)`` without waking while nothing happens.
        """
        poller = select.poll()
        poller.register(self._fd, select.POLLIN)
        poller.register(self._wake_read, select.POLLIN)
        names: set[str] = set()
        overflow = False
        first_at: float | None = None
        while True:
            if first_at is None:
                timeout_ms = None  # nothing seen yet: sleep until something happens
            else:
                left = first_at + MAX_DEBOUNCES * debounce_s - time.monotonic()
                if left <= 0:
                    break
                timeout_ms = max(1, round(min(debounce_s, left) * 1000))
            ready = poller.poll(timeout_ms)
            if not ready:
                break  # quiet for long enough
            if any(fd == self._wake_read for fd, _ in ready):
                return None
            seen, lost = self._read()
            names |= seen
            overflow = overflow or lost
            if self._gone:
                break
            if first_at is None and (seen or lost):
                first_at = time.monotonic()
        return Changes(names=frozenset(names), overflow=overflow, gone=self._gone)

    def _read(self) -> tuple[set[str], bool]:
        try:
            data = os.read(self._fd, READ_SIZE)
        except BlockingIOError:
            return set(), False
        names: set[str] = set()
        overflow = False
        offset = 0
        while offset + _HEADER.size <= len(data):
            _wd, mask, _cookie, length = _HEADER.unpack_from(data, offset)
            offset += _HEADER.size
            raw = data[offset : offset + length].split(b"\0", 1)[0]
            offset += length
            if mask & IN_Q_OVERFLOW:
                overflow = True
            if mask & GONE_MASK:
                self._gone = True
            if raw:
                names.add(os.fsdecode(raw))
        return names, overflow

    def stop(self) -> None:
        """Wake :meth:`wait` (from any thread, or the event loop): it returns None."""
        # a full pipe holds earlier wake-ups: wait returns anyway
        with contextlib.suppress(BlockingIOError):
            os.write(self._wake_write, b"\0")

    def close(self) -> None:
        """Release the descriptors (after the waiting thread has returned)."""
        for fd in (self._fd, self._wake_read, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                LOGGER.debug("closing descriptor %d failed", fd, exc_info=True)


def open_directory_events(directory: Path) -> DirectoryEvents | None:
    """inotify on ``directory``, or None where the system cannot give it (not Linux, no libc
    entry points, the user's inotify instances or watches used up): the caller then uses
    ``watchfiles``, which polls. The reason is logged at debug level (warning for the
    limits, which an operator can raise)."""
    libc_name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        init1 = libc.inotify_init1
        add_watch = libc.inotify_add_watch
    except (OSError, AttributeError) as exc:
        LOGGER.debug("no inotify (%s): agents_dir is watched by watchfiles", exc)
        return None
    init1.argtypes = [ctypes.c_int]
    init1.restype = ctypes.c_int
    add_watch.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_uint32]
    add_watch.restype = ctypes.c_int
    fd = init1(IN_NONBLOCK | IN_CLOEXEC)
    if fd < 0:
        _log_failure("inotify_init1", ctypes.get_errno())
        return None
    if add_watch(fd, os.fsencode(directory), WATCH_MASK) < 0:
        code = ctypes.get_errno()
        os.close(fd)
        _log_failure(f"inotify_add_watch({directory})", code)
        return None
    try:
        return DirectoryEvents(directory, fd)
    except OSError as exc:  # no descriptor left for the wake-up pipe
        os.close(fd)
        LOGGER.warning("no wake-up pipe for inotify (%s): agents_dir is watched by watchfiles", exc)
        return None


def _log_failure(call: str, code: int) -> None:
    if code in (errno.EMFILE, errno.ENOSPC):
        LOGGER.warning(
            "%s failed (%s): agents_dir is watched by watchfiles instead, which wakes four "
            "times a second; raise fs.inotify.max_user_instances / max_user_watches (sysctl)",
            call,
            os.strerror(code),
        )
    else:
        LOGGER.debug("%s failed (%s): agents_dir is watched by watchfiles", call, os.strerror(code))
