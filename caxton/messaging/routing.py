"""Choosing the agents a capability message goes to: pure functions over frozen values."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal

import attrs

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

Strategy = Literal["best_match", "round_robin", "broadcast"]
STRATEGIES: tuple[Strategy, ...] = ("best_match", "round_robin", "broadcast")


@attrs.frozen(kw_only=True)
class Provider:
    """An agent that declares a capability, as the router sees it now."""

    agent: str
    status: str
    version: str | None
    in_flight: int

    @property
    def healthy(self) -> bool:
        return self.status == "running"

    def as_json(self) -> dict[str, Any]:
        return {
            "agent": self.agent,
            "status": self.status,
            "version": self.version,
            "in_flight": self.in_flight,
            "healthy": self.healthy,
        }


@attrs.frozen(kw_only=True)
class Choice:
    """Where a capability message goes; ``turn`` is the next round-robin position."""

    targets: tuple[str, ...]
    turn: int


def choose(strategy: Strategy, providers: Sequence[Provider], *, turn: int = 0) -> Choice:
    """Pick the receivers of a capability message among ``providers``.

    * ``best_match``: the healthy provider with the fewest in-flight requests; ties by name.
    * ``round_robin``: healthy providers by name, one after the other (``turn`` counts).
    * ``broadcast``: every healthy provider.

    No healthy provider gives no targets (the caller answers with a ``failure``).
    """
    healthy = sorted((p for p in providers if p.healthy), key=lambda p: p.agent)
    if not healthy:
        return Choice(targets=(), turn=turn)
    if strategy == "broadcast":
        return Choice(targets=tuple(p.agent for p in healthy), turn=turn)
    if strategy == "round_robin":
        return Choice(targets=(healthy[turn % len(healthy)].agent,), turn=turn + 1)
    best = min(healthy, key=lambda p: (p.in_flight, p.agent))
    return Choice(targets=(best.agent,), turn=turn)


def capability_index(declared: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """Agent -> its capabilities, turned into capability -> its agents (sorted)."""
    index: dict[str, list[str]] = {}
    for agent, capabilities in declared.items():
        for capability in capabilities:
            index.setdefault(capability, []).append(agent)
    return {c: tuple(sorted(agents)) for c, agents in sorted(index.items())}


def failure_content(
    code: str, message: str, details: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """The content of a ``failure`` reply: the same error object as HTTP errors carry."""
    return {"error": {"code": code, "message": message, "details": dict(details or {})}}
