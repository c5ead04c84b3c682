"""Remote A2A agents (``a2a.remote_agents``) as providers in the router.

Each remote agent is reached with the ``a2a-sdk`` client (its httpx-based JSON-RPC transport,
which runs under trio through anyio): its card is fetched at start and every
``a2a.card_refresh``, its skill ids (plus the configured ``capabilities``) join the router's
capability table, and a message the router delivers to it becomes an A2A SendMessage (or
SendStreamingMessage when both sides stream: the chunks reach the caller as they come).

A remote agent is not trusted: each has its own HTTP client whose transport refuses any
request to another origin than its ``card_url``'s (the credentials ride on that client only,
and redirects are not followed), reads at most ``a2a.max_response_size`` bytes of any answer,
and every call is bounded by the agent's ``timeout``. With tracing on, each call is an
``invoke_agent {name}`` client span (a child of the sender's) and its requests carry that
span's ``traceparent``, so the remote Caxton continues the trace. Its reply is held to
``messaging.max_message_size`` like any agent's. A remote that is down, slow or answers
garbage is a ``failure`` reply for that message, and its state (``GET
/api/v1/a2a/remote-agents``, the capability's providers) says why.
"""

from __future__ import annotations

import collections
import logging
import time
from typing import TYPE_CHECKING, Any

import attrs
import httpx
import trio
from a2a.types import a2a_pb2
from a2a.utils.errors import A2AError
from google.protobuf import json_format

from caxton.a2a.tasks import CANCELED, COMPLETED, FAILED, REJECTED
from caxton.a2a.transport import GuardedTransport, origin_of
from caxton.a2a.wire import HOP_KEY, PROTOCOL_VERSION, VERSION_HEADER, text_of_parts
from caxton.config.model import RemoteA2AAgentConfig
from caxton.errors import CaxtonError, ServiceUnavailable
from caxton.messages import new_id
from caxton.messaging.envelope import content_size
from caxton.messaging.errors import DeliveryTimeout
from caxton.tracing import context_from, inject, span

if TYPE_CHECKING:
    from a2a.client import Client  # noqa: TC004 - attrs leaves the annotation a string
    from a2a.client.errors import A2AClientError

    from caxton.config.model import A2AConfig
    from caxton.messages import ChunkSender, Message
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.a2a.remote")

#: Conversations whose remote ``contextId`` is remembered, per remote agent.
CONTEXTS_REMEMBERED = 10_000
#: How long the server's start waits for the first reading of the cards (a remote that is
#: slower comes in later: it is ``loading`` meanwhile).
STARTUP_WAIT_S = 5.0
#: How soon a remote whose card could not be read is tried again.
RETRY_S = 10.0
#: How often a task the remote left unfinished is polled (GetTask) until its timeout.
POLL_INTERVAL_S = 0.25


class RemoteAgentUnavailable(ServiceUnavailable):
    """The remote agent's card could not be read (down, refused, not A2A 1.0)."""

    code = "REMOTE_AGENT_UNAVAILABLE"


class RemoteAgentFailed(CaxtonError):
    """The remote agent answered with a failure, or with something that is not an answer."""

    code = "REMOTE_AGENT_FAILED"
    http_status = 502


def choose_interface(card: a2a_pb2.AgentCard, card_url: str) -> a2a_pb2.AgentInterface:
    """The card's JSON-RPC A2A 1.x interface on the card's own origin.

    Raises:
        RemoteAgentUnavailable: there is none (naming what the card offers instead).
    """
    offered = []
    for interface in card.supported_interfaces:
        version = interface.protocol_version or "1.0"
        offered.append(f"{interface.protocol_binding} {version} at {interface.url}")
        if interface.protocol_binding != "JSONRPC" or not version.startswith("1"):
            continue
        if origin_of(interface.url) != origin_of(card_url):
            continue
        return interface
    raise RemoteAgentUnavailable(
        f"the card at {card_url} offers no JSON-RPC A2A 1.x interface on its own origin "
        f"(it offers: {'; '.join(offered) or 'nothing'}); Caxton sends messages and "
        "credentials only to the card's origin",
        details={"card_url": card_url, "offered": offered},
    )


@attrs.define(eq=False)
class RemoteAgent:
    """One remote agent: its settings, HTTP client, last card, and state."""

    settings: RemoteA2AAgentConfig
    http: httpx.AsyncClient
    status: str = "loading"
    error: str | None = None
    card: a2a_pb2.AgentCard | None = None
    client: Client | None = None
    skills: tuple[str, ...] = ()
    streaming: bool = False
    checked_at: float | None = None
    in_flight: int = 0
    contexts: collections.OrderedDict[str, str] = attrs.field(factory=collections.OrderedDict)

    @property
    def capabilities(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.skills, *self.settings.capabilities)))

    def view(self) -> dict[str, Any]:
        card = self.card
        return {
            "name": self.settings.name,
            "card_url": self.settings.card_url,
            "status": self.status,
            "error": self.error,
            "remote_name": card.name if card is not None else None,
            "version": card.version if card is not None else None,
            "capabilities": list(self.capabilities),
            "streaming": self.streaming,
            "in_flight": self.in_flight,
            "checked_at": self.checked_at,
        }

    def remember_context(self, conversation_id: str, context_id: str) -> None:
        self.contexts[conversation_id] = context_id
        self.contexts.move_to_end(conversation_id)
        while len(self.contexts) > CONTEXTS_REMEMBERED:
            self.contexts.popitem(last=False)


class RemoteAgents:
    """The component holding the remote A2A agents (``a2a.remote_agents``).

    Args:
        settings: the ``a2a`` section.
        metrics: ``caxton_a2a_remote_calls_total{agent,outcome}``.
        max_message_size: ``messaging.max_message_size`` (the largest reply taken).
    """

    def __init__(self, settings: A2AConfig, metrics: Metrics, *, max_message_size: int) -> None:
        self.settings = settings
        self.max_message_size = max_message_size
        self._agents: dict[str, RemoteAgent] = {}
        #: changes whenever a remote's state or capabilities change (the router caches by it)
        self.state: object = object()
        self._calls = metrics.counter(
            "caxton_a2a_remote_calls",
            "Messages delivered to remote A2A agents, by agent and outcome.",
            ["agent", "outcome"],
        )

    # -- component -----------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[RemoteAgents] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Read every card (waiting at most :data:`STARTUP_WAIT_S` for them), report started,
        then read them again every ``a2a.card_refresh``; a remote that is down does not hold
        the start-up.

        Resource handling:
            Each remote's HTTP client is closed when the component stops.
        """
        try:
            for remote in self.settings.remote_agents:
                origin = origin_of(remote.card_url)
                headers = {VERSION_HEADER: PROTOCOL_VERSION}
                if remote.api_key:
                    headers["X-API-Key"] = remote.api_key
                if remote.bearer_token:
                    headers["Authorization"] = f"Bearer {remote.bearer_token}"
                http = httpx.AsyncClient(
                    transport=GuardedTransport(origin, self.settings.max_response_size),
                    headers=headers,
                    timeout=httpx.Timeout(remote.timeout),
                    follow_redirects=False,
                    event_hooks={"request": [_send_traceparent]},
                )
                self._agents[remote.name] = RemoteAgent(settings=remote, http=http)
            async with trio.open_nursery() as nursery:
                first_reads = []
                for agent in self._agents.values():
                    read = trio.Event()
                    first_reads.append(read)
                    nursery.start_soon(self._keep_fresh, agent, read)
                with trio.move_on_after(STARTUP_WAIT_S):
                    for read in first_reads:
                        await read.wait()
                task_status.started(self)
                await trio.sleep_forever()  # (with no remote agents, nothing else holds it)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                for agent in self._agents.values():
                    await agent.http.aclose()

    async def _keep_fresh(self, agent: RemoteAgent, first_read: trio.Event) -> None:
        """Read the card now and every ``a2a.card_refresh`` (a remote without a good card
        is retried sooner)."""
        while True:
            await self.refresh(agent)
            first_read.set()
            interval: float = self.settings.card_refresh
            if agent.card is None:
                interval = min(interval, RETRY_S)
            await trio.sleep(interval)

    async def refresh(self, agent: RemoteAgent) -> None:
        """Read ``agent``'s card again; on failure keep the last good one, if any."""
        from a2a.client import ClientConfig, ClientFactory
        from a2a.client.card_resolver import parse_agent_card

        settings = agent.settings
        try:
            with trio.fail_after(settings.timeout):
                response = await agent.http.get(
                    settings.card_url, headers={"Accept": "application/json"}
                )
            if response.status_code != 200:
                raise RemoteAgentUnavailable(
                    f"the card at {settings.card_url} answered HTTP {response.status_code}"
                    + (
                        " (check api_key / bearer_token)"
                        if response.status_code in (401, 403)
                        else ""
                    )
                )
            try:
                card = parse_agent_card(response.json())
            except (ValueError, json_format.ParseError) as exc:
                raise RemoteAgentUnavailable(
                    f"the card at {settings.card_url} is not an A2A agent card: {exc}"
                ) from None
            interface = choose_interface(card, settings.card_url)
            chosen = a2a_pb2.AgentCard()
            chosen.CopyFrom(card)
            del chosen.supported_interfaces[:]
            chosen.supported_interfaces.append(interface)
            streaming = settings.streaming and card.capabilities.streaming
            factory = ClientFactory(
                ClientConfig(
                    httpx_client=agent.http,
                    streaming=streaming,
                    supported_protocol_bindings=["JSONRPC"],
                )
            )
            client = factory.create(chosen)
        except trio.TooSlowError:
            self._failed(
                agent, f"the card at {settings.card_url} did not come within {settings.timeout:g}s"
            )
            return
        except httpx.HTTPError as exc:
            self._failed(agent, f"cannot read the card at {settings.card_url}: {exc}")
            return
        except (CaxtonError, ValueError) as exc:
            self._failed(agent, exc.message if isinstance(exc, CaxtonError) else str(exc))
            return
        skills = tuple(s.id for s in card.skills if s.id)[:256]
        changed = (agent.status, agent.skills, agent.streaming) != ("running", skills, streaming)
        agent.card, agent.client, agent.streaming = chosen, client, streaming
        agent.skills, agent.status, agent.error = skills, "running", None
        agent.checked_at = time.time()
        if changed:
            LOGGER.info(
                "remote A2A agent %s (%s) ready: capabilities %s%s",
                settings.name,
                settings.card_url,
                ", ".join(agent.capabilities) or "none",
                ", streaming" if streaming else "",
            )
            self.state = object()

    def _failed(self, agent: RemoteAgent, error: str) -> None:
        agent.checked_at = time.time()
        if agent.error != error:
            LOGGER.warning("remote A2A agent %s: %s", agent.settings.name, error)
        agent.error = error
        if agent.card is None and agent.status != "failed":
            agent.status = "failed"
            self.state = object()

    # -- the directory side --------------------------------------------------------------------

    def has(self, name: str) -> bool:
        return name in self._agents

    def names(self) -> list[str]:
        return sorted(self._agents)

    def status_of(self, name: str) -> tuple[str, str | None]:
        agent = self._agents[name]
        return agent.status, agent.card.version if agent.card is not None else None

    def in_flight(self, name: str) -> int:
        return self._agents[name].in_flight

    def declared_capabilities(self) -> dict[str, tuple[str, ...]]:
        return {name: agent.capabilities for name, agent in self._agents.items()}

    def view(self) -> list[dict[str, Any]]:
        return [self._agents[name].view() for name in self.names()]

    # -- sending -------------------------------------------------------------------------------

    async def send(
        self, name: str, message: Message, stream: ChunkSender | None = None
    ) -> RemoteAnswer:
        """Deliver ``message`` to the remote agent ``name``; its reply (chunks to ``stream``
        as they come when both sides stream).

        Raises:
            RemoteAgentUnavailable: its card was never read.
            RemoteAgentFailed: the task failed there, or the answer was not one.
            DeliveryTimeout: no answer within the agent's ``timeout``.

        Cancellation:
            Cancelling closes the HTTP request (the remote sees the client go).
        """
        agent = self._agents[name]
        client = agent.client
        if client is None:
            raise RemoteAgentUnavailable(
                f"remote A2A agent {name!r} is not reachable: {agent.error or 'not read yet'}",
                details={"agent": name, "card_url": agent.settings.card_url},
            )
        outcome = "ok"
        agent.in_flight += 1
        try:
            with (
                span(
                    f"invoke_agent {name}",
                    {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": name},
                    kind="client",
                    parent=context_from(message.trace_context),
                ),
                trio.fail_after(agent.settings.timeout),
            ):
                content = await self._call(agent, client, message, stream)
            return RemoteAnswer(content=content)
        except trio.TooSlowError:
            outcome = "TIMEOUT"
            raise DeliveryTimeout(name, agent.settings.timeout) from None
        except CaxtonError as exc:
            outcome = exc.code
            raise
        finally:
            agent.in_flight -= 1
            self._calls.labels(agent=name, outcome=outcome).inc()

    async def _call(
        self,
        agent: RemoteAgent,
        client: Client,
        message: Message,
        stream: ChunkSender | None,
    ) -> str | dict[str, Any]:
        from a2a.client.errors import A2AClientError

        name = agent.settings.name
        outgoing = a2a_pb2.Message(message_id=new_id(), role=a2a_pb2.ROLE_USER)
        if isinstance(message.content, dict):
            outgoing.parts.add().data.struct_value.update(message.content)
        else:
            outgoing.parts.add(text=message.content)
        context_id = agent.contexts.get(message.conversation_id)
        if context_id:
            outgoing.context_id = context_id
        outgoing.metadata.update({HOP_KEY: message.hop})
        request = a2a_pb2.SendMessageRequest(message=outgoing)
        streamed: list[str] = []
        size = 0
        final: a2a_pb2.Task | a2a_pb2.Message | None = None
        try:
            async for event in client.send_message(request):
                kind = event.WhichOneof("payload")
                if kind == "message":
                    final = event.message
                elif kind == "task":
                    final = event.task
                elif kind == "status_update" and isinstance(final, a2a_pb2.Task):
                    final.status.CopyFrom(event.status_update.status)
                elif kind == "artifact_update":
                    update = event.artifact_update
                    if update.last_chunk and isinstance(final, a2a_pb2.Task):
                        del final.artifacts[:]
                        final.artifacts.append(update.artifact)
                        continue
                    text = text_of_parts(update.artifact.parts)
                    if isinstance(text, str) and text:
                        size += len(text.encode())
                        if size > self.max_message_size:
                            raise self._too_large(name, size)
                        streamed.append(text)
                        if stream is not None:
                            await stream.send(text)
        except A2AClientError as exc:
            raise client_failure(name, agent.settings.card_url, exc) from None
        except A2AError as exc:  # the remote's own JSON-RPC error
            raise RemoteAgentFailed(
                f"remote A2A agent {name!r} refused the message: {exc.message}",
                details={"agent": name, "error": type(exc).__name__},
            ) from None
        except (ValueError, json_format.ParseError) as exc:
            raise RemoteAgentFailed(
                f"remote A2A agent {name!r} answered something that is not A2A: {exc}",
                details={"agent": name},
            ) from None
        if isinstance(final, a2a_pb2.Task):
            final = await self._until_done(agent, client, final)
            if final.context_id:
                agent.remember_context(message.conversation_id, final.context_id)
            content = self._task_content(name, final, "".join(streamed))
        elif isinstance(final, a2a_pb2.Message):
            if final.context_id:
                agent.remember_context(message.conversation_id, final.context_id)
            content = text_of_parts(final.parts)
        else:
            raise RemoteAgentFailed(
                f"remote A2A agent {name!r} ended its answer without a task or a message",
                details={"agent": name},
            )
        if content_size(content) > self.max_message_size:
            raise self._too_large(name, content_size(content))
        return content

    async def _until_done(
        self, agent: RemoteAgent, client: Client, task: a2a_pb2.Task
    ) -> a2a_pb2.Task:
        """Poll a task the remote left submitted or working until it ends (bounded by the
        caller's timeout)."""
        from a2a.client.errors import A2AClientError

        state = a2a_pb2.TaskState.Name(task.status.state)
        while state in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING") and task.id:
            await trio.sleep(POLL_INTERVAL_S)
            try:
                task = await client.get_task(a2a_pb2.GetTaskRequest(id=task.id))
            except A2AClientError as exc:
                raise client_failure(agent.settings.name, agent.settings.card_url, exc) from None
            except A2AError as exc:
                raise RemoteAgentFailed(
                    f"remote A2A agent {agent.settings.name!r} lost task {task.id}: {exc}",
                    details={"agent": agent.settings.name},
                ) from None
            state = a2a_pb2.TaskState.Name(task.status.state)
        return task

    def _task_content(self, name: str, task: a2a_pb2.Task, streamed: str) -> str | dict[str, Any]:
        state = a2a_pb2.TaskState.Name(task.status.state)
        said = text_of_parts(task.status.message.parts) if task.status.HasField("message") else ""
        if state in (FAILED, CANCELED, REJECTED):
            text = said if isinstance(said, str) else str(said)
            raise RemoteAgentFailed(
                f"remote A2A agent {name!r} ended the task {state.removeprefix('TASK_STATE_')}"
                + (f": {text[:500]}" if text else ""),
                details={"agent": name, "task_id": task.id, "state": state},
            )
        if task.artifacts:
            parts = [p for artifact in task.artifacts for p in artifact.parts]
            return text_of_parts(parts)
        if streamed:
            return streamed
        if state == COMPLETED or said:
            return said
        return ""

    def _too_large(self, name: str, size: int) -> RemoteAgentFailed:
        return RemoteAgentFailed(
            f"remote A2A agent {name!r} answered {size} bytes, more than "
            f"messaging.max_message_size ({self.max_message_size} bytes)",
            details={"agent": name, "size": size, "max": self.max_message_size},
        )


async def _send_traceparent(request: httpx.Request) -> None:
    """The remote call continues the sender's trace (nothing is added with tracing off; the
    request goes only to the card's origin, as the transport holds it)."""
    carrier: dict[str, str] = {}
    inject(carrier)
    request.headers.update(carrier)


def client_failure(name: str, card_url: str, error: A2AClientError) -> RemoteAgentFailed:
    """What went wrong between Caxton and a remote agent, with what to check."""
    cause = error.__cause__
    details: dict[str, Any] = {"agent": name, "card_url": card_url}
    if isinstance(cause, httpx.HTTPStatusError):
        status = cause.response.status_code
        details["status"] = status
        hint = ""
        if status in (401, 403):
            hint = (
                f": check the api_key / bearer_token of {name} in a2a.remote_agents (Caxton "
                "sends them only to the card's origin)"
            )
        return RemoteAgentFailed(
            f"remote A2A agent {name!r} answered HTTP {status} at {cause.request.url}{hint}",
            details=details,
        )
    if isinstance(cause, httpx.HTTPError):
        return RemoteAgentFailed(
            f"remote A2A agent {name!r} could not be reached or stopped answering: {cause}",
            details=details,
        )
    return RemoteAgentFailed(
        f"remote A2A agent {name!r} answered something that is not A2A: {error.message}",
        details=details,
    )


@attrs.frozen
class RemoteAnswer:
    """A remote agent's reply, as the router reads an answer."""

    content: str | dict[str, Any]
