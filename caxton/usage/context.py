"""Who a request is for, and what it has used so far, carried with the request's tasks.

Both are context variables: trio copies a task's context into the tasks it starts, so the
agent answering a request (and the agents it asks in turn) sees the caller the HTTP layer
identified, and its LLM calls add to the meter the ``done`` frame reports.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import TYPE_CHECKING, Any

import attrs

from caxton.llm.types import Usage
from caxton.usage.model import ANONYMOUS, usage_json

if TYPE_CHECKING:
    from collections.abc import Iterator

_CALLER: contextvars.ContextVar[str | None] = contextvars.ContextVar("caxton_caller", default=None)
_METER: contextvars.ContextVar[UsageMeter | None] = contextvars.ContextVar(
    "caxton_usage_meter", default=None
)


def set_caller(name: str | None) -> None:
    """The caller of the request this task serves: an API key's name or a token's subject."""
    _CALLER.set(name)


def current_caller() -> str:
    return _CALLER.get() or ANONYMOUS


@attrs.define
class UsageMeter:
    """What the LLM calls of one request used (sub-agents' calls included)."""

    usage: Usage = attrs.Factory(Usage)
    cost: float = 0.0

    def add(self, usage: Usage, cost: float) -> None:
        self.usage = self.usage + usage
        self.cost += cost

    def as_json(self) -> dict[str, Any]:
        return usage_json(self.usage, self.cost)


@contextlib.contextmanager
def metering() -> Iterator[UsageMeter]:
    """Count the LLM usage of the work done inside the block (and the tasks it starts)."""
    meter = UsageMeter()
    token = _METER.set(meter)
    try:
        yield meter
    finally:
        _METER.reset(token)


def current_meter() -> UsageMeter | None:
    return _METER.get()
