"""The pure core of the agent registry: versions, lifecycle states, canary and rollback.

The registry is a frozen value. Each event (a file deployed, a version loaded, an operator's
promote) is a method that returns a :class:`Step`: the next registry value and the
:class:`Decision` values the async shell has to carry out (start a version, stop one, publish a
status change). The shell owns the nursery and the clock; this module owns the rules:

* the last :data:`KEPT_VERSIONS` versions of an agent are kept for rollback;
* a state only changes along :data:`TRANSITIONS` (anything else raises
  :class:`InvalidTransition`);
* a new version takes traffic only once it has loaded, so a version that fails to load never
  replaces the one that serves (blue-green);
* a canary takes ``traffic_percentage`` of conversations, chosen by a hash of the conversation
  id, so a conversation stays on one version;
* one name belongs to one file; a second file declaring it is refused, naming both files.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from typing import Final

import attrs

from caxton.agents.spec import AgentSpec, AnyAgentSpec
from caxton.errors import Conflict, JSONValue, NotFound, ValidationFailed

KEPT_VERSIONS: Final = 5
"""How many versions of one agent are kept (the serving ones are never dropped)."""

CANARY_BUCKETS: Final = 100


class AgentState(enum.Enum):
    """Lifecycle state of one agent version."""

    LOADING = "loading"
    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"
    FAILED = "failed"


TRANSITIONS: Final[Mapping[AgentState, frozenset[AgentState]]] = {
    # A load can be abandoned (the agent was removed meanwhile): loading -> stopped.
    AgentState.LOADING: frozenset({AgentState.RUNNING, AgentState.FAILED, AgentState.STOPPED}),
    AgentState.RUNNING: frozenset({AgentState.DRAINING, AgentState.FAILED}),
    AgentState.DRAINING: frozenset({AgentState.STOPPED, AgentState.FAILED}),
    AgentState.STOPPED: frozenset({AgentState.LOADING}),
    AgentState.FAILED: frozenset({AgentState.LOADING, AgentState.STOPPED}),
}
"""The allowed state changes; a version is restarted by loading it again."""

_LIVE: Final = frozenset({AgentState.LOADING, AgentState.RUNNING, AgentState.DRAINING})


class OnLoad(enum.Enum):
    """What a loading version does once it has loaded."""

    ACTIVATE = "activate"
    CANARY = "canary"
    DISCARD = "discard"


# -- errors ----------------------------------------------------------------------------------


class AgentNotFound(NotFound):
    """No agent has this name."""

    code = "AGENT_NOT_FOUND"

    def __init__(self, name: str, known: tuple[str, ...]) -> None:
        listing = ", ".join(sorted(known)) if known else "none"
        super().__init__(
            f"no agent is named {name!r} (agents: {listing})",
            details={"name": name},
        )


class VersionNotFound(NotFound):
    """The agent has no kept version with this number."""

    code = "VERSION_NOT_FOUND"

    def __init__(self, name: str, version: str, kept: tuple[str, ...]) -> None:
        super().__init__(
            f"agent {name!r} has no kept version {version!r}; kept versions: {', '.join(kept)}",
            details={"name": name, "version": version, "kept": list(kept)},
        )


class DuplicateAgentName(Conflict):
    """Two files declare the same agent name."""

    code = "AGENT_NAME_CONFLICT"

    def __init__(self, name: str, *, existing: str, new: str) -> None:
        self.name = name
        self.existing = existing
        self.new = new
        super().__init__(
            f"agent name {name!r} is declared by {existing} and again by {new}; names are "
            f"unique, so {new} is not loaded. Rename the agent in one of the two files.",
            details={"name": name, "existing_source": existing, "new_source": new},
        )


class InvalidTransition(Conflict):
    """A version was asked to change state in a way the lifecycle does not allow."""

    code = "INVALID_STATE_TRANSITION"

    def __init__(self, name: str, entry: VersionEntry, target: AgentState) -> None:
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[entry.state])) or "none"
        super().__init__(
            f"agent {name!r} version {entry.version} (revision {entry.revision}) cannot go "
            f"from {entry.state.value} to {target.value}; from {entry.state.value} it can go "
            f"to: {allowed}",
            details={
                "name": name,
                "revision": entry.revision,
                "from": entry.state.value,
                "to": target.value,
            },
        )


class NoPreviousVersion(Conflict):
    """A rollback was asked for, but there is no older version to go back to."""

    code = "NO_PREVIOUS_VERSION"

    def __init__(self, name: str, kept: tuple[str, ...]) -> None:
        super().__init__(
            f"agent {name!r} has no previous version to roll back to "
            f"(kept versions: {', '.join(kept) or 'none'}); deploy a fixed version instead",
            details={"name": name, "kept": list(kept)},
        )


class NoCanary(Conflict):
    """A promote was asked for, but the agent has no canary."""

    code = "NO_CANARY"

    def __init__(self, name: str) -> None:
        super().__init__(
            f"agent {name!r} has no canary to promote; start one with "
            f"POST /api/v1/agents/{name}/canary {{version, traffic_percentage}}",
            details={"name": name},
        )


class VersionBusy(Conflict):
    """The version cannot serve traffic now (it is draining, or still loading)."""

    code = "VERSION_BUSY"


# -- values ----------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class VersionEntry:
    """One version of an agent.

    Attributes:
        revision: unique and increasing per agent; a re-deploy of the same version number gets a
            new revision.
        spec: the validated spec of this version.
        state: the lifecycle state.
        on_load: what happens once the version has loaded (``None`` when it is not loading).
        canary_percentage: the traffic share it takes when ``on_load`` is :attr:`OnLoad.CANARY`.
        error: the last load or run error.
    """

    revision: int
    spec: AnyAgentSpec
    state: AgentState
    on_load: OnLoad | None = None
    canary_percentage: float = 0.0
    error: str | None = None

    @property
    def version(self) -> str:
        """The version number the spec declares."""
        return self.spec.version


@attrs.frozen(kw_only=True)
class Canary:
    """A version taking ``traffic_percentage`` of new conversations."""

    revision: int
    version: str
    traffic_percentage: float


@attrs.frozen(kw_only=True)
class AgentVersions:
    """Every kept version of one agent, and which ones take traffic.

    Attributes:
        source: the file (or ``"<api>"``) that owns the name.
        entries: kept versions, oldest first.
        active: revision serving stable traffic, or ``None`` before a first successful load.
        canary: the canary, if any.
        next_revision: the revision the next deploy gets.
    """

    name: str
    source: str
    entries: tuple[VersionEntry, ...] = ()
    active: int | None = None
    canary: Canary | None = None
    next_revision: int = 1

    def entry(self, revision: int) -> VersionEntry | None:
        """Return the entry with ``revision``, or ``None``."""
        return next((e for e in self.entries if e.revision == revision), None)

    @property
    def active_entry(self) -> VersionEntry | None:
        """The entry serving stable traffic."""
        return None if self.active is None else self.entry(self.active)

    @property
    def status(self) -> AgentState:
        """The agent's status: that of the serving version, else that of the newest one."""
        serving = self.active_entry
        if serving is not None:
            return serving.state
        return self.entries[-1].state if self.entries else AgentState.STOPPED

    @property
    def type(self) -> str:
        """``config`` or ``wasm``, from the newest spec."""
        return self.entries[-1].spec.kind if self.entries else AgentSpec.kind

    def kept_versions(self) -> tuple[str, ...]:
        """Version numbers of the kept entries, oldest first, without repeats."""
        return tuple(dict.fromkeys(e.version for e in self.entries))

    def traffic_percentage(self, revision: int) -> float:
        """Share of new conversations that ``revision`` takes."""
        canary_share = self.canary.traffic_percentage if self.canary else 0.0
        if self.canary is not None and revision == self.canary.revision:
            return canary_share
        if revision == self.active:
            return 100.0 - canary_share
        return 0.0

    def versions_view(self) -> list[dict[str, JSONValue]]:
        """Return ``{version, revision, status, active, traffic_percentage}``, newest first."""
        return [
            {
                "version": e.version,
                "revision": e.revision,
                "status": e.state.value,
                "active": e.revision == self.active,
                "traffic_percentage": self.traffic_percentage(e.revision),
            }
            for e in reversed(self.entries)
        ]


# -- decisions -------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class StartVersion:
    """Load this version (compile, instantiate, init), then report ``loaded`` or ``load_failed``."""

    name: str
    revision: int
    spec: AnyAgentSpec


@attrs.frozen(kw_only=True)
class StopVersion:
    """Stop this version, then report ``stopped``.

    Attributes:
        drain: finish in-flight requests under the shutdown deadline first (blue-green); ``False``
            cancels them at once (``immediate`` strategy, or a version that never took traffic).
    """

    name: str
    revision: int
    drain: bool


@attrs.frozen(kw_only=True)
class StatusChanged:
    """A version changed state; publish ``agent_status_changed``."""

    name: str
    revision: int
    version: str
    old: AgentState
    new: AgentState
    error: str | None = None


@attrs.frozen(kw_only=True)
class TrafficChanged:
    """Which versions take traffic changed; publish ``agent_updated``."""

    name: str
    active: int | None
    canary: Canary | None


@attrs.frozen(kw_only=True)
class Unchanged:
    """A deploy brought content identical to a loading or running version; nothing to do."""

    name: str
    revision: int


@attrs.frozen(kw_only=True)
class AgentRemoved:
    """The agent is gone from the registry; publish ``agent_deleted``."""

    name: str


Decision = StartVersion | StopVersion | StatusChanged | TrafficChanged | Unchanged | AgentRemoved


@attrs.frozen(kw_only=True)
class Step:
    """The result of one event: the next registry and what the shell must do, in order."""

    registry: VersionRegistry
    decisions: tuple[Decision, ...] = ()


def canary_bucket(conversation_id: str) -> int:
    """Map a conversation id to a bucket 0-99; the same id always lands in the same bucket."""
    digest = hashlib.blake2b(conversation_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % CANARY_BUCKETS


# -- the registry ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class VersionRegistry:
    """Every agent and its versions; a frozen value, changed only through events."""

    agents: Mapping[str, AgentVersions] = attrs.field(factory=dict)
    issued: int = 0
    """The highest revision ever issued: revisions stay unique even when a name is removed
    and deployed again, so a stopping old version is never mistaken for a new one."""

    def get(self, name: str) -> AgentVersions:
        """Return the agent named ``name``.

        Raises:
            AgentNotFound: when no agent has that name.
        """
        agent = self.agents.get(name)
        if agent is None:
            raise AgentNotFound(name, tuple(self.agents))
        return agent

    def names_from(self, source: str) -> tuple[str, ...]:
        """Return the names of the agents the file ``source`` defines."""
        return tuple(name for name, agent in self.agents.items() if agent.source == source)

    def choose(self, name: str, conversation_id: str) -> VersionEntry | None:
        """Return the version that serves ``conversation_id``, or ``None`` if none serves.

        A running canary takes the conversations whose :func:`canary_bucket` is below its
        ``traffic_percentage``; every other conversation goes to the active version.
        """
        agent = self.get(name)
        canary = agent.canary
        if canary is not None and canary_bucket(conversation_id) < canary.traffic_percentage:
            entry = agent.entry(canary.revision)
            if entry is not None and entry.state is AgentState.RUNNING:
                return entry
        return agent.active_entry

    # -- events --------------------------------------------------------------------------------

    def deploy(self, spec: AnyAgentSpec, *, take_over: bool = False) -> Step:
        """A valid spec arrived (file created or changed, or an API deploy).

        Args:
            spec: the new version; ``spec.source`` names the file that declares it.
            take_over: let ``spec.source`` replace the file that owns the name (an API ``PUT``);
                otherwise a second file declaring the name is refused.

        Raises:
            DuplicateAgentName: when another file owns the name and ``take_over`` is false.
        """
        existing = self.agents.get(spec.name)
        if existing is not None and existing.source != spec.source and not take_over:
            raise DuplicateAgentName(spec.name, existing=existing.source, new=spec.source)
        agent = existing or AgentVersions(
            name=spec.name, source=spec.source, next_revision=self.issued + 1
        )
        newest = agent.entries[-1] if agent.entries else None
        if (
            newest is not None
            and newest.spec.content_hash == spec.content_hash
            and newest.state in (AgentState.LOADING, AgentState.RUNNING)
        ):
            return Step(
                registry=self, decisions=(Unchanged(name=spec.name, revision=newest.revision),)
            )
        edit = _Edit(attrs.evolve(agent, source=spec.source))
        for entry in agent.entries:
            if entry.state is AgentState.LOADING:
                edit.stop(entry.revision)
        on_load, share = _on_load(spec, has_active=agent.active is not None)
        edit.add_and_start(spec, on_load=on_load, canary_percentage=share)
        return self._apply(edit)

    def loaded(self, name: str, revision: int) -> Step:
        """A version finished loading and can take traffic.

        Raises:
            InvalidTransition: when the version was not loading.
        """
        edit = _Edit(self.get(name))
        entry = edit.require(revision)
        edit.move(revision, AgentState.RUNNING)
        if entry.on_load is OnLoad.ACTIVATE:
            edit.activate(revision)
        elif entry.on_load is OnLoad.CANARY:
            edit.make_canary(revision, entry.canary_percentage)
        else:
            edit.stop(revision)
        return self._apply(edit)

    def load_failed(self, name: str, revision: int, *, error: str) -> Step:
        """A version could not load; the serving version, if any, keeps serving."""
        edit = _Edit(self.get(name))
        edit.move(revision, AgentState.FAILED, error=error)
        return self._apply(edit)

    def crashed(self, name: str, revision: int, *, error: str) -> Step:
        """A running or draining version failed; it stops taking traffic until restarted."""
        edit = _Edit(self.get(name))
        edit.move(revision, AgentState.FAILED, error=error)
        return self._apply(edit)

    def stopped(self, name: str, revision: int) -> Step:
        """A version has stopped. Versions of agents removed meanwhile are ignored."""
        agent = self.agents.get(name)
        if agent is None or agent.entry(revision) is None:
            return Step(registry=self)
        edit = _Edit(agent)
        edit.move(revision, AgentState.STOPPED)
        return self._apply(edit)

    def set_canary(self, name: str, *, version: str, traffic_percentage: float) -> Step:
        """Let a kept ``version`` take ``traffic_percentage`` (1-100) of new conversations.

        Raises:
            ValidationFailed: when the percentage is outside 1-100.
            VersionNotFound: when no kept version has that number.
            VersionBusy: when the version serves stable traffic or is draining.
        """
        if not 0 < traffic_percentage <= 100:
            raise ValidationFailed(
                f"traffic_percentage must be between 1 and 100, got {traffic_percentage:g}",
                details={"traffic_percentage": traffic_percentage},
            )
        agent = self.get(name)
        target = _find_version(agent, version)
        if target.revision == agent.active:
            raise VersionBusy(
                f"agent {name!r} version {version} already serves stable traffic; "
                "a canary must be another version"
            )
        edit = _Edit(agent)
        edit.bring_up(target, OnLoad.CANARY, traffic_percentage)
        return self._apply(edit)

    def promote(self, name: str) -> Step:
        """Make the canary the stable version; the old stable version drains.

        Raises:
            NoCanary: when the agent has no canary.
            VersionBusy: when the canary has not loaded.
        """
        agent = self.get(name)
        if agent.canary is None:
            raise NoCanary(name)
        entry = agent.entry(agent.canary.revision)
        if entry is None or entry.state is not AgentState.RUNNING:
            state = entry.state.value if entry else "gone"
            raise VersionBusy(f"agent {name!r} canary is {state}, not running; cannot promote it")
        edit = _Edit(agent)
        edit.activate(entry.revision)
        return self._apply(edit)

    def rollback(self, name: str, *, to_version: str | None = None) -> Step:
        """Go back to ``to_version``, or end the canary, or go back to the previous version.

        Without ``to_version``, a running canary is ended (its traffic returns to the stable
        version); with no canary, the newest kept version older than the stable one (and not
        failed) becomes stable again.

        Raises:
            NoPreviousVersion: when there is nothing older to go back to.
            VersionNotFound: when no kept version has number ``to_version``.
            VersionBusy: when the target is draining.
        """
        agent = self.get(name)
        edit = _Edit(agent)
        if to_version is None and agent.canary is not None:
            edit.end_canary()
            return self._apply(edit)
        if to_version is not None:
            target = _find_version(agent, to_version, exclude=agent.active)
        else:
            target = _previous(agent)
        edit.bring_up(target, OnLoad.ACTIVATE, 0.0)
        return self._apply(edit)

    def restart(self, name: str) -> Step:
        """Start a fresh instance of the serving version (or of the newest one, when none serves).

        The fresh instance takes over once it has loaded and the old one drains, so a restart
        drops no traffic; a restart of a failed agent simply loads it again.

        Raises:
            AgentNotFound: when no agent has that name.
        """
        agent = self.get(name)
        entry = agent.active_entry or (agent.entries[-1] if agent.entries else None)
        if entry is None:
            raise NoPreviousVersion(name, ())
        edit = _Edit(agent)
        for other in agent.entries:
            if other.state is AgentState.LOADING:
                edit.stop(other.revision)
        edit.add_and_start(entry.spec, on_load=OnLoad.ACTIVATE, canary_percentage=0.0)
        return self._apply(edit)

    def remove(self, name: str) -> Step:
        """The agent was deleted: stop every live version and forget the agent."""
        agent = self.get(name)
        edit = _Edit(agent)
        for entry in agent.entries:
            edit.stop(entry.revision, drain=True)
        agents = {k: v for k, v in self.agents.items() if k != name}
        decisions = (*edit.decisions, AgentRemoved(name=name))
        return Step(
            registry=VersionRegistry(agents=agents, issued=self.issued), decisions=decisions
        )

    def remove_source(self, source: str) -> Step:
        """The file ``source`` was deleted: remove every agent it declared."""
        registry = self
        decisions: list[Decision] = []
        for name in self.names_from(source):
            step = registry.remove(name)
            registry = step.registry
            decisions.extend(step.decisions)
        return Step(registry=registry, decisions=tuple(decisions))

    def _apply(self, edit: _Edit) -> Step:
        agent = edit.finish()
        agents = {**self.agents, agent.name: agent}
        issued = max(self.issued, agent.next_revision - 1)
        return Step(
            registry=VersionRegistry(agents=agents, issued=issued),
            decisions=tuple(edit.decisions),
        )


def _on_load(spec: AnyAgentSpec, *, has_active: bool) -> tuple[OnLoad, float]:
    """A canary deploy takes its share of traffic; anything else (or a first version) activates."""
    deployment = spec.deployment
    if deployment.strategy == "canary" and has_active:
        return OnLoad.CANARY, deployment.canary_percentage
    return OnLoad.ACTIVATE, 0.0


def _find_version(
    agent: AgentVersions, version: str, *, exclude: int | None = None
) -> VersionEntry:
    """Return the newest kept entry with ``version``, skipping revision ``exclude``."""
    for entry in reversed(agent.entries):
        if entry.version == version and entry.revision != exclude:
            return entry
    raise VersionNotFound(agent.name, version, agent.kept_versions())


def _previous(agent: AgentVersions) -> VersionEntry:
    """Return the newest entry older than the active one that did not fail."""
    if agent.active is not None:
        for entry in reversed(agent.entries):
            if entry.revision < agent.active and entry.state is not AgentState.FAILED:
                return entry
    raise NoPreviousVersion(agent.name, agent.kept_versions())


class _Edit:
    """Changes to one agent while handling one event, and the decisions they call for."""

    def __init__(self, agent: AgentVersions) -> None:
        self.agent = agent
        self.decisions: list[Decision] = []

    def require(self, revision: int) -> VersionEntry:
        entry = self.agent.entry(revision)
        if entry is None:
            raise VersionNotFound(
                self.agent.name, f"revision {revision}", self.agent.kept_versions()
            )
        return entry

    def replace(self, entry: VersionEntry) -> None:
        entries = tuple(entry if e.revision == entry.revision else e for e in self.agent.entries)
        self.agent = attrs.evolve(self.agent, entries=entries)

    def move(self, revision: int, state: AgentState, *, error: str | None = None) -> VersionEntry:
        """Change the state of ``revision``, enforcing :data:`TRANSITIONS`."""
        entry = self.require(revision)
        if state not in TRANSITIONS[entry.state]:
            raise InvalidTransition(self.agent.name, entry, state)
        keep_intent = state is AgentState.LOADING
        moved = attrs.evolve(
            entry,
            state=state,
            error=error if error is not None else (None if keep_intent else entry.error),
            on_load=entry.on_load if keep_intent else None,
        )
        self.replace(moved)
        self.decisions.append(
            StatusChanged(
                name=self.agent.name,
                revision=revision,
                version=entry.version,
                old=entry.state,
                new=state,
                error=error,
            )
        )
        if state is not AgentState.RUNNING:
            self._drop_traffic(revision)
        return moved

    def add_and_start(
        self, spec: AnyAgentSpec, *, on_load: OnLoad, canary_percentage: float
    ) -> None:
        revision = self.agent.next_revision
        entry = VersionEntry(
            revision=revision,
            spec=spec,
            state=AgentState.LOADING,
            on_load=on_load,
            canary_percentage=canary_percentage,
        )
        self.agent = attrs.evolve(
            self.agent, entries=(*self.agent.entries, entry), next_revision=revision + 1
        )
        self.decisions.append(
            StatusChanged(
                name=self.agent.name,
                revision=revision,
                version=spec.version,
                old=AgentState.STOPPED,
                new=AgentState.LOADING,
            )
        )
        self.decisions.append(StartVersion(name=self.agent.name, revision=revision, spec=spec))

    def bring_up(self, entry: VersionEntry, on_load: OnLoad, canary_percentage: float) -> None:
        """Give ``entry`` traffic now if it runs, else (re)load it with that intent."""
        if entry.state is AgentState.RUNNING:
            if on_load is OnLoad.ACTIVATE:
                self.activate(entry.revision)
            else:
                self.make_canary(entry.revision, canary_percentage)
            return
        if entry.state is AgentState.DRAINING:
            raise VersionBusy(
                f"agent {self.agent.name!r} version {entry.version} is still draining; "
                "try again once it has stopped"
            )
        if entry.state is not AgentState.LOADING:
            self.move(entry.revision, AgentState.LOADING)
            self.decisions.append(
                StartVersion(name=self.agent.name, revision=entry.revision, spec=entry.spec)
            )
        current = self.require(entry.revision)
        self.replace(attrs.evolve(current, on_load=on_load, canary_percentage=canary_percentage))

    def activate(self, revision: int) -> None:
        """Make ``revision`` stable; the previous one stops (draining unless immediate)."""
        previous = self.agent.active
        canary = self.agent.canary
        self.agent = attrs.evolve(
            self.agent,
            active=revision,
            canary=None if canary is not None and canary.revision == revision else canary,
        )
        if previous is not None and previous != revision:
            new_spec = self.require(revision).spec
            self.stop(previous, drain=new_spec.deployment.strategy != "immediate")
        self._traffic_changed()

    def make_canary(self, revision: int, traffic_percentage: float) -> None:
        old = self.agent.canary
        entry = self.require(revision)
        self.agent = attrs.evolve(
            self.agent,
            canary=Canary(
                revision=revision, version=entry.version, traffic_percentage=traffic_percentage
            ),
        )
        if old is not None and old.revision != revision:
            self.stop(old.revision, drain=True)
        self._traffic_changed()

    def end_canary(self) -> None:
        canary = self.agent.canary
        if canary is None:
            return
        self.agent = attrs.evolve(self.agent, canary=None)
        self.stop(canary.revision, drain=True)
        self._traffic_changed()

    def stop(self, revision: int, *, drain: bool = False) -> None:
        """Stop ``revision`` if it is live; a loading version is abandoned."""
        entry = self.require(revision)
        if entry.state is AgentState.RUNNING:
            self.move(revision, AgentState.DRAINING)
        elif entry.state is AgentState.LOADING:
            self.replace(attrs.evolve(entry, on_load=OnLoad.DISCARD))
            drain = False
        else:
            return
        self.decisions.append(StopVersion(name=self.agent.name, revision=revision, drain=drain))

    def _drop_traffic(self, revision: int) -> None:
        """A version that stops running loses its canary traffic (stable stays, to show status)."""
        canary = self.agent.canary
        if canary is not None and canary.revision == revision:
            self.agent = attrs.evolve(self.agent, canary=None)
            self._traffic_changed()

    def _traffic_changed(self) -> None:
        self.decisions.append(
            TrafficChanged(name=self.agent.name, active=self.agent.active, canary=self.agent.canary)
        )

    def finish(self) -> AgentVersions:
        """Return the agent with at most :data:`KEPT_VERSIONS` entries, serving ones kept."""
        serving = {self.agent.active, self.agent.canary.revision if self.agent.canary else None}
        entries = list(self.agent.entries)
        while len(entries) > KEPT_VERSIONS:
            droppable = next(
                (e for e in entries if e.revision not in serving and e.state not in _LIVE),
                None,
            )
            if droppable is None:
                break
            entries.remove(droppable)
        return attrs.evolve(self.agent, entries=tuple(entries))


__all__ = [
    "CANARY_BUCKETS",
    "KEPT_VERSIONS",
    "TRANSITIONS",
    "AgentNotFound",
    "AgentRemoved",
    "AgentState",
    "AgentVersions",
    "Canary",
    "Decision",
    "DuplicateAgentName",
    "InvalidTransition",
    "NoCanary",
    "NoPreviousVersion",
    "OnLoad",
    "StartVersion",
    "StatusChanged",
    "Step",
    "StopVersion",
    "TrafficChanged",
    "Unchanged",
    "VersionBusy",
    "VersionEntry",
    "VersionNotFound",
    "VersionRegistry",
]
