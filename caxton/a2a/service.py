"""The A2A component: runs each A2A message as a task, through the router's one message path.

A SendMessage becomes a Caxton ``request`` to the agent, admitted and delivered by
:class:`~caxton.messaging.router.Router` exactly like ``POST /api/v1/agents/{name}/messages``
(the same conversation rules, hop guard, size limit and metrics): ``contextId`` is the
conversation id, the reply is recorded in that conversation, and the task's artifact is the
reply. Tasks run in this component's nursery, so a client that goes away does not stop them;
CancelTask cancels the delivery through the task's cancel scope (a WASM guest stops within
its epoch tick, an LLM call is abandoned).
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio
from a2a.types import a2a_pb2
from google.protobuf import json_format

from caxton.a2a.tasks import (
    CANCELED,
    COMPLETED,
    FAILED,
    WORKING,
    A2ATask,
    TaskBook,
    offset_of,
    page_token,
    seconds_of,
)
from caxton.a2a.wire import (
    check_context_id,
    content_of,
    from_caxton_error,
    hop_of,
    internal_error,
    invalid_params,
    parts_of,
    push_not_supported,
    task_not_cancelable,
    unsupported_operation,
)
from caxton.components import Background
from caxton.errors import CaxtonError, ServiceUnavailable
from caxton.messages import new_id, open_chunk_stream
from caxton.messaging.envelope import parse_envelope

if TYPE_CHECKING:
    from caxton.messages import Message
    from caxton.messaging.router import ConversationRule, Router
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.a2a")

#: How long CancelTask waits for the canceled call to stop before it answers.
CANCEL_WAIT_S = 5.0
#: ListTasks page sizes (the A2A defaults).
DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100
#: Longest messageId kept.
MAX_ID_LENGTH = 128
#: The artifact every task's reply is written to.
REPLY_ARTIFACT = "reply"


@attrs.frozen(kw_only=True)
class Started:
    """A task that was admitted and is running, with the stream of its events when the
    caller asked for one (subscribed before the task started, so nothing is missed)."""

    task: A2ATask
    events: trio.MemoryReceiveChannel[dict[str, Any]] | None
    #: the task as it was when the stream was opened (the stream's first event)
    snapshot: dict[str, Any]


def agent_message(
    content: str | dict[str, Any], *, task: A2ATask, role: str = "ROLE_AGENT"
) -> dict[str, Any]:
    return {
        "messageId": new_id(),
        "contextId": task.context_id,
        "taskId": task.id,
        "role": role,
        "parts": parts_of(content),
    }


class A2AService:
    """Runs A2A tasks through the router and keeps them in a :class:`TaskBook`.

    Args:
        router: the one message path.
        tasks: the task book (``a2a.max_tasks``, ``a2a.task_ttl``).
        metrics: ``caxton_a2a_tasks`` (kept) and ``caxton_a2a_tasks_running``.
        max_message_size: ``messaging.max_message_size``.
        delivery_timeout_s: ``messaging.delivery_timeout`` (the bound on one task).
        max_hops: ``messaging.max_hops`` (a hop count a caller sends is capped past it).
    """

    def __init__(
        self,
        router: Router,
        *,
        tasks: TaskBook,
        metrics: Metrics,
        max_message_size: int,
        delivery_timeout_s: float,
        max_hops: int,
    ) -> None:
        self.router = router
        self.tasks = tasks
        self.max_message_size = max_message_size
        self.delivery_timeout_s = delivery_timeout_s
        self.max_hops = max_hops
        self._running = Background()
        self._requests = metrics.counter(
            "caxton_a2a_requests",
            "A2A JSON-RPC calls by method and outcome (ok or the A2A error reason).",
            ["method", "outcome"],
        )
        self._durations = metrics.histogram(
            "caxton_a2a_request_duration_seconds",
            "Time to answer an A2A call (a stream: until it starts), by method.",
            ["method"],
        )
        metrics.gauge("caxton_a2a_tasks", "A2A tasks this process keeps.").set_function(
            lambda: float(len(self.tasks))
        )
        metrics.gauge(
            "caxton_a2a_tasks_running", "A2A tasks whose call is in progress."
        ).set_function(lambda: float(self.tasks.running()))

    async def run(
        self, *, task_status: trio.TaskStatus[A2AService] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the nursery the tasks run in.

        Cancellation:
            Running tasks are cancelled with the component (after the HTTP front drained).
        """
        await self._running.run(self, task_status)

    # -- SendMessage ---------------------------------------------------------------------------

    async def start(
        self,
        agent: str,
        request: a2a_pb2.SendMessageRequest,
        *,
        owner: str,
        stream: bool,
    ) -> Started:
        """Admit the message of ``request`` to ``agent`` and start its task.

        Raises:
            RpcError: a bad message (no text, a file part, too large, a bad contextId), a
                push-notification config, a taskId (tasks here end when answered), or what
                the router refused (hop guard, closed conversation), with its Caxton code.
            ServiceUnavailable: the component is not running.
        """
        if request.configuration.HasField("task_push_notification_config"):
            raise push_not_supported()
        incoming = request.message
        if len(incoming.message_id) > MAX_ID_LENGTH:
            raise invalid_params(
                f"messageId is {len(incoming.message_id)} characters; at most {MAX_ID_LENGTH}",
                field="message.messageId",
            )
        if incoming.task_id:
            raise unsupported_operation(
                f"task {incoming.task_id!r} cannot take another message: a Caxton task ends "
                "with the agent's reply; send the next message with the same contextId and "
                "no taskId (a new task in the same conversation)",
                taskId=incoming.task_id,
            )
        content = content_of(incoming)
        body: dict[str, Any] = {"content": content}
        if incoming.context_id:
            check_context_id(incoming.context_id)
            body["conversation_id"] = incoming.context_id
        try:
            message = parse_envelope(
                body, sender=owner, max_message_size=self.max_message_size, receiver=agent
            )
        except CaxtonError as exc:
            raise from_caxton_error(exc) from None
        metadata = _struct(incoming, "metadata") or _struct(request, "metadata")
        hop = hop_of(metadata, ceiling=self.max_hops + 1)
        if hop:
            message = attrs.evolve(message, hop=hop)
        rule: ConversationRule = "open" if incoming.context_id else "new"
        refusal = await self.router.admit(message, conversation=rule)
        if refusal is not None:
            raise from_caxton_error(refusal)
        task = A2ATask(id=new_id(), context_id=message.conversation_id, agent=agent, owner=owner)
        user = {
            "messageId": incoming.message_id or message.message_id,
            "contextId": task.context_id,
            "taskId": task.id,
            "role": "ROLE_USER",
            "parts": parts_of(content),
        }
        task.history.append(user)
        self.tasks.add(task)
        events = task.subscribe() if stream else None
        snapshot = task.as_json()
        if not self._running.start_soon(self._run, task, message):
            self.tasks.expire()
            raise ServiceUnavailable("the A2A service is not running yet")
        return Started(task=task, events=events, snapshot=snapshot)

    async def _run(self, task: A2ATask, message: Message) -> None:
        """Deliver the task's message; its chunks become artifact updates, its reply the
        artifact and the final status."""
        chunks, reader = open_chunk_stream()
        first = True

        async def forward() -> None:
            nonlocal first
            with reader:
                async for text in reader:
                    task.publish(
                        {
                            "artifactUpdate": {
                                "taskId": task.id,
                                "contextId": task.context_id,
                                "artifact": {
                                    "artifactId": REPLY_ARTIFACT,
                                    "name": REPLY_ARTIFACT,
                                    "parts": [{"text": text}],
                                },
                                "append": not first,
                                "lastChunk": False,
                            }
                        }
                    )
                    first = False

        try:
            with task.scope:
                task.set_state(WORKING)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(forward)
                    with chunks:
                        delivery = await self.router.deliver_admitted(
                            message, stream=chunks, timeout_s=self.delivery_timeout_s
                        )
                reply = delivery.reply
                answer = agent_message(reply.content, task=task)
                task.history.append(answer)
                if reply.performative == "failure":
                    task.set_state(FAILED, answer)
                else:
                    task.artifacts = [
                        {
                            "artifactId": REPLY_ARTIFACT,
                            "name": REPLY_ARTIFACT,
                            "parts": parts_of(reply.content),
                        }
                    ]
                    task.publish(
                        {
                            "artifactUpdate": {
                                "taskId": task.id,
                                "contextId": task.context_id,
                                "artifact": task.artifacts[0],
                                "append": False,
                                "lastChunk": True,
                            }
                        }
                    )
                    task.set_state(COMPLETED, answer)
        except Exception as exc:
            LOGGER.exception("A2A task %s of %s failed", task.id, task.agent)
            if not task.terminal:
                text = f"the call failed inside Caxton: {type(exc).__name__}"
                task.set_state(FAILED, agent_message(text, task=task))
        finally:
            if not task.terminal:  # canceled (CancelTask, or the server stopping)
                text = "the task was canceled; the agent's call was stopped"
                task.set_state(CANCELED, agent_message(text, task=task))
            self.tasks.account(task, _size_of(task))

    # -- the other methods ---------------------------------------------------------------------

    def get(self, agent: str, request: a2a_pb2.GetTaskRequest, *, owner: str) -> dict[str, Any]:
        task = self.tasks.get(request.id, agent=agent, owner=owner)
        length = request.history_length if request.HasField("history_length") else None
        return task.as_json(history_length=_bounded_length(length))

    def list(self, agent: str, request: a2a_pb2.ListTasksRequest, *, owner: str) -> dict[str, Any]:
        size = request.page_size if request.HasField("page_size") else DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise invalid_params(
                f"pageSize must be from 1 to {MAX_PAGE_SIZE}, got {size}", field="pageSize"
            )
        state_name = None
        if request.status:
            state_name = a2a_pb2.TaskState.Name(request.status)
        offset = offset_of(request.page_token)
        tasks, total = self.tasks.page(
            agent=agent,
            owner=owner,
            context_id=request.context_id or None,
            state=state_name,
            updated_after=seconds_of(request.status_timestamp_after),
            offset=offset,
            size=size,
        )
        length = request.history_length if request.HasField("history_length") else None
        include = request.include_artifacts if request.HasField("include_artifacts") else False
        following = offset + len(tasks)
        return {
            "tasks": [
                t.as_json(history_length=_bounded_length(length), include_artifacts=include)
                for t in tasks
            ],
            "nextPageToken": page_token(following) if following < total else "",
            "pageSize": size,
            "totalSize": total,
        }

    async def cancel(
        self, agent: str, request: a2a_pb2.CancelTaskRequest, *, owner: str
    ) -> dict[str, Any]:
        """Cancel the task's call (its cancel scope) and answer with the canceled task."""
        task = self.tasks.get(request.id, agent=agent, owner=owner)
        if task.terminal:
            raise task_not_cancelable(task.id, task.state)
        task.scope.cancel()
        with trio.move_on_after(CANCEL_WAIT_S):
            await task.done.wait()
        if not task.done.is_set():
            raise internal_error(
                f"task {task.id} was asked to stop but its call has not ended within "
                f"{CANCEL_WAIT_S:g}s; GetTask shows when it does"
            )
        return task.as_json()

    def subscribe(
        self, agent: str, request: a2a_pb2.SubscribeToTaskRequest, *, owner: str
    ) -> Started:
        task = self.tasks.get(request.id, agent=agent, owner=owner)
        if task.terminal:
            raise unsupported_operation(
                f"task {task.id} is already {task.state}: there is nothing to follow; read "
                "it with GetTask",
                taskId=task.id,
            )
        return Started(task=task, events=task.subscribe(), snapshot=task.as_json())

    def count(self, method: str, outcome: str, seconds: float) -> None:
        """Count one call (``method`` is a known method name or ``invalid``)."""
        self._requests.labels(method=method, outcome=outcome).inc()
        self._durations.labels(method=method).observe(seconds)

    def statistics(self) -> dict[str, int]:
        return self.tasks.statistics()


def _struct(message: Any, field: str) -> dict[str, Any] | None:
    """A protobuf Struct field as a dict (``None`` when unset)."""
    if not message.HasField(field):
        return None
    value = json_format.MessageToDict(getattr(message, field))
    return value if isinstance(value, dict) else None


def _size_of(task: A2ATask) -> int:
    """About the bytes a task's messages hold (their JSON)."""
    held = [*task.history, *task.artifacts, task.status_message]
    return sum(len(json.dumps(item, separators=(",", ":"))) for item in held if item)


def _bounded_length(length: int | None) -> int | None:
    if length is None:
        return None
    if length < 0:
        raise invalid_params("historyLength must not be negative", field="historyLength")
    return length
