"""Readiness of the server's components, as ``/ready`` and ``/api/v1/health`` report it."""

from __future__ import annotations

import enum

import attrs


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
