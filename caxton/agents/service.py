"""API-side agent operations: deploy from a request body, update, remove, restore on start.

Agents deployed through the API are validated, loaded, and only then written to the deployment
store (so what is stored is what served), and restored from there on start: the version that
served and its canary, if any. When several instances share the store, :meth:`AgentService.
apply_stored` brings one instance in line with what another wrote.
"""

from __future__ import annotations

import base64
import binascii
import logging
from typing import TYPE_CHECKING, Any

import attrs
import trio

from caxton.agents.deployments import CanaryState
from caxton.agents.spec import SpecReport, WasmAgentSpec, check_agent_file
from caxton.agents.versions import AgentState
from caxton.errors import BadRequest, CaxtonError, Conflict
from caxton.wasm.source import version_hash

if TYPE_CHECKING:
    from pathlib import Path

    from caxton.agents.deployments import Deployments, StoredAgent
    from caxton.agents.registry import Registry
    from caxton.agents.spec import AnyAgentSpec
    from caxton.cluster import NoticeBus

LOGGER = logging.getLogger("caxton.agents")
#: Agent files checked at once off the event loop (TOML parse and checks are CPU work).
CHECK_THREADS = 2
#: The notice kind announcing a restart to the other instances.
RESTART_NOTICE = "agent_restart"


class DeployFailed(CaxtonError):
    """The agent file was valid but the version did not start (bad module, failing init)."""

    code = "AGENT_LOAD_FAILED"
    http_status = 422


class AgentService:
    """Deploys from API bodies into the registry and the deployment store.

    Args:
        registry: the running registry.
        store: where API-deployed agents are kept (files, or PostgreSQL tables).
        agents_dir: the watched directory (agents from there are removed by deleting files).
        settle_timeout_s: how long a deploy waits for the new version to load.
        notices: where a restart is announced to the other instances on the same database
            (they restart their copy); None for one instance.
    """

    def __init__(
        self,
        registry: Registry,
        store: Deployments,
        *,
        agents_dir: Path,
        settle_timeout_s: float = 30.0,
        notices: NoticeBus | None = None,
    ) -> None:
        self.registry = registry
        self.notices = notices
        self.store = store
        self.agents_dir = agents_dir
        self.settle_timeout_s = settle_timeout_s
        self._check_limiter = trio.CapacityLimiter(CHECK_THREADS)
        # one change of an agent at a time on this instance: an API call here and an
        # apply_stored for a change elsewhere must not interleave their reads and writes
        self._changing: dict[str, trio.Lock] = {}

    async def check(
        self, content: str | bytes, *, require_module: bool, source: str = "<request>"
    ) -> SpecReport:
        """Validate an agent file from a request in a worker thread, never on the event loop.

        The checks run in time linear in the file's size (bounded by ``MAX_SPEC_BYTES``), but a
        megabyte of TOML is still tens of milliseconds of CPU that /health must not wait for.

        Cancellation: the caller stops waiting at once; the bounded check finishes in its thread.
        """
        return await trio.to_thread.run_sync(
            lambda: check_agent_file(content, source=source, require_module=require_module),
            limiter=self._check_limiter,
            abandon_on_cancel=True,
        )

    async def restore(self) -> int:
        """Deploy every stored agent again (start-up); return how many were found.

        The active versions start together, without waiting for one another; an agent with a
        canary then waits for its active version to load and starts its canary.
        """
        stored = await self.store.load_all()
        canaries: list[tuple[StoredAgent, int]] = []
        for item in stored:
            try:
                spec = await self._stored_spec(item.content, item.module, item.source)
                revision = self.registry.deploy(_activating(spec), module=item.module)
            except CaxtonError as exc:
                LOGGER.error("stored agent %s not restored: %s", item.name, exc.message)
                continue
            if item.canary is not None:
                canaries.append((item, revision))
        for item, revision in canaries:
            try:
                await self.registry.wait_settled(
                    item.name, revision, timeout_s=self.settle_timeout_s
                )
                await self._serve_canary(item)
            except CaxtonError as exc:
                LOGGER.error("stored canary of %s not restored: %s", item.name, exc.message)
        return len(stored)

    async def apply_stored(self, name: str) -> None:
        """Bring this instance's registry in line with what the store says of ``name``.

        Another instance changed ``name`` (a deploy, a canary, a promote, a rollback or a
        removal): the stored active version is deployed if it is not what serves here, the
        stored canary state is applied, and the agent is removed if the store no longer has
        it (only when it is API-deployed here: an agent from a file stays). The store is read,
        never written.

        Raises:
            DeployFailed: the stored version did not start here; what served keeps serving.
            AgentSpecError: the stored file no longer validates (a newer release's checks).
            CaxtonError: the store cannot be read, or the canary could not be applied.

        Cancellation:
            Stops waiting at once; a version already started keeps loading and is then
            applied by the registry as usual.
        """
        async with self._lock(name):
            stored = await self.store.load(name)
            agent = self.registry.state.agents.get(name)
            if stored is None:
                if agent is not None and agent.source == self.store.source_for(name):
                    self.registry.remove(name)
                return
            await self._serve_active(stored)
            await self._serve_canary(stored)

    async def deploy(
        self, content: str, module_b64: str | None, *, replace: str | None = None
    ) -> dict[str, Any]:
        """Deploy a new agent (``replace=None``) or a new version of ``replace``.

        Raises:
            AgentSpecError: the file does not validate (422, every problem listed).
            Conflict: a new agent's name is taken (409).
            NotFound: ``replace`` names no agent (404).
            DeployFailed: the version did not start; a running version keeps serving.
        """
        module = _decode_module(module_b64)
        report = await self.check(content, require_module=module is None)
        probe = self._spec_from(report, module)
        name = probe.name
        if replace is not None and name != replace:
            raise BadRequest(
                f"the file declares name = {name!r} but the URL names {replace!r}; they must match",
                details={"file_name": name, "url_name": replace},
            )
        async with self._lock(name):
            return await self._deploy(name, probe, content, module, replace=replace)

    async def _deploy(
        self,
        name: str,
        probe: AnyAgentSpec,
        content: str,
        module: bytes | None,
        *,
        replace: str | None,
    ) -> dict[str, Any]:
        known = name in self.registry.state.agents
        if replace is None and (
            known or any(f.name == name for f in self.registry.invalid_files())
        ):
            raise Conflict(
                f"an agent named {name!r} already exists; use PUT /api/v1/agents/{name} to "
                "deploy a new version of it",
                details={"name": name},
            )
        if replace is not None and not known:
            self.registry.state.get(name)  # raises AgentNotFound
        spec = attrs.evolve(probe, source=self.store.source_for(name))
        revision = self.registry.deploy(spec, module=module, take_over=replace is not None)
        entry = await self.registry.wait_settled(name, revision, timeout_s=self.settle_timeout_s)
        if entry.state is AgentState.FAILED:
            if not known:
                self.registry.remove(name)
            raise DeployFailed(
                f"agent {name!r} version {spec.version} did not start: {entry.error}",
                details={"name": name, "version": spec.version, "error": entry.error},
            )
        await self.store.save(name, spec.content_hash, content.encode(), module)
        await self.persist_active(name)
        return self.registry.agent_view(name)

    async def restart(self, name: str) -> dict[str, Any]:
        """Restart ``name`` blue-green here, then tell the other instances to restart theirs
        (a notice: what is stored does not change). The agent's view, with the revision.

        Raises:
            AgentNotFound: no such agent (404).
        """
        revision = self.registry.restart(name)
        entry = await self.registry.wait_settled(name, revision, timeout_s=self.settle_timeout_s)
        if self.notices is not None:
            try:
                await self.notices.publish(RESTART_NOTICE, {"name": name})
            except CaxtonError as exc:  # restarted here; the others keep their running copy
                LOGGER.warning("restart of %s not announced to other instances: %s", name, exc)
        return {**self.registry.agent_view(name), "restarted_revision": entry.revision}

    def restart_announced(self, name: str) -> None:
        """Another instance restarted ``name``: restart this instance's copy, if it has one."""
        if name in self.registry.state.agents:
            self.registry.restart(name)

    async def set_canary(
        self, name: str, *, version: str, traffic_percentage: float
    ) -> dict[str, Any]:
        """Give a kept version a share of new conversations; the agent's view."""
        async with self._lock(name):
            await self.registry.set_canary(
                name, version=version, traffic_percentage=traffic_percentage
            )
            await self.persist_active(name)
            return self.registry.agent_view(name)

    async def promote(self, name: str) -> dict[str, Any]:
        """Make the canary the stable version; the agent's view."""
        async with self._lock(name):
            await self.registry.promote(name)
            await self.persist_active(name)
            return self.registry.agent_view(name)

    async def rollback(self, name: str, *, to_version: str | None = None) -> dict[str, Any]:
        """End the canary, or go back to ``to_version`` (or the previous version)."""
        async with self._lock(name):
            await self.registry.rollback(name, to_version=to_version)
            await self.persist_active(name)
        return self.registry.agent_view(name)

    async def persist_active(self, name: str) -> None:
        """Record which version of an API-deployed agent serves, and prune dropped versions
        (a restart restores what served, canary share included)."""
        agent = self.registry.state.agents.get(name)
        if agent is None or agent.source != self.store.source_for(name):
            return
        active = agent.active_entry
        kept = {entry.spec.content_hash for entry in agent.entries}
        if active is not None:
            canary_entry = agent.entry(agent.canary.revision) if agent.canary else None
            canary = (
                CanaryState(
                    content_hash=canary_entry.spec.content_hash,
                    traffic_percentage=agent.canary.traffic_percentage,
                )
                if canary_entry is not None and agent.canary is not None
                else None
            )
            await self.store.set_active(name, active.spec.content_hash, canary=canary)
        await self.store.prune(name, kept)

    async def remove(self, name: str) -> None:
        """Remove an API-deployed agent; agents from files are removed by deleting the file."""
        view = self.registry.agent_view(name)
        source = str(view["source"])
        if source != self.store.source_for(name):
            raise Conflict(
                f"agent {name!r} comes from the file {source}; delete or rename that file and "
                "the watcher removes the agent",
                details={"name": name, "source": source},
            )
        async with self._lock(name):
            self.registry.remove(name)
            await self.store.delete(name)

    def _lock(self, name: str) -> trio.Lock:
        lock = self._changing.get(name)
        if lock is None:
            lock = self._changing[name] = trio.Lock()
        return lock

    async def _stored_spec(self, content: bytes, module: bytes | None, source: str) -> AnyAgentSpec:
        report = await self.check(content, require_module=module is None, source=source)
        return self._spec_from(report, module)

    async def _serve_active(self, stored: StoredAgent) -> None:
        """Make the stored active version the one that serves here (waiting for it)."""
        name = stored.name
        agent = self.registry.state.agents.get(name)
        if agent is not None and agent.source == stored.source:
            active = agent.active_entry
            if active is not None and active.spec.content_hash == stored.content_hash:
                return
            canary = agent.entry(agent.canary.revision) if agent.canary else None
            if (
                canary is not None
                and canary.spec.content_hash == stored.content_hash
                and canary.state is AgentState.RUNNING
            ):
                await self.registry.promote(name)  # the canary was promoted elsewhere
                return
        spec = await self._stored_spec(stored.content, stored.module, stored.source)
        revision = self.registry.deploy(_activating(spec), module=stored.module, take_over=True)
        entry = await self.registry.wait_settled(name, revision, timeout_s=self.settle_timeout_s)
        if entry.state is AgentState.FAILED:
            raise DeployFailed(
                f"stored agent {name!r} version {spec.version} did not start: {entry.error}",
                details={"name": name, "version": spec.version, "error": entry.error},
            )

    async def _serve_canary(self, stored: StoredAgent) -> None:
        """Give the stored canary its share here, or end a canary the store no longer has."""
        name = stored.name
        agent = self.registry.state.agents.get(name)
        if agent is None or agent.active is None:
            return
        want = stored.canary
        if want is None:
            if agent.canary is not None:
                await self.registry.rollback(name)  # ends the canary
            return
        current = agent.canary
        entry = agent.entry(current.revision) if current else None
        if (
            current is not None
            and entry is not None
            and entry.spec.content_hash == want.content_hash
            and current.traffic_percentage == want.traffic_percentage
        ):
            return
        kept = next(
            (e for e in reversed(agent.entries) if e.spec.content_hash == want.content_hash),
            None,
        )
        if kept is not None and kept.revision != agent.active:
            # set_canary takes the newest kept entry of a version number: this one?
            newest = next(e for e in reversed(agent.entries) if e.version == kept.version)
            if newest.revision == kept.revision:
                await self.registry.set_canary(
                    name, version=kept.version, traffic_percentage=want.traffic_percentage
                )
                return
        spec = await self._stored_spec(want.content, want.module, stored.source)
        spec = attrs.evolve(
            spec,
            deployment=attrs.evolve(
                spec.deployment, strategy="canary", canary_percentage=want.traffic_percentage
            ),
        )
        revision = self.registry.deploy(spec, module=want.module)
        entry = await self.registry.wait_settled(name, revision, timeout_s=self.settle_timeout_s)
        if entry.state is AgentState.FAILED:
            raise DeployFailed(
                f"stored canary of {name!r} version {spec.version} did not start: {entry.error}",
                details={"name": name, "version": spec.version, "error": entry.error},
            )

    def _spec_from(self, report: SpecReport, module: bytes | None) -> AnyAgentSpec:
        spec = report.spec_or_raise()
        if isinstance(spec, WasmAgentSpec):
            if module is None:
                raise BadRequest(
                    f"agent {spec.name!r} is a WASM agent: send the module as base64 in "
                    '"wasm_module" together with the manifest in "manifest"',
                    details={"name": spec.name},
                )
            spec = attrs.evolve(spec, content_hash=version_hash(spec.content_hash, module))
        elif module is not None:
            raise BadRequest(
                "wasm_module was sent, but the manifest has no [wasm] table; add [wasm] or "
                "drop wasm_module"
            )
        return spec


def _activating(spec: AnyAgentSpec) -> AnyAgentSpec:
    """``spec`` deployed so that it serves once loaded: a stored active version whose file asks
    for a canary deploy is active all the same."""
    if spec.deployment.strategy != "canary":
        return spec
    return attrs.evolve(spec, deployment=attrs.evolve(spec.deployment, strategy="blue-green"))


def _decode_module(module_b64: str | None) -> bytes | None:
    if module_b64 is None:
        return None
    try:
        return base64.b64decode(module_b64, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(
            "wasm_module is not valid base64; encode the .wasm (or .wat) file with base64"
        ) from None
