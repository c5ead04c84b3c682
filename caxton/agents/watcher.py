"""The watcher component: agents_dir -> validate -> blue-green swap.

Linux inotify (:mod:`caxton.agents.dir_events`, a thread asleep until a file changes) or
else ``watchfiles.awatch`` (polling with ``agents.force_polling`` for network filesystems)
reports changes, debounced; each changed manifest is read, validated and handed
to the registry, which skips content it already runs. Deletions are applied before creations,
so a rename is a removal plus a deploy and never a name conflict with itself. A change to a
``.wasm``/``.wat`` module reloads every manifest that names it.
"""

from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import trio
from watchfiles import awatch

from caxton.agents.dir_events import DirectoryEvents, open_directory_events
from caxton.agents.files import MODULE_SUFFIXES, AgentFile, read_agent_file
from caxton.agents.problems import SpecProblem
from caxton.agents.spec import SpecReport
from caxton.agents.versions import DuplicateAgentName
from caxton.errors import StartupError

if TYPE_CHECKING:
    from collections.abc import Callable

    from watchfiles import Change

    from caxton.agents.registry import Registry

LOGGER = logging.getLogger("caxton.watcher")
MANIFEST_SUFFIX = ".toml"


def _relevant(_change: Change | None, path: str) -> bool:
    name = path.rsplit("/", 1)[-1]
    return not name.startswith(".") and name.endswith((MANIFEST_SUFFIX, *MODULE_SUFFIXES))


#: How often watchfiles' thread looks at the stop event (only with ``agents.force_polling`` or
#: where inotify cannot be had: :mod:`caxton.agents.dir_events`). Each look takes the GIL: at
#: 10 ms it was most of an idle server's CPU (issue #21); a quarter of a second is the price
#: at shutdown.
STOP_CHECK_MS = 250


class AgentsWatcher:
    """Keeps the registry in step with the files of ``directory``.

    Args:
        directory: the agents directory (it may be read-only).
        registry: where valid agents are deployed.
        debounce_ms: changes closer together than this are handled as one batch.
        force_polling: poll instead of inotify (network filesystems).
        paused: while it returns True (safe mode), file changes are held, not applied; call
            :meth:`resume` when it turns False.
    """

    def __init__(
        self,
        directory: Path,
        registry: Registry,
        *,
        debounce_ms: int = 100,
        force_polling: bool = False,
        paused: Callable[[], bool] | None = None,
    ) -> None:
        self.directory = directory
        self.paused = paused or (lambda: False)
        self._held: set[Path] = set()
        self.registry = registry
        self.debounce_ms = debounce_ms
        self.force_polling = force_polling
        self._modules: dict[Path, Path] = {}
        self._lock = trio.Lock()
        self._thread_limiter = trio.CapacityLimiter(1)
        self.batches = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load every agent file, report started, then follow changes until cancelled.

        Cancellation:
            Stops watching at once; agents keep running (the registry owns them).
        """
        await trio.to_thread.run_sync(self._ensure_directory)
        # inotify is set up before the first read of the directory, so that a change made
        # while it is read is seen afterwards (a second look at a file is harmless)
        events = None
        if not self.force_polling:
            events = await trio.to_thread.run_sync(open_directory_events, self.directory)
        try:
            await self._rescan()
            await self.registry.wait_all_settled(timeout_s=self.registry.load_timeout_s)
            LOGGER.info("watching %s for agent files", self.directory)
            if events is not None:
                follow = functools.partial(self._follow_events, events)
                # the waiting thread cannot be interrupted: this wakes it, it returns at once
                stop = events.stop
            else:
                # watchfiles waits in a worker thread that checks this event every
                # STOP_CHECK_MS, so setting it on cancellation stops the watcher within that
                stopping = trio.Event()
                follow, stop = functools.partial(self._follow, stopping), stopping.set
            async with trio.open_nursery() as nursery:
                nursery.start_soon(follow)
                task_status.started()
                try:
                    await trio.sleep_forever()
                finally:
                    stop()
        finally:
            if events is not None:
                events.close()

    async def _follow_events(self, events: DirectoryEvents) -> None:
        """Apply what inotify reports (:mod:`caxton.agents.dir_events`) until stopped."""
        debounce_s = self.debounce_ms / 1000
        while True:
            changes = await trio.to_thread.run_sync(
                events.wait, debounce_s, limiter=self._thread_limiter
            )
            if changes is None:
                return
            if changes.overflow:
                LOGGER.warning(
                    "too many changes in %s at once for inotify's queue: re-reading it",
                    self.directory,
                )
                await self.rescan()
            paths = {
                self.directory / name
                for name in changes.names
                if _relevant(None, str(self.directory / name))
            }
            if paths:
                await self._apply(paths)
            if changes.gone:
                LOGGER.warning(
                    "agents_dir %s was removed or moved: its agents keep running, but changes "
                    "are no longer followed until the server restarts",
                    self.directory,
                )
                return

    async def _follow(self, stop: trio.Event) -> None:
        async for changes in awatch(
            self.directory,
            watch_filter=_relevant,
            debounce=self.debounce_ms,
            step=STOP_CHECK_MS,
            stop_event=stop,
            force_polling=self.force_polling,
            poll_delay_ms=100,
            recursive=False,
        ):
            await self._apply({Path(path) for _, path in changes})

    async def _apply(self, paths: set[Path]) -> None:
        if self.paused():
            self._held |= paths
            LOGGER.warning(
                "safe mode: not applying changes to %s; they are applied when safe mode "
                "is disabled",
                ", ".join(sorted(p.name for p in paths)),
            )
            return
        await self.sync(paths)

    def _ensure_directory(self) -> None:
        if self.directory.is_dir():
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StartupError(
                f"agents_dir {self.directory} does not exist and cannot be created "
                f"({exc.strerror}); create it or set server.agents_dir"
            ) from None

    async def rescan(self) -> None:
        """Compare the whole directory with what is loaded (SIGHUP; held in safe mode)."""
        if self.paused():
            LOGGER.warning("safe mode: agents_dir is re-read when safe mode is disabled")
            return
        await self._rescan()

    async def resume(self, paused: bool) -> None:
        """Apply the changes held while paused (a safe-mode listener; ignores ``True``)."""
        if paused:
            return
        held, self._held = self._held, set()
        if held:
            LOGGER.info("safe mode lifted: applying %d held agents_dir changes", len(held))
        await self._rescan()

    async def _rescan(self) -> None:
        present = await trio.to_thread.run_sync(self._manifests)
        known = {Path(f.source) for f in self.registry.invalid_files()}
        known |= {
            Path(agent.source)
            for agent in self.registry.state.agents.values()
            if Path(agent.source).parent == self.directory
        }
        await self.sync(set(present) | known)

    def _manifests(self) -> list[Path]:
        return sorted(
            p
            for p in self.directory.iterdir()
            if p.suffix == MANIFEST_SUFFIX and not p.name.startswith(".") and p.is_file()
        )

    async def sync(self, paths: set[Path]) -> None:
        """Apply the changes of ``paths`` (manifests and modules) to the registry."""
        async with self._lock:
            self.batches += 1
            manifests = {p for p in paths if p.suffix == MANIFEST_SUFFIX}
            for path in paths:
                if path.suffix in MODULE_SUFFIXES:
                    manifests |= {m for m, module in self._modules.items() if module == path}
            files = {}
            for path in sorted(manifests):
                files[path] = await trio.to_thread.run_sync(read_agent_file, path)
            for path, read in files.items():
                if read is None:
                    self._modules.pop(path, None)
                    self.registry.forget_source(str(path))
            for path, read in files.items():
                if read is not None:
                    self._deploy(path, read)

    def _deploy(self, path: Path, read: AgentFile) -> None:
        if read.module_path is not None:
            self._modules[path] = read.module_path
        spec = read.report.spec
        if spec is None:
            self.registry.record_invalid(read.report, text=read.text, kind=read.kind)
            return
        try:
            self.registry.deploy(spec, module=read.module)
        except DuplicateAgentName as exc:
            problem = SpecProblem.unplaced(str(path), exc.message, key="name")
            report = SpecReport.failed(str(path), [problem])
            self.registry.record_invalid(report, text=read.text, kind=read.kind)
