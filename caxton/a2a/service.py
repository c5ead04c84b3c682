"""The A2A component: runs each A2A message as a task, through the router's one message path.

A SendMessage becomes a Caxton ``request`` to the agent, admitted and delivered by
:class:`~caxton.messaging.router.Router` exactly like ``POST /api/v1/agents/{name}/messages``
(the same conversation rules, hop guard, size limit and metrics): ``contextId`` is the
conversation id, the reply is recorded in that conversation, and the task's artifact is the
reply. Tasks run in this component's nursery, so a client that goes away does not stop them;
CancelTask cancels the delivery through the task's cancel scope (a WASM guest stops within
its epoch tick, an LLM call is abandoned).

With :class:`~caxton.a2a.records.TaskRecords` the tasks are also rows of the store, so every
instance sharing it answers for every task: GetTask and ListTasks read the rows, CancelTask
on an instance that does not run the call asks the owner (a row mark and an ``a2a.cancel``
notice) and waits for the row to end, SubscribeToTask there follows the row
(:mod:`caxton.a2a.following`). The running call itself stays on the instance that runs it; a
task whose instance went away is marked failed (at this server's start with one node, or by
any instance once the owner's heartbeat is gone).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio
from a2a.types import a2a_pb2
from google.protobuf import json_format

from caxton.a2a.following import FOLLOW_BUFFER, RowWatch, follow, wait_until_ended
from caxton.a2a.records import CANCEL_NOTICE, TASK_NOTICE, TaskRecords, TaskRow, size_of
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
    RpcError,
    check_context_id,
    content_of,
    from_caxton_error,
    hop_of,
    internal_error,
    invalid_params,
    parts_of,
    push_not_supported,
    task_not_cancelable,
    task_not_found,
    unsupported_operation,
)
from caxton.cluster.notify import RESYNC
from caxton.components import Background
from caxton.errors import CaxtonError, ServiceUnavailable
from caxton.messages import new_id, open_chunk_stream
from caxton.messaging.envelope import parse_envelope
from caxton.tracing import stamped

if TYPE_CHECKING:
    from caxton.cluster.notify import NoticeBus
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
#: How long a task's last write to the store may take once its call ended (the server may be
#: stopping: the write is shielded, and this bounds it).
SAVE_WAIT_S = 5.0
#: Streams following tasks that run on other instances, at most, on this instance.
MAX_FOLLOWS = 256
#: How often, in a cluster, the tasks of gone instances are failed and the cancel requests
#: for this instance's running tasks re-read (notices carry them at once; this catches what
#: was missed). A store this process alone writes needs neither after the sweep at start.
SWEEP_INTERVAL_S = 10.0
#: How often finished rows past ``a2a.task_ttl`` are deleted: reads leave them out already,
#: so this only gives their space back (as often as the conversation sweeper's default).
EXPIRE_INTERVAL_S = 300.0


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
        records: the tasks' rows in the store, read by every instance (``None``: the tasks
            live in this process alone).
        notices: where ``a2a.task`` and ``a2a.cancel`` notices from other instances arrive.
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
        records: TaskRecords | None = None,
        notices: NoticeBus | None = None,
    ) -> None:
        self.router = router
        self.tasks = tasks
        self.records = records
        self._watch = RowWatch()
        self._follows = 0
        if notices is not None:
            notices.subscribe(TASK_NOTICE, self._task_changed)
            notices.subscribe(CANCEL_NOTICE, self._cancel_asked)
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

        With task records: first marks failed the tasks an earlier run of this one-node
        server left running, then expires finished rows every :data:`EXPIRE_INTERVAL_S` and,
        in a cluster, sweeps for gone instances and missed cancel requests every
        :data:`SWEEP_INTERVAL_S` (an idle one-node server is not woken for either).

        Cancellation:
            Running tasks are cancelled with the component (after the HTTP front drained).
        """
        if self.records is None:
            await self._running.run(self, task_status)
            return
        await self._sweep_once(self.records)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._sweeping, self.records)
            await self._running.run(self, task_status)

    async def _sweeping(self, records: TaskRecords) -> None:
        cluster = records.store.shared
        step = SWEEP_INTERVAL_S if cluster else EXPIRE_INTERVAL_S
        expire_at = trio.current_time() + EXPIRE_INTERVAL_S
        while True:
            await trio.sleep(step)
            expire = trio.current_time() >= expire_at
            if expire:
                expire_at = trio.current_time() + EXPIRE_INTERVAL_S
            await self._sweep_once(records, expire=expire, cluster=cluster, retry_s=step)

    async def _sweep_once(
        self,
        records: TaskRecords,
        *,
        expire: bool = True,
        cluster: bool = True,
        retry_s: float = SWEEP_INTERVAL_S,
    ) -> None:
        """A sweep whose failure (the store is down) is logged: the next one tries again."""
        try:
            await self._sweep(records, expire=expire, cluster=cluster)
        except Exception as exc:
            LOGGER.warning("the A2A task sweep failed, trying again in %gs: %s", retry_s, exc)

    async def _sweep(self, records: TaskRecords, *, expire: bool, cluster: bool) -> None:
        """Expire finished rows; fail the tasks of gone instances, and act on cancel requests
        whose notice was missed (only while this process runs a task)."""
        if expire:
            await records.expire()
        if not cluster:
            return
        for row in await records.orphans():
            task = row.task
            text = (
                f"the Caxton instance running this task ({row.instance}) stopped before it "
                "ended; send the message again"
            )
            task.change(FAILED, agent_message(text, task=task))
            if await records.save(task, unless_ended=True):
                LOGGER.warning("A2A task %s failed: its instance %s is gone", task.id, row.instance)
        if not self.tasks.running():
            return
        for task_id in await records.cancel_requests():
            self._cancel_local(task_id)

    async def _task_changed(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == RESYNC:
            self._watch.wake_all()
            return
        task_id = payload.get("id")
        if isinstance(task_id, str):
            self._watch.wake(task_id)

    async def _cancel_asked(self, kind: str, payload: dict[str, Any]) -> None:
        if kind == RESYNC:
            if self.records is not None:
                for asked in await self.records.cancel_requests():
                    self._cancel_local(asked)
            return
        task_id = payload.get("id")
        if isinstance(task_id, str):
            self._cancel_local(task_id)

    def _cancel_local(self, task_id: str) -> None:
        """Cancel the call of ``task_id`` if this process runs it."""
        task = self.tasks.find(task_id)
        if task is not None and not task.terminal:
            LOGGER.info("A2A task %s: canceled from another instance", task_id)
            task.scope.cancel()

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
        message = stamped(message)  # the agent's span is a child of this request's
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
        if not self._running.running:
            raise ServiceUnavailable("the A2A service is not running yet")
        self.tasks.add(task)
        if self.records is not None:
            try:
                await self.records.insert(task)
            except BaseException:
                self.tasks.forget(task.id)
                raise
        events = task.subscribe() if stream else None
        snapshot = task.as_json()
        if not self._running.start_soon(self._run, task, message):
            self.tasks.forget(task.id)
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
                        task.artifact_event(
                            {
                                "artifactId": REPLY_ARTIFACT,
                                "name": REPLY_ARTIFACT,
                                "parts": [{"text": text}],
                            },
                            append=not first,
                            last_chunk=False,
                        )
                    )
                    first = False

        outcome: tuple[str, dict[str, Any]] | None = None
        try:
            with task.scope:
                task.set_state(WORKING)
                await self._save(task)
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
                    outcome = FAILED, answer
                else:
                    task.artifacts = [
                        {
                            "artifactId": REPLY_ARTIFACT,
                            "name": REPLY_ARTIFACT,
                            "parts": parts_of(reply.content),
                        }
                    ]
                    task.publish(task.artifact_event(task.artifacts[0]))
                    outcome = COMPLETED, answer
        except Exception as exc:
            LOGGER.exception("A2A task %s of %s failed", task.id, task.agent)
            text = f"the call failed inside Caxton: {type(exc).__name__}"
            outcome = FAILED, agent_message(text, task=task)
        finally:
            if outcome is None:  # canceled (CancelTask, or the server stopping)
                text = "the task was canceled; the agent's call was stopped"
                outcome = CANCELED, agent_message(text, task=task)
            # the row ends before anyone hears of it: a client told "done" reads it anywhere
            task.change(*outcome)
            with trio.CancelScope(shield=True) as saving:
                saving.deadline = trio.current_time() + SAVE_WAIT_S
                await self._save(task)
            task.announce()
            self.tasks.account(task, size_of(task))

    async def _save(self, task: A2ATask) -> None:
        """Write the task's row (a store that does not answer is logged: the task goes on,
        and this process still answers for it)."""
        if self.records is None:
            return
        try:
            await self.records.save(task)
        except Exception as exc:
            LOGGER.warning("A2A task %s: could not record %s: %s", task.id, task.state, exc)

    # -- the other methods ---------------------------------------------------------------------

    async def _find(self, task_id: str, *, agent: str, owner: str) -> A2ATask | TaskRow:
        """The task here, or else its row in the store.

        Raises:
            RpcError: -32001 when there is neither (another caller's task is not found either).
        """
        local = self.tasks.find(task_id)
        if local is not None or self.records is None:
            return self.tasks.get(task_id, agent=agent, owner=owner)
        row = await self.records.get(task_id)
        if row is None or row.task.agent != agent or row.task.owner != owner:
            raise task_not_found(task_id[:128])
        return row

    async def get(
        self, agent: str, request: a2a_pb2.GetTaskRequest, *, owner: str
    ) -> dict[str, Any]:
        found = await self._find(request.id, agent=agent, owner=owner)
        task = found if isinstance(found, A2ATask) else found.task
        length = request.history_length if request.HasField("history_length") else None
        return task.as_json(history_length=_bounded_length(length))

    async def list(
        self, agent: str, request: a2a_pb2.ListTasksRequest, *, owner: str
    ) -> dict[str, Any]:
        size = request.page_size if request.HasField("page_size") else DEFAULT_PAGE_SIZE
        if not 1 <= size <= MAX_PAGE_SIZE:
            raise invalid_params(
                f"pageSize must be from 1 to {MAX_PAGE_SIZE}, got {size}", field="pageSize"
            )
        state_name = None
        if request.status:
            state_name = a2a_pb2.TaskState.Name(request.status)
        offset = offset_of(request.page_token)
        book: TaskBook | TaskRecords = self.tasks if self.records is None else self.records
        tasks, total = await _page(
            book,
            agent=agent,
            owner=owner,
            context_id=request.context_id or None,
            state=state_name,
            updated_after=seconds_of(request.status_timestamp_after),
            offset=offset,
            size=size,
        )
        # a task this process runs is fresher here than in its row (streamed chunks)
        tasks = [self.tasks.find(t.id) or t for t in tasks]
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
        """Cancel the task's call (its cancel scope here, or through its owner) and answer with
        the canceled task."""
        found = await self._find(request.id, agent=agent, owner=owner)
        if isinstance(found, TaskRow):
            return await self._cancel_elsewhere(found)
        task = found
        if task.terminal:
            raise task_not_cancelable(task.id, task.state)
        task.scope.cancel()
        with trio.move_on_after(CANCEL_WAIT_S):
            await task.done.wait()
        if not task.done.is_set():
            raise _still_running(task.id)
        return task.as_json()

    async def _cancel_elsewhere(self, row: TaskRow) -> dict[str, Any]:
        """CancelTask for a task another instance runs: ask its owner, wait for its row to
        end."""
        assert self.records is not None
        task = row.task
        if task.terminal:
            raise task_not_cancelable(task.id, task.state)
        if not await self.records.request_cancel(row):  # it ended meanwhile
            now = await self.records.get(task.id)
            raise task_not_cancelable(task.id, now.task.state if now else task.state)
        ended = await wait_until_ended(self.records, self._watch, task.id, timeout_s=CANCEL_WAIT_S)
        if ended is None:
            raise _still_running(task.id)
        return ended.task.as_json()

    async def subscribe(
        self, agent: str, request: a2a_pb2.SubscribeToTaskRequest, *, owner: str
    ) -> Started:
        found = await self._find(request.id, agent=agent, owner=owner)
        task = found if isinstance(found, A2ATask) else found.task
        if task.terminal:
            raise unsupported_operation(
                f"task {task.id} is already {task.state}: there is nothing to follow; read "
                "it with GetTask",
                taskId=task.id,
            )
        if isinstance(found, A2ATask):
            return Started(task=task, events=task.subscribe(), snapshot=task.as_json())
        return self._follow(found)

    def _follow(self, row: TaskRow) -> Started:
        """A stream of a task another instance runs, from its row."""
        assert self.records is not None
        if self._follows >= MAX_FOLLOWS:
            raise internal_error(
                f"{MAX_FOLLOWS} streams already follow tasks of other instances here; poll "
                "with GetTask, or subscribe on the instance that runs the task"
            )
        send, receive = trio.open_memory_channel[dict[str, Any]](FOLLOW_BUFFER)
        records = self.records
        # a task ends within the delivery timeout, or is failed once its instance is gone
        timeout_s = self.delivery_timeout_s + 3 * SWEEP_INTERVAL_S + records.live_window_s * 2

        async def following() -> None:
            try:
                await follow(records, self._watch, row, send, timeout_s=timeout_s)
            finally:
                self._follows -= 1

        self._follows += 1
        if not self._running.start_soon(following):
            self._follows -= 1
            raise ServiceUnavailable("the A2A service is not running")
        return Started(task=row.task, events=receive, snapshot=row.task.as_json())

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


async def _page(book: TaskBook | TaskRecords, **where: Any) -> tuple[list[A2ATask], int]:
    if isinstance(book, TaskBook):
        return book.page(**where)
    return await book.page(**where)


def _still_running(task_id: str) -> RpcError:
    return internal_error(
        f"task {task_id} was asked to stop but its call has not ended within "
        f"{CANCEL_WAIT_S:g}s; GetTask shows when it does"
    )


def _bounded_length(length: int | None) -> int | None:
    if length is None:
        return None
    if length < 0:
        raise invalid_params("historyLength must not be negative", field="historyLength")
    return length
