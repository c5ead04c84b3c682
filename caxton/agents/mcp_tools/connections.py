"""MCP sessions of config agent versions: started when a version loads, closed when it stops.

:class:`McpClients` is the component (a nursery in the agents nursery). Loading a config agent
with ``[[mcp_servers]]`` opens one :class:`McpConnections` for that version: a task in the
component's nursery that starts every server of the file (stdio: a child process in its own
session, owned by the task; streamable HTTP: an httpx client), initializes an MCP session with
each, lists their tools and reports back. The version's :meth:`McpConnections.aclose` closes
the sessions: stdin of a stdio server is closed, the process gets two seconds to exit, then
SIGTERM, then SIGKILL. The process is the task's child, so cancelling the task (a version
killed mid-call, a server shutdown) ends the process too; nothing outlives its version. A
blue-green reload loads the new version (its own processes) before the old one drains.

A server that cannot start, dies, hangs or answers garbage never fails the agent: its state
(``starting``, ``ready``, ``restarting``, ``failed``, ``stopped``) and error show in the
agent's view, and each call of one of its tools returns an error the model reads. A stdio
server that exits is started again by the same task, with backoff and within
``max_restarts`` (:mod:`caxton.agents.mcp_tools.restarts`).

The stdio transport is Caxton's own (:mod:`caxton.agents.mcp_tools.stdio`); streamable HTTP
is the SDK's client over an httpx client carrying the server's ``headers``, whose transport
bounds the replies (:mod:`caxton.agents.mcp_tools.replies`). Every ``tools/call`` carries the
hop count and the calling span's trace context in ``_meta``
(:mod:`caxton.agents.mcp_tools.meta`).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import json
import logging
import math
import os
import time
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
import httpx
import trio
from mcp import ClientSession, types
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import McpError
from prometheus_client import Counter, Histogram

from caxton import __version__
from caxton.agents.mcp_tools.meta import outgoing_meta
from caxton.agents.mcp_tools.names import offered_name
from caxton.agents.mcp_tools.replies import REPLY_TOO_LARGE, BoundedReplies
from caxton.agents.mcp_tools.restarts import WINDOW_S, RestartBudget
from caxton.agents.mcp_tools.stdio import EXIT_GRACE_S, open_stdio
from caxton.agents.tools import Tool, ToolCallContext, ToolFailed
from caxton.errors import CaxtonError, ServiceUnavailable
from caxton.llm.redact import redact_text
from caxton.llm.settings import expand_env
from caxton.llm.types import ToolSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Mapping

    from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
    from mcp.shared.message import SessionMessage

    from caxton.agents.mcp_tools.spec import McpServerSpec
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.agents.mcp")

#: Most tools taken from one server, pages of ``tools/list`` read, and the size of a tool's
#: description and input schema offered to the model.
MAX_TOOLS: Final = 128
MAX_PAGES: Final = 16
MAX_DESCRIPTION: Final = 1024
MAX_SCHEMA_BYTES: Final = 16 * 1024
#: Environment a stdio server gets besides its ``env`` table (as the SDK's default).
INHERITED_ENV: Final = ("HOME", "LOGNAME", "PATH", "SHELL", "TERM", "USER", "LANG", "TMPDIR")


class ServerState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    #: a stdio server that exited, waiting for its backoff or starting again
    RESTARTING = "restarting"
    FAILED = "failed"
    STOPPED = "stopped"


@attrs.frozen(kw_only=True)
class McpTool(Tool):
    """A tool of an MCP server: its input schema is the server's, passed through."""

    input_schema: str

    def spec(self) -> ToolSpec:
        return ToolSpec(
            name=self.function_name, description=self.description, parameters_json=self.input_schema
        )

    def check(self, arguments: dict[str, Any]) -> dict[str, Any]:
        """Arguments go to the server as they are (it validates them against its schema)."""
        if not isinstance(arguments, dict):
            raise ToolFailed(f"{self.name}: arguments must be a JSON object")
        return arguments


class McpConnection:
    """One MCP server of one agent version: its state, tools and session."""

    def __init__(
        self,
        spec: McpServerSpec,
        agent: str,
        metrics: McpClientMetrics,
        log: Callable[[str, str], None] = lambda level, text: None,
    ) -> None:
        self.spec = spec
        self.agent = agent
        self.metrics = metrics
        self.log = log
        self.state = ServerState.STARTING
        self.error: str | None = None
        self.pid: int | None = None
        self.tools: list[types.Tool] = []
        self.session: ClientSession | None = None
        self.stop_requested = trio.Event()
        #: set when the session broke (the process exited, the connection closed)
        self.broken = trio.Event()
        self.restarts = RestartBudget(max_restarts=spec.max_restarts)
        self._changed = trio.Event()
        self.stderr_tail: Callable[[], str] = str
        self.changed_at = time.time()

    def set_state(self, state: ServerState, error: str | None = None) -> None:
        self.state = state
        self.error = error
        self.changed_at = time.time()
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        """Wait for the next change of state."""
        await self._changed.wait()

    def fail(self, error: str, *, overwrite: bool = False) -> None:
        """Record a failure (and log it); the first one stays unless ``overwrite`` (a known
        exit code is more telling than the closed connection that came first)."""
        if self.state is ServerState.STOPPED or (
            self.state is ServerState.FAILED and not overwrite
        ):
            return
        tail = self.stderr_tail().strip()
        self.set_state(ServerState.FAILED, f"{error}; stderr: {tail}" if tail else error)
        self.broken.set()
        self.log("error", f"MCP server {self.spec.name!r}: {self.error}")

    def note(self, problem: str) -> None:
        """Record a problem that leaves the server usable (a reply cut off at its bound): the
        state stays, ``error`` says what happened last."""
        self.error = problem
        self.log("warn", f"MCP server {self.spec.name!r}: {problem}")

    def view(self, offered: Mapping[str, str]) -> dict[str, Any]:
        """The server as ``GET /api/v1/agents/{name}`` shows it (no env or header values)."""
        where = (
            {"command": self.spec.command, "pid": self.pid, "restarts": self.restarts.count}
            if self.spec.command is not None
            else {"url": redact_text(self.spec.url or "")}
        )
        return {
            "name": self.spec.name,
            "transport": self.spec.transport,
            **where,
            "state": self.state.value,
            "error": redact_text(self.error) if self.error else None,
            "tools": sorted(name for name, server in offered.items() if server == self.spec.name),
        }

    async def call(self, tool: str, arguments: dict[str, Any], ctx: ToolCallContext) -> str:
        """Call ``tool`` and return its result as text for the model.

        Raises:
            ToolFailed: the server is not ready, did not answer within the server's
                ``timeout`` (or what is left of the agent's), answered an error, or answered
                something that is not an MCP result.
        """
        where = f"MCP server {self.spec.name!r}"
        timeout_s = min(self.spec.timeout_s, ctx.spec.performance.request_timeout_s)
        deadline = trio.current_time() + timeout_s
        with trio.move_on_at(deadline):  # a server being restarted: its restart may come
            while self.state is ServerState.RESTARTING:
                await self.wait_changed()
        session = self.session
        if self.state is not ServerState.READY or session is None:
            raise ToolFailed(f"{where} is {self.state.value}: {self.error or 'not connected'}")
        started = time.perf_counter()
        outcome = "error"
        try:
            with trio.fail_at(deadline):
                # _meta: the hop count (the loop guard holds through Caxton's own /mcp) and
                # the calling span's trace context, which the session task does not have
                result = await session.call_tool(
                    tool, arguments, meta=outgoing_meta(ctx.message.hop + 1)
                )
            text = result_text(result)
            if result.isError:
                outcome = "tool_error"
                raise ToolFailed(f"{where}: tool {tool!r} failed: {text}")
            outcome = "ok"
            return text
        except trio.TooSlowError:
            outcome = "timeout"
            raise ToolFailed(
                f"{where}: tool {tool!r} did not answer within {timeout_s:g}s (the server's "
                "timeout in [[mcp_servers]], capped by the agent's request_timeout)"
            ) from None
        except McpError as exc:
            if exc.error.code == types.CONNECTION_CLOSED:
                self.fail("the connection closed")
            elif exc.error.code == REPLY_TOO_LARGE:
                outcome = "too_large"
            raise ToolFailed(f"{where}: tool {tool!r}: {exc.error.message}") from None
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.fail("the connection is gone")
            raise ToolFailed(f"{where} is gone: {self.error}") from None
        except CaxtonError:
            raise
        except Exception as exc:
            raise ToolFailed(
                f"{where}: tool {tool!r} answered something that is not a valid MCP result "
                f"({type(exc).__name__}: {str(exc)[:300]})"
            ) from None
        finally:
            labels = {"agent": self.agent, "server": self.spec.name}
            self.metrics.calls.labels(**labels, outcome=outcome).inc()
            self.metrics.duration.labels(**labels).observe(time.perf_counter() - started)


def result_text(result: types.CallToolResult) -> str:
    """A tool result as text: its text parts, then structured content, then what else came."""
    parts: list[str] = []
    for item in result.content:
        if isinstance(item, types.TextContent):
            parts.append(item.text)
        elif isinstance(item, types.ImageContent | types.AudioContent):
            parts.append(f"[{item.type}: {item.mimeType}, {len(item.data)} base64 characters]")
        elif isinstance(item, types.EmbeddedResource):
            resource = item.resource
            text = getattr(resource, "text", None)
            parts.append(text if isinstance(text, str) else f"[resource {resource.uri}]")
        elif isinstance(item, types.ResourceLink):
            parts.append(f"[resource link {item.uri}]")
    if not parts and result.structuredContent is not None:
        parts.append(json.dumps(result.structuredContent, ensure_ascii=False))
    return "\n".join(parts)


@attrs.frozen(kw_only=True)
class McpClientMetrics:
    """Calls of MCP tools by config agents (``protocol="mcp"``, issue #19 item 5)."""

    calls: Counter
    duration: Histogram
    restarts: Counter

    @classmethod
    def register(cls, metrics: Metrics) -> McpClientMetrics:
        return cls(
            calls=metrics.counter(
                "caxton_mcp_client_tool_calls",
                "MCP tool calls made by config agents, by agent, server and outcome "
                "(ok, tool_error, timeout, too_large, error).",
                ["agent", "server", "outcome"],
            ),
            duration=metrics.histogram(
                "caxton_mcp_client_tool_call_duration_seconds",
                "Time of MCP tool calls made by config agents.",
                ["agent", "server"],
            ),
            restarts=metrics.counter(
                "caxton_mcp_client_server_restarts",
                "Restarts of stdio MCP servers of config agents after they exited, by agent "
                "and server.",
                ["agent", "server"],
            ),
        )


class McpConnections:
    """The MCP servers of one agent version (see the module docstring)."""

    def __init__(
        self,
        agent: str,
        servers: tuple[McpServerSpec, ...],
        *,
        environ: Mapping[str, str],
        env_hint: str,
        metrics: McpClientMetrics,
        log: Callable[[str, str], None],
    ) -> None:
        self.agent = agent
        self.connections = [McpConnection(spec, agent, metrics, log) for spec in servers]
        self.environ = environ
        self.env_hint = env_hint
        self.log = log
        self.offered: dict[str, str] = {}  # offered tool name -> server name
        self._stop = trio.Event()
        self._done = trio.Event()
        self._scope: trio.CancelScope | None = None

    # -- lifetime ------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Start every server at once (each reports ready or failed within its
        ``startup_timeout``), report started, serve until :meth:`aclose`, then close every
        session.

        Cancellation:
            While starting, cancelling (the registry's load timeout) stops the start. Once
            started the task is shielded: the sessions close through :meth:`aclose`
            (gracefully, then by cancelling this task's own scope), so that a stdio server
            gets its stdin closed before it is terminated even when the whole server shuts
            down.
        """
        try:
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    async with trio.open_nursery() as starting:
                        for connection in self.connections:
                            starting.start_soon(nursery.start, self._serve, connection)
                    scope.shield = True
                    task_status.started()
                    await self._stop.wait()
                    for connection in self.connections:
                        connection.stop_requested.set()
        finally:
            for connection in self.connections:
                connection.set_state(ServerState.STOPPED, connection.error)
            self._done.set()

    async def aclose(self) -> None:
        """Close every session (bounded); idempotent.

        Cancellation:
            When cancelled (or after ``2 * EXIT_GRACE_S + 1`` seconds) the sessions' task is
            cancelled, which kills the processes that are still running.
        """
        self._stop.set()
        with trio.move_on_after(2 * EXIT_GRACE_S + 1):
            await self._done.wait()
        if not self._done.is_set() and self._scope is not None:
            self._scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(EXIT_GRACE_S + 1):
                await self._done.wait()

    async def _serve(
        self, connection: McpConnection, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """Run the server's session; report started once the first start is ready or failed.

        A stdio server whose session broke (it exited or crashed) after its first start was
        ready is started again in this task (so its process still belongs to the version),
        after the backoff of :class:`~caxton.agents.mcp_tools.restarts.RestartBudget`, until
        ``max_restarts`` is spent; then it stays failed until the agent reloads. One that
        failed its first start stays failed: its tools were never listed.
        """
        spec = connection.spec
        reported = False

        def report() -> None:
            nonlocal reported
            if not reported:
                reported = True
                task_status.started()

        try:
            while True:
                restartable = await self._session(connection, report)
                # a server that never got ready offers no tools (they are listed once, when
                # the version loads): only a reload can use it
                restartable = restartable and reported
                report()
                if connection.stop_requested.is_set() or spec.command is None or not restartable:
                    return
                now = trio.current_time()
                delay = connection.restarts.delay(now)
                if delay is None:
                    if spec.max_restarts:
                        connection.set_state(
                            ServerState.FAILED,
                            f"{connection.error}; restarted {spec.max_restarts} times within "
                            f"{WINDOW_S / 60:g} minutes (max_restarts), so it stays failed until "
                            "the agent reloads",
                        )
                    return
                connection.set_state(ServerState.RESTARTING, connection.error)
                self.log(
                    "warn",
                    f"MCP server {spec.name!r}: restarting in {delay:g}s (restart "
                    f"{connection.restarts.recent(now) + 1} of {spec.max_restarts} within "
                    f"{WINDOW_S / 60:g} minutes)",
                )
                with trio.move_on_after(delay):
                    await connection.stop_requested.wait()
                if connection.stop_requested.is_set():
                    return
                connection.restarts = connection.restarts.restarted(trio.current_time())
                connection.metrics.restarts.labels(agent=self.agent, server=spec.name).inc()
        finally:
            report()

    async def _session(self, connection: McpConnection, report: Callable[[], None]) -> bool:
        """One session with the server: start it, serve until stopped or broken, close it.

        Returns:
            Whether a restart may help: the session broke or failed to start, not for a
            problem of the file (a missing variable or command) or a start that hung.
        """
        spec = connection.spec
        connection.broken = trio.Event()
        restartable = True
        try:
            with trio.CancelScope(deadline=trio.current_time() + spec.startup_timeout_s) as start:
                async with self._transport(connection) as (read, write):
                    session = ClientSession(
                        read,
                        write,
                        client_info=types.Implementation(name="caxton", version=__version__),
                        message_handler=functools.partial(self._incoming, connection),
                    )
                    async with session:
                        await session.initialize()
                        connection.tools = await _list_tools(session, spec.allowed_tools)
                        connection.session = session
                        connection.set_state(ServerState.READY)
                        start.deadline = math.inf
                        self.log(
                            "info",
                            f"MCP server {spec.name!r} ({spec.transport}) ready with "
                            f"{len(connection.tools)} tools",
                        )
                        report()
                        await _either(connection.stop_requested, connection.broken)
            if start.cancelled_caught:
                restartable = False
                connection.fail(
                    f"did not start and list its tools within {spec.startup_timeout_s:g}s "
                    "(startup_timeout in [[mcp_servers]])"
                )
        except Exception as exc:
            restartable = not isinstance(
                _innermost(exc), _StartFailed | FileNotFoundError | PermissionError
            )
            connection.fail(_describe(exc))
        finally:
            connection.session = None
            connection.pid = None  # the process is gone (or was never started)
        return restartable

    async def _incoming(self, connection: McpConnection, message: object) -> None:
        if isinstance(message, Exception):
            self.log(
                "warn",
                f"MCP server {connection.spec.name!r} sent something that is not JSON-RPC: "
                f"{str(message)[:200]}",
            )

    @contextlib.asynccontextmanager
    async def _transport(
        self, connection: McpConnection
    ) -> AsyncIterator[
        tuple[
            MemoryObjectReceiveStream[SessionMessage | Exception],
            MemoryObjectSendStream[SessionMessage],
        ]
    ]:
        spec = connection.spec
        if spec.command is not None:
            env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
            env.update({k: self._expand(spec.name, f"env.{k}", v) for k, v in spec.env.items()})
            async with open_stdio(spec.command, spec.args, env, connection) as streams:
                yield streams
            return
        headers = {k: self._expand(spec.name, f"headers.{k}", v) for k, v in spec.headers.items()}
        timeout = httpx.Timeout(spec.timeout_s, read=max(spec.timeout_s, 60.0))
        # replies are read through bounds (max_response_size): the SDK reads them whole
        transport = BoundedReplies(spec.max_response_bytes, connection.note)
        async with (
            httpx.AsyncClient(
                headers=headers, timeout=timeout, follow_redirects=False, transport=transport
            ) as http,
            streamable_http_client(spec.url or "", http_client=http) as (read, write, _),
        ):
            yield read, write

    def _expand(self, server: str, key: str, value: str) -> str:
        try:
            return expand_env(value, self.environ)
        except KeyError as exc:
            problem = str(exc.args[0])
            hint = self.env_hint or "export it before starting caxton (or write the value)"
            raise _StartFailed(f"{key}: {problem}; {hint}") from None

    # -- what the agent sees ---------------------------------------------------------------

    def tools(self, taken: set[str]) -> dict[str, Tool]:
        """The ready servers' tools by offered name (names in ``taken`` are avoided)."""
        chosen: dict[str, Tool] = {}
        for connection in self.connections:
            for tool in connection.tools:
                name = offered_name(connection.spec.name, tool.name, taken | set(chosen))
                chosen[name] = McpTool(
                    name=name,
                    description=_description(connection.spec.name, tool),
                    params=(),
                    run=functools.partial(_call, connection, tool.name),
                    input_schema=_schema(tool),
                )
                self.offered[name] = connection.spec.name
        return chosen

    def view(self) -> list[dict[str, Any]]:
        return [connection.view(self.offered) for connection in self.connections]


async def _call(
    connection: McpConnection, tool: str, arguments: dict[str, Any], ctx: ToolCallContext
) -> str:
    return await connection.call(tool, arguments, ctx)


class _StartFailed(CaxtonError):
    code = "MCP_SERVER_FAILED"
    http_status = 502


async def _either(first: trio.Event, second: trio.Event) -> None:
    """Wait until one of two events is set."""
    async with trio.open_nursery() as nursery:
        for event in (first, second):

            async def wait(event: trio.Event = event) -> None:
                await event.wait()
                nursery.cancel_scope.cancel()

            nursery.start_soon(wait)


def _innermost(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    """One line for an exception from starting or running a session (groups unwrapped)."""
    exc = _innermost(exc)
    if isinstance(exc, CaxtonError):
        return exc.message
    if isinstance(exc, McpError):
        return f"the server answered an error: {exc.error.message}"
    if isinstance(exc, FileNotFoundError | PermissionError):
        return f"cannot start the command: {exc}"
    if isinstance(exc, httpx.HTTPError):
        return f"HTTP error: {exc}"
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _description(server: str, tool: types.Tool) -> str:
    text = (tool.description or tool.title or tool.name).strip()
    if len(text) > MAX_DESCRIPTION:
        text = text[:MAX_DESCRIPTION] + "…"
    return f"{text} (tool {tool.name!r} of the MCP server {server!r})"


def _schema(tool: types.Tool) -> str:
    schema = tool.inputSchema if isinstance(tool.inputSchema, dict) else {}
    text = json.dumps(schema, ensure_ascii=False)
    if schema.get("type") != "object" or len(text.encode()) > MAX_SCHEMA_BYTES:
        return json.dumps({"type": "object"})
    return text


async def _list_tools(session: ClientSession, allowed: tuple[str, ...] | None) -> list[types.Tool]:
    """Every tool the server lists (bounded), filtered by the allow-list."""
    tools: list[types.Tool] = []
    cursor: str | None = None
    for _ in range(MAX_PAGES):
        params = types.PaginatedRequestParams(cursor=cursor) if cursor else None
        page = await session.list_tools(params=params)
        tools.extend(page.tools)
        cursor = page.nextCursor
        if not cursor or len(tools) >= MAX_TOOLS * 4:
            break
    if allowed is not None:
        tools = [tool for tool in tools if tool.name in allowed]
    return tools[:MAX_TOOLS]


# -- the component -----------------------------------------------------------------------------


class McpClients:
    """Owns the tasks of every agent version's MCP sessions (see the module docstring)."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = McpClientMetrics.register(metrics)
        self._nursery: trio.Nursery | None = None
        self._open: set[McpConnections] = set()

    async def run(
        self, *, task_status: trio.TaskStatus[McpClients] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Hold the sessions' nursery until cancelled, then close every session still open
        (bounded: see :meth:`McpConnections.aclose`)."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                task_status.started(self)
                await trio.sleep_forever()
            finally:
                self._nursery = None
                with trio.CancelScope(shield=True):
                    async with trio.open_nursery() as closing:
                        for connections in list(self._open):
                            closing.start_soon(connections.aclose)

    async def open(
        self,
        agent: str,
        servers: tuple[McpServerSpec, ...],
        *,
        environ: Mapping[str, str],
        env_hint: str,
        log: Callable[[str, str], None],
    ) -> McpConnections:
        """Start the servers of one version; return once each is ready or failed.

        Raises:
            ServiceUnavailable: the component is not running.
        """
        connections = McpConnections(
            agent, servers, environ=environ, env_hint=env_hint, metrics=self.metrics, log=log
        )
        if self._nursery is None:
            raise ServiceUnavailable("the MCP client component is not running")
        await self._nursery.start(self._own, connections)
        return connections

    async def _own(
        self, connections: McpConnections, *, task_status: trio.TaskStatus[None]
    ) -> None:
        self._open.add(connections)
        try:
            await connections.run(task_status=task_status)
        finally:
            self._open.discard(connections)
