"""The registry component: every running agent version lives in its nursery.

The rules (which version serves, blue-green, canary, rollback) are decided by the pure
:class:`~caxton.agents.versions.VersionRegistry`; this shell carries the decisions out. Each
version is a task: it loads through its runtime, serves until asked to stop, drains its
in-flight requests under ``drain_timeout_s``, then closes its instance. Events, per-agent logs
and reload metrics are published from here.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import attrs
import trio

from caxton.agents.runtime import LoadRequest
from caxton.agents.table import AgentTable, AgentUnavailable, ReloadResult, RunningVersion
from caxton.agents.versions import (
    AgentRemoved,
    AgentState,
    InvalidTransition,
    StartVersion,
    StatusChanged,
    StopVersion,
    TrafficChanged,
    Unchanged,
    VersionRegistry,
)
from caxton.components import Background
from caxton.errors import CaxtonError, NotFound, ServiceUnavailable
from caxton.events import Event

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from caxton.agents.logs import AgentLogs
    from caxton.agents.runtime import AgentInstance, AgentRuntime
    from caxton.agents.spec import AnyAgentSpec, SpecReport
    from caxton.agents.versions import Step, VersionEntry
    from caxton.events import EventHub
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.registry")
_NAME_LINE = re.compile(r'^\s*name\s*=\s*["\']([A-Za-z][A-Za-z0-9_-]{0,63})["\']', re.M)


@attrs.frozen(kw_only=True)
class InvalidFile:
    """An agent file that does not validate (the running version, if any, keeps serving)."""

    source: str
    name: str
    kind: str
    error: str
    problems: tuple[dict[str, Any], ...]
    at: float = attrs.field(factory=time.time)


class Registry:
    """Loads, swaps, drains and stops agent versions, recording them in an :class:`AgentTable`.

    Args:
        table: the running agents (the registry is its only writer).
        runtimes: the runtime for each agent kind (``config``, ``wasm``).
        events: where lifecycle events are published.
        metrics: the server's registry; reload counters and agent gauges go there.
        logs: per-agent log buffers.
        drain_timeout_s: how long a replaced version may finish its in-flight requests.
        load_timeout_s: how long a version may take to load before it counts as failed.
    """

    def __init__(
        self,
        table: AgentTable,
        *,
        runtimes: Mapping[str, AgentRuntime],
        events: EventHub,
        metrics: Metrics,
        logs: AgentLogs,
        drain_timeout_s: float = 30.0,
        load_timeout_s: float = 30.0,
    ) -> None:
        self.table = table
        self.runtimes = dict(runtimes)
        self.events = events
        self.logs = logs
        self.drain_timeout_s = drain_timeout_s
        self.load_timeout_s = load_timeout_s
        self._modules: dict[str, bytes] = {}
        self._invalid: dict[str, InvalidFile] = {}
        self._changed = trio.Event()
        self._versions_tasks = Background()
        self._reload_ok = metrics.counter(
            "caxton_agent_reload_success", "Agent versions that loaded and took over."
        )
        self._reload_failed = metrics.counter(
            "caxton_agent_reload_failed", "Agent files or versions that failed to load."
        )
        self._reload_seconds = metrics.histogram(
            "caxton_agent_reload_duration_seconds",
            "Time from a new version's start to it taking traffic (load, compile, init).",
        )
        self._config_count = metrics.gauge("caxton_agent_config_count", "Config (LLM) agents.")
        self._wasm_count = metrics.gauge("caxton_agent_wasm_count", "WASM agents.")

    # -- component ---------------------------------------------------------------------------

    async def run(
        self, *, task_status: trio.TaskStatus[Registry] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the versions' nursery until cancelled.

        Cancellation:
            Every version task is cancelled; each closes its instance (bounded, shielded).
        """
        await self._versions_tasks.run(self, task_status)

    @property
    def state(self) -> VersionRegistry:
        return self.table.state

    # -- changes -------------------------------------------------------------------------------

    def deploy(
        self, spec: AnyAgentSpec, *, module: bytes | None = None, take_over: bool = False
    ) -> int:
        """Deploy a validated spec; return the revision that will serve it.

        Raises:
            DuplicateAgentName: another source owns the name and ``take_over`` is false.
        """
        if module is not None:
            self._modules[spec.content_hash] = module
        is_new = spec.name not in self.table.state.agents
        step = self.table.state.deploy(spec, take_over=take_over)
        self._invalid.pop(spec.source, None)
        if is_new:
            self.events.publish(
                Event(
                    type="agent_deployed",
                    agent=spec.name,
                    data={"version": spec.version, "type": spec.kind, "source": spec.source},
                )
            )
        self._apply(step)
        for decision in step.decisions:
            if isinstance(decision, StartVersion | Unchanged) and decision.name == spec.name:
                return decision.revision
        raise AssertionError("a deploy always starts or keeps a version")

    def record_invalid(self, report: SpecReport, *, text: str | None, kind: str = "config") -> None:
        """A file failed validation: keep serving what runs, and say so everywhere."""
        source = report.source
        owned = self.table.state.names_from(source)
        match = _NAME_LINE.search(text or "")
        stem = source.rsplit("/", 1)[-1].rsplit(".", 1)[0]
        name = owned[0] if owned else (match.group(1) if match else stem)
        problems = tuple(p.as_dict() for p in report.errors)
        error = "; ".join(p.render() for p in report.errors) or "invalid agent file"
        self._invalid[source] = InvalidFile(
            source=source, name=name, kind=kind, error=error, problems=problems
        )
        self._reload_failed.inc()
        self.table.last_reload[name] = ReloadResult(ok=False, error=error)
        self.logs.write(name, "error", f"{source} not loaded: {error}")
        self.events.publish(
            Event(
                type="agent_reload_failed",
                agent=name,
                data={"source": source, "error": error, "errors": list(problems)},
            )
        )
        self._pulse()

    def forget_source(self, source: str) -> None:
        """The file ``source`` is gone: remove its agents and any failure it left."""
        self._invalid.pop(source, None)
        if self.table.state.names_from(source):
            self._apply(self.table.state.remove_source(source))
        self._pulse()

    def remove(self, name: str) -> None:
        """Stop and forget the agent ``name``."""
        self._apply(self.table.state.remove(name))

    def restart(self, name: str) -> int:
        """Blue-green restart of ``name``; return the new revision."""
        step = self.table.state.restart(name)
        self._apply(step)
        return next(d.revision for d in step.decisions if isinstance(d, StartVersion))

    async def set_canary(self, name: str, *, version: str, traffic_percentage: float) -> None:
        """Give a kept version a share of new conversations (loading it first if needed)."""
        step = self.table.state.set_canary(
            name, version=version, traffic_percentage=traffic_percentage
        )
        await self._apply_and_settle(step)

    async def promote(self, name: str) -> None:
        await self._apply_and_settle(self.table.state.promote(name))

    async def rollback(self, name: str, *, to_version: str | None = None) -> None:
        """Go back to ``to_version`` (or end the canary, or the previous version)."""
        await self._apply_and_settle(self.table.state.rollback(name, to_version=to_version))

    async def _apply_and_settle(self, step: Step) -> None:
        self._apply(step)
        for decision in step.decisions:
            if isinstance(decision, StartVersion):
                entry = await self.wait_settled(
                    decision.name, decision.revision, timeout_s=self.load_timeout_s
                )
                if entry.state is AgentState.FAILED:
                    raise AgentUnavailable(
                        f"agent {decision.name!r} version {entry.version} did not start: "
                        f"{entry.error}",
                        details={"agent": decision.name, "version": entry.version},
                    )

    async def wait_settled(self, name: str, revision: int, *, timeout_s: float) -> VersionEntry:
        """Wait until ``revision`` of ``name`` has finished loading (or failed)."""
        with trio.move_on_after(timeout_s):
            while True:
                agent = self.table.state.agents.get(name)
                entry = agent.entry(revision) if agent else None
                if entry is None:
                    raise NotFound(f"agent {name!r} revision {revision} is gone")
                if entry.state is not AgentState.LOADING:
                    return entry
                await self._changed.wait()
        raise ServiceUnavailable(
            f"agent {name!r} is still loading after {timeout_s:g}s; check its logs"
        )

    async def wait_all_settled(self, *, timeout_s: float) -> None:
        """Wait until no version is loading (start-up: ready means the agents are up)."""
        with trio.move_on_after(timeout_s):
            while any(
                e.state is AgentState.LOADING
                for agent in self.table.state.agents.values()
                for e in agent.entries
            ):
                await self._changed.wait()

    # -- views ---------------------------------------------------------------------------------

    def agent_view(self, name: str) -> dict[str, Any]:
        """The agent JSON of DESIGN §11."""
        agent = self.table.state.agents.get(name)
        if agent is None:
            invalid = next((f for f in self._invalid.values() if f.name == name), None)
            if invalid is None:
                self.table.state.get(name)  # raises AgentNotFound with the known names
                raise AssertionError("unreachable")
            return self._invalid_view(invalid)
        entry = agent.active_entry or (agent.entries[-1] if agent.entries else None)
        spec = entry.spec if entry is not None else None
        version = self.table.versions.get((name, agent.active)) if agent.active else None
        details = version.instance.details if version and version.instance else {}
        invalid = self._invalid.get(agent.source)
        return {
            "name": name,
            "type": agent.type,
            "version": agent.active_entry.version if agent.active_entry else None,
            "canary": (
                {
                    "version": agent.canary.version,
                    "traffic_percentage": agent.canary.traffic_percentage,
                }
                if agent.canary
                else None
            ),
            "status": agent.status.value,
            "capabilities": list(spec.capabilities) if spec else [],
            "description": spec.description if spec else "",
            "abi": details.get("abi"),
            # config agents: the LLM endpoint in use (or why there is none) and their tools
            **{key: details[key] for key in ("llm", "tools", "mcp_servers") if key in details},
            "source": agent.source,
            "last_reload": self.table.last_reload.get(
                name, ReloadResult(ok=True, error=None)
            ).as_json(),
            "pending_errors": list(invalid.problems) if invalid else [],
        }

    def list_view(self) -> list[dict[str, Any]]:
        views = [self.agent_view(name) for name in sorted(self.table.state.agents)]
        listed = {v["name"] for v in views}
        for invalid in sorted(self._invalid.values(), key=lambda f: f.name):
            if invalid.name not in listed and invalid.source not in {v["source"] for v in views}:
                views.append(self._invalid_view(invalid))
                listed.add(invalid.name)
        return views

    def invalid_files(self) -> list[InvalidFile]:
        return list(self._invalid.values())

    def statistics(self) -> dict[str, int]:
        agents = self.table.state.agents.values()
        return {
            "config": sum(1 for a in agents if a.type == "config"),
            "wasm": sum(1 for a in agents if a.type == "wasm"),
            "running_versions": self.table.running_versions(),
            "failed_files": len(self._invalid),
        }

    def _invalid_view(self, invalid: InvalidFile) -> dict[str, Any]:
        return {
            "name": invalid.name,
            "type": invalid.kind,
            "version": None,
            "canary": None,
            "status": AgentState.FAILED.value,
            "capabilities": [],
            "description": "",
            "abi": None,
            "source": invalid.source,
            "last_reload": ReloadResult(ok=False, error=invalid.error, at=invalid.at).as_json(),
            "pending_errors": list(invalid.problems),
        }

    # -- carrying out decisions -------------------------------------------------------------------

    def _apply(self, step: Step) -> None:
        self.table.state = step.registry
        for decision in step.decisions:
            if isinstance(decision, StartVersion):
                self._start_version(decision)
            elif isinstance(decision, StopVersion):
                version = self.table.versions.get((decision.name, decision.revision))
                if version is not None:
                    version.request_stop(drain=decision.drain)
            elif isinstance(decision, StatusChanged):
                self._status_changed(decision)
            elif isinstance(decision, TrafficChanged):
                agent = self.table.state.agents.get(decision.name)
                active = agent.active_entry if agent else None
                self.events.publish(
                    Event(
                        type="agent_updated",
                        agent=decision.name,
                        data={
                            "version": active.version if active else None,
                            "revision": decision.active,
                            "canary": (
                                {
                                    "version": decision.canary.version,
                                    "traffic_percentage": decision.canary.traffic_percentage,
                                }
                                if decision.canary
                                else None
                            ),
                        },
                    )
                )
            elif isinstance(decision, AgentRemoved):
                self.table.last_reload.pop(decision.name, None)
                self.logs.write(decision.name, "info", "agent removed")
                self.events.publish(Event(type="agent_deleted", agent=decision.name))
        live = {e.spec.content_hash for a in self.table.state.agents.values() for e in a.entries}
        for content_hash in [h for h in self._modules if h not in live]:
            del self._modules[content_hash]
        stats = self.statistics()
        self._config_count.set(stats["config"])
        self._wasm_count.set(stats["wasm"])
        self._pulse()

    def _apply_if_known(self, event: Callable[[VersionRegistry], Step]) -> bool:
        """Apply a version's own event; ``False`` when its agent was removed meanwhile."""
        try:
            step = event(self.table.state)
        except NotFound:
            return False
        except InvalidTransition as exc:
            # a version task reporting a move its lifecycle does not allow is a bug; log it
            # loudly instead of letting it take the registry (and the server) down
            LOGGER.error("ignored an impossible agent state change: %s", exc.message)
            return False
        self._apply(step)
        return True

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    def _status_changed(self, decision: StatusChanged) -> None:
        text = (
            f"version {decision.version} (revision {decision.revision}): "
            f"{decision.old.value} -> {decision.new.value}"
        )
        level = "error" if decision.new is AgentState.FAILED else "info"
        self.logs.write(
            decision.name, level, f"{text}: {decision.error}" if decision.error else text
        )
        self.events.publish(
            Event(
                type="agent_status_changed",
                agent=decision.name,
                data={
                    "version": decision.version,
                    "revision": decision.revision,
                    "old": decision.old.value,
                    "new": decision.new.value,
                    "error": decision.error,
                },
            )
        )

    def _forget_version(self, name: str, revision: int, version: RunningVersion) -> None:
        if self.table.versions.get((name, revision)) is version:
            del self.table.versions[(name, revision)]

    def _start_version(self, decision: StartVersion) -> None:
        if not self._versions_tasks.running:
            raise ServiceUnavailable("the agent registry is not running")
        version = RunningVersion()
        self.table.versions[(decision.name, decision.revision)] = version
        self._versions_tasks.start_soon(self._run_version, decision, version)

    async def _run_version(self, decision: StartVersion, version: RunningVersion) -> None:
        name, revision, spec = decision.name, decision.revision, decision.spec
        request = LoadRequest(spec=spec, module=self._modules.get(spec.content_hash))
        error: str | None = None
        instance: AgentInstance | None = None
        started = time.perf_counter()
        try:
            with trio.fail_after(self.load_timeout_s):
                instance = await self.runtimes[spec.kind].load(request)
        except trio.TooSlowError:
            error = f"loading took longer than {self.load_timeout_s:g}s"
        except CaxtonError as exc:
            error = exc.message
        except Exception as exc:
            LOGGER.exception("agent %s revision %d failed to load", name, revision)
            error = f"{type(exc).__name__}: {exc}"
        if instance is None:
            self._forget_version(name, revision, version)
            self._reload_failed.inc()
            self.table.last_reload[name] = ReloadResult(ok=False, error=error)
            failed = error or "failed to load"
            self._apply_if_known(lambda s: s.load_failed(name, revision, error=failed))
            if spec.name in self.table.state.agents:
                self.events.publish(
                    Event(
                        type="agent_reload_failed",
                        agent=name,
                        data={"source": spec.source, "error": failed, "revision": revision},
                    )
                )
            return
        version.instance = instance
        try:
            if self._apply_if_known(lambda s: s.loaded(name, revision)):
                self._reload_ok.inc()
                self._reload_seconds.observe(time.perf_counter() - started)
                self.table.last_reload[name] = ReloadResult(ok=True, error=None)
                await version.stop_requested.wait()
                if version.drain:
                    with trio.move_on_after(self.drain_timeout_s):
                        await version.idle.wait()
        finally:
            version.cancel_requests()
            self._forget_version(name, revision, version)
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await instance.aclose()
            if version.stop_requested.is_set():
                # a server shutdown cancels versions without a stop decision: their state
                # does not matter any more, and running -> stopped is not a lifecycle move
                self._apply_if_known(lambda s: s.stopped(name, revision))
