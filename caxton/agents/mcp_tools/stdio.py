"""The stdio transport of MCP client sessions: a server process owned by the calling task.

The SDK's own stdio client hands back no process handle; this one does what
:mod:`caxton.agents.mcp_tools.connections` needs: the process id for the agent's view, the exit
noticed at once (and reported with its code and the last lines of stderr), stdout read a bounded
line at a time (:data:`MAX_LINE_BYTES`), and the spec's shutdown sequence: stdin closed, then
SIGTERM, then SIGKILL. The process is started with :func:`trio.run_process` in the caller's
nursery, so it never outlives the task that owns it.
"""

from __future__ import annotations

import contextlib
import functools
import subprocess
from typing import TYPE_CHECKING, Final, Protocol

import anyio
import trio
from mcp import types
from mcp.shared.message import SessionMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

#: Longest line a stdio server may write (one JSON-RPC message); a longer one ends the session.
MAX_LINE_BYTES: Final = 4 * 1024 * 1024
#: How long a stdio server may take to exit once its stdin is closed, and once terminated.
EXIT_GRACE_S: Final = 2.0
#: Bytes of a stdio server's stderr kept, and its last lines quoted when it fails.
STDERR_TAIL: Final = 2048
STDERR_LINES: Final = 3
#: How long the exit of a stdio server waits for the rest of its stderr (a child it left
#: behind may hold the pipe open).
STDERR_WAIT_S: Final = 0.5


class ProcessOwner(Protocol):
    """What the transport reports to (an MCP connection): the pid, stderr, and failures."""

    pid: int | None
    stderr_tail: Callable[[], str]
    stop_requested: trio.Event

    def fail(self, error: str, *, overwrite: bool = False) -> None: ...


@contextlib.asynccontextmanager
async def open_stdio(
    command: str, args: tuple[str, ...], env: dict[str, str], connection: ProcessOwner
) -> AsyncIterator[
    tuple[
        MemoryObjectReceiveStream[SessionMessage | Exception],
        MemoryObjectSendStream[SessionMessage],
    ]
]:
    """Start ``command`` as a child of this task and carry JSON-RPC lines over its stdio.

    Resource handling:
        On exit stdin is closed and the process gets :data:`EXIT_GRACE_S` to exit, then it is
        terminated (SIGTERM, then SIGKILL after :data:`EXIT_GRACE_S`); cancelled, the same
        happens without the first wait.
    """
    stderr = _StderrTail()
    connection.stderr_tail = stderr.text
    async with trio.open_nursery() as nursery:
        process: trio.Process = await nursery.start(
            functools.partial(
                trio.run_process,
                [command, *args],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                check=False,
                start_new_session=True,
                deliver_cancel=_terminate,
            )
        )
        connection.pid = process.pid
        read_writer, read_stream = anyio.create_memory_object_stream[SessionMessage | Exception](0)
        write_stream, write_reader = anyio.create_memory_object_stream[SessionMessage](0)
        assert process.stdin is not None
        assert process.stdout is not None
        assert process.stderr is not None
        nursery.start_soon(_read_lines, process.stdout, read_writer, connection)
        nursery.start_soon(_write_lines, process.stdin, write_reader)
        nursery.start_soon(stderr.collect, process.stderr)
        exit_recorded = trio.Event()
        nursery.start_soon(_watch_exit, process, connection, stderr, exit_recorded)
        try:
            yield read_stream, write_stream
        finally:
            with trio.CancelScope(shield=True):
                with contextlib.suppress(trio.ClosedResourceError, trio.BrokenResourceError):
                    await process.stdin.aclose()
                with trio.move_on_after(EXIT_GRACE_S):
                    await process.wait()
                if process.returncode is not None:
                    # A crash closes the connection first; its exit code, which says more, is
                    # recorded before the watcher is cancelled with the rest.
                    with trio.move_on_after(STDERR_WAIT_S + 1.0):
                        await exit_recorded.wait()
            nursery.cancel_scope.cancel()
            await read_stream.aclose()
            await write_stream.aclose()


async def _terminate(process: trio.Process) -> None:
    """``deliver_cancel`` of a stdio server: SIGTERM, then SIGKILL after a grace period."""
    with contextlib.suppress(ProcessLookupError):
        process.terminate()
    with trio.move_on_after(EXIT_GRACE_S):
        await process.wait()
    with contextlib.suppress(ProcessLookupError):
        process.kill()


async def _watch_exit(
    process: trio.Process, connection: ProcessOwner, stderr: _StderrTail, recorded: trio.Event
) -> None:
    code = await process.wait()
    with trio.move_on_after(STDERR_WAIT_S):  # its last words, which explain the exit
        await stderr.closed.wait()
    if not connection.stop_requested.is_set():
        connection.fail(f"the process exited with code {code}", overwrite=True)
    recorded.set()


async def _read_lines(
    stdout: trio.abc.ReceiveStream,
    writer: MemoryObjectSendStream[SessionMessage | Exception],
    connection: ProcessOwner,
) -> None:
    buffer = bytearray()
    with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError):
        async with writer:
            async for chunk in stdout:
                buffer += chunk
                while (end := buffer.find(b"\n")) >= 0:
                    line = bytes(buffer[:end])
                    del buffer[: end + 1]
                    if not line.strip():
                        continue
                    try:
                        message = types.JSONRPCMessage.model_validate_json(line)
                    except ValueError as exc:
                        await writer.send(exc)
                        continue
                    await writer.send(SessionMessage(message))
                if len(buffer) > MAX_LINE_BYTES:
                    connection.fail(f"it wrote a line longer than {MAX_LINE_BYTES} bytes")
                    return


async def _write_lines(
    stdin: trio.abc.SendStream, reader: MemoryObjectReceiveStream[SessionMessage]
) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        async with reader:
            async for message in reader:
                data = message.message.model_dump_json(by_alias=True, exclude_none=True)
                await stdin.send_all(data.encode() + b"\n")


class _StderrTail:
    """The end of what a stdio server wrote to stderr (last :data:`STDERR_TAIL` bytes)."""

    def __init__(self) -> None:
        self._tail = b""
        self.closed = trio.Event()

    async def collect(self, stderr: trio.abc.ReceiveStream) -> None:
        try:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                async for chunk in stderr:
                    self._tail = (self._tail + chunk)[-STDERR_TAIL:]
        finally:
            self.closed.set()

    def text(self) -> str:
        """The last :data:`STDERR_LINES` lines (at most 400 characters)."""
        lines = self._tail.decode("utf-8", errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in lines[-STDERR_LINES:])[-400:]
