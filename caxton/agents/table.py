"""The running agents: which version of each serves, its instance, and what answering cost.

The table is what the message router needs from the agents: it is created before the
runtimes and the registry, so the router (and through it the runtimes, whose agents send
messages) can be built with everything they need. The :class:`~caxton.agents.registry.Registry`
is the only writer: it loads versions and records them here; everyone else reads and sends.
"""

from __future__ import annotations

import collections
import contextlib
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from caxton.agents.versions import VersionRegistry
from caxton.errors import CaxtonError, ServiceUnavailable
from caxton.latency import LatencyWindow
from caxton.tracing import context_from, span, tracer

if TYPE_CHECKING:
    from types import TracebackType

    from caxton.agents.runtime import AgentInstance, AgentReply
    from caxton.agents.versions import AgentVersions, VersionEntry
    from caxton.messages import ChunkSender, Message
    from caxton.metrics import Metrics


class AgentUnavailable(ServiceUnavailable):
    """The agent exists but no version of it can answer now."""

    code = "AGENT_UNAVAILABLE"


@attrs.frozen(kw_only=True)
class ReloadResult:
    ok: bool
    error: str | None
    at: float = attrs.field(factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "error": self.error, "at": self.at}


class Performance:
    """Response figures of one agent since the server started."""

    def __init__(self) -> None:
        self.window = LatencyWindow(200)
        self.messages = 0
        self.errors = 0
        self.errors_by_code: collections.Counter[str] = collections.Counter()
        self.fuel = 0
        self.tokens = 0

    def record(self, seconds: float, outcome: str) -> None:
        self.window.record(seconds)
        self.messages += 1
        if outcome != "ok":
            self.errors += 1
            self.errors_by_code[outcome] += 1


class RunningVersion:
    """The running side of one version: its instance and its in-flight requests."""

    def __init__(self) -> None:
        self.instance: AgentInstance | None = None
        self.stop_requested = trio.Event()
        self.drain = True
        self.in_flight = 0
        self.idle = trio.Event()
        self.idle.set()
        self.requests: set[trio.CancelScope] = set()

    def request_stop(self, *, drain: bool) -> None:
        self.drain = self.drain and drain if self.stop_requested.is_set() else drain
        self.stop_requested.set()

    def track(self) -> _Tracked:
        """A request this version answers: ``with version.track() as scope:`` counts it in
        flight and lets a drain deadline cancel it."""
        return _Tracked(self)

    def cancel_requests(self) -> None:
        for scope in list(self.requests):
            scope.cancel()


class _Tracked:
    """One request in flight on a version (a class: cheaper than a generator-based manager)."""

    __slots__ = ("_scope", "_version")

    def __init__(self, version: RunningVersion) -> None:
        self._version = version
        self._scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        version = self._version
        version.requests.add(self._scope)
        version.in_flight += 1
        if version.in_flight == 1:
            version.idle = trio.Event()
        return self._scope.__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        try:
            return self._scope.__exit__(exc_type, exc_value, traceback)
        finally:
            version = self._version
            version.requests.discard(self._scope)
            version.in_flight -= 1
            if version.in_flight == 0:
                version.idle.set()


class AgentTable:
    """Agent name -> the version serving each conversation -> its running instance.

    Attributes:
        state: the pure version rules' current value (the registry replaces it on each step).
        versions: (agent, revision) -> the running side of that version.
        last_reload: agent -> how its last (re)load went.
    """

    def __init__(self, metrics: Metrics) -> None:
        self.state = VersionRegistry()
        self.versions: dict[tuple[str, int], RunningVersion] = {}
        self.last_reload: dict[str, ReloadResult] = {}
        self._responses = metrics.histogram(
            "caxton_agent_response_duration_seconds",
            "Time agents take to answer a message, by agent and outcome (ok or error code).",
            ["agent", "outcome"],
        )
        self._latency = LatencyWindow(1000)
        self._performance: dict[str, Performance] = {}
        # label children looked up once: labels() costs more than the observation
        self._responses_by: dict[tuple[str, str], Any] = {}
        self._in_flight: dict[str, int] = {}
        p99 = metrics.gauge(
            "caxton_agent_response_latency_p99",
            "p99 of agent response time over the last 1000 messages, in seconds.",
        )
        p99.set_function(lambda: self._latency.percentile(0.99))

    # -- traffic -------------------------------------------------------------------------------

    async def send(
        self,
        name: str,
        message: Message,
        stream: ChunkSender | None = None,
    ) -> tuple[AgentReply, VersionEntry]:
        """Deliver ``message`` to the version of ``name`` that serves its conversation; its
        reply's chunks go to ``stream`` as they come.

        Raises:
            AgentNotFound: no agent has that name.
            AgentUnavailable: no version runs (failed, loading) or it stopped mid-answer.

        Cancellation:
            Cancelling stops the agent's work for this message.
        """
        entry = self.state.choose(name, message.conversation_id)
        version = self.versions.get((name, entry.revision)) if entry is not None else None
        if entry is None or version is None or version.instance is None:
            agent = self.state.get(name)
            last = self.last_reload.get(name)
            why = f": {last.error}" if last is not None and last.error else ""
            raise AgentUnavailable(
                f"agent {name!r} has no running version (status {agent.status.value}){why}",
                details={"agent": name, "status": agent.status.value},
            )
        instance = version.instance
        started = time.perf_counter()
        outcome = "ok"
        in_flight = self._in_flight
        in_flight[name] = in_flight.get(name, 0) + 1
        try:
            with (
                span(
                    f"invoke_agent {name}",
                    _invoke_attributes(self.state.get(name), entry, message),
                    parent=context_from(message.trace_context),
                )
                if tracer() is not None
                else contextlib.nullcontext(),
                version.track() as scope,
            ):
                reply = await instance.handle(message, stream)
        except CaxtonError as exc:
            outcome = exc.code
            raise
        finally:
            in_flight[name] -= 1
            elapsed = time.perf_counter() - started
            self._latency.record(elapsed)
            child = self._responses_by.get((name, outcome))
            if child is None:
                child = self._responses_by[(name, outcome)] = self._responses.labels(
                    agent=name, outcome=outcome
                )
            child.observe(elapsed)
            performance = self._performance.get(name)
            if performance is None:
                performance = self._performance[name] = Performance()
            performance.record(elapsed, outcome)
        if scope.cancelled_caught:
            raise AgentUnavailable(
                f"agent {name!r} version {entry.version} stopped while answering (its drain "
                "deadline passed); send the message again",
                details={"agent": name},
            )
        performance.fuel += reply.fuel
        performance.tokens += reply.tokens
        return reply, entry

    # -- reading -------------------------------------------------------------------------------

    def has_agent(self, name: str) -> bool:
        return name in self.state.agents

    def agent(self, name: str) -> AgentVersions:
        """The versions of ``name``.

        Raises:
            AgentNotFound: no agent has that name (the message lists the known ones).
        """
        return self.state.get(name)

    def agent_names(self) -> list[str]:
        return sorted(self.state.agents)

    def kind_of(self, name: str) -> str | None:
        """``config`` or ``wasm`` for an agent that exists, else ``None``."""
        agent = self.state.agents.get(name)
        return agent.type if agent is not None else None

    def versions_view(self, name: str) -> list[dict[str, Any]]:
        return self.state.get(name).versions_view()

    def in_flight(self, name: str) -> int:
        """Requests the versions of ``name`` are answering now."""
        return self._in_flight.get(name, 0)

    def declared_capabilities(self) -> dict[str, tuple[str, ...]]:
        """Agent -> capabilities of its versions taking traffic (the newest before a load)."""
        declared: dict[str, tuple[str, ...]] = {}
        for name, agent in self.state.agents.items():
            canary = agent.entry(agent.canary.revision) if agent.canary else None
            entries = [e for e in (agent.active_entry, canary) if e is not None]
            entries = entries or list(agent.entries[-1:])
            declared[name] = tuple(dict.fromkeys(c for e in entries for c in e.spec.capabilities))
        return declared

    def performance_view(self) -> list[dict[str, Any]]:
        """Per agent: messages, errors by code, response p50/p99 over its last 200 messages,
        and what answering cost (WASM fuel, LLM tokens) since the server started."""
        rows = []
        for name in sorted(self.state.agents):
            perf = self._performance.get(name, Performance())
            agent = self.state.agents[name]
            rows.append(
                {
                    "name": name,
                    "type": agent.type,
                    "status": agent.status.value,
                    "messages": perf.messages,
                    "errors": perf.errors,
                    "errors_by_code": dict(perf.errors_by_code),
                    "p50_ms": round(perf.window.percentile(0.5) * 1000, 3),
                    "p99_ms": round(perf.window.percentile(0.99) * 1000, 3),
                    "fuel": perf.fuel,
                    "tokens": perf.tokens,
                }
            )
        return rows

    def running_versions(self) -> int:
        return sum(1 for v in self.versions.values() if v.instance)

    def status_of(self, name: str) -> tuple[str, str | None]:
        """The agent's status and the version serving it (``None`` when none does)."""
        agent = self.state.get(name)
        active = agent.active_entry
        return agent.status.value, active.version if active else None


def _invoke_attributes(
    agent: AgentVersions, entry: VersionEntry, message: Message
) -> dict[str, Any]:
    """The GenAI attributes of an ``invoke_agent`` span (issue #18)."""
    canary = agent.canary is not None and agent.canary.revision == entry.revision
    return {
        "gen_ai.operation.name": "invoke_agent",
        "gen_ai.agent.name": entry.spec.name,
        "gen_ai.agent.version": entry.version,
        "gen_ai.conversation.id": message.conversation_id,
        "caxton.agent.track": "canary" if canary else "stable",
        "caxton.message.hop": message.hop,
        "caxton.message.sender": message.sender,
    }
