"""Readiness of the server's components, as ``/ready`` and ``/api/v1/health`` report it."""

from __future__ import annotations

import contextlib
import enum
from typing import TYPE_CHECKING, Any

import attrs
import trio

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable


class ComponentState(enum.Enum):
    STARTING = "starting"
    RUNNING = "running"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@attrs.frozen(kw_only=True)
class ComponentStatus:
    name: str
    state: ComponentState
    detail: str | None = None


class Components:
    """The state of each component, in start order.

    The root task declares a component before starting it and marks it running once its
    ``nursery.start`` returned; the server is ready when every declared component runs.
    """

    def __init__(self) -> None:
        self._status: dict[str, ComponentStatus] = {}

    def set(self, name: str, state: ComponentState, detail: str | None = None) -> None:
        self._status[name] = ComponentStatus(name=name, state=state, detail=detail)

    def all_running(self) -> bool:
        return bool(self._status) and all(
            s.state is ComponentState.RUNNING for s in self._status.values()
        )

    def statistics(self) -> list[ComponentStatus]:
        return list(self._status.values())


class Background:
    """A component's nursery for the work it starts in the background (version tasks,
    deliveries), open while the component's ``run`` is running.

    ``run`` is the body of the owner's own ``run``: it reports ``value`` as started, then holds
    the nursery open until cancelled, which cancels the work in it.
    """

    def __init__(self) -> None:
        self.nursery: trio.Nursery | None = None

    @property
    def running(self) -> bool:
        return self.nursery is not None

    async def run(self, value: object, task_status: trio.TaskStatus[Any]) -> None:
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            try:
                task_status.started(value)
                await trio.sleep_forever()
            finally:
                self.nursery = None

    def start_soon(self, task: Callable[..., Awaitable[object]], *args: object) -> bool:
        """Start ``task(*args)``; ``False`` (nothing started) when the owner is not running."""
        if self.nursery is None:
            return False
        self.nursery.start_soon(task, *args)
        return True


@contextlib.asynccontextmanager
async def running(run: Callable[..., Awaitable[object]]) -> AsyncIterator[None]:
    """Run a component's ``run`` in a nursery of its own for the ``async with`` block (the
    ``open_*`` helpers of tests and tools): started on entry, cancelled on exit.

    Raises:
        Exception: what starting the component raised, or what the block raised, bare (the
            nursery holds one task, so a group holds the one error that matters).
    """
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            try:
                yield
            finally:
                nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise
