"""Agents deployed through the API, kept under ``data_dir/deployed`` so they survive restarts.

Layout: ``deployed/<name>/versions/<content-hash>/agent.toml`` (plus ``module.wasm`` for WASM
agents) for each version deployed through the API, and ``deployed/<name>/active`` naming the
version that serves, so a promote or rollback survives a restart too. Every write goes to a
temporary name first and is renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import shutil
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from pathlib import Path


@attrs.frozen(kw_only=True)
class StoredAgent:
    name: str
    source: str
    content: bytes
    module: bytes | None


class DeploymentStore:
    """Blocking file operations; the registry calls them through ``trio.to_thread``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def source_for(self, name: str) -> str:
        """The source label of API-deployed agent ``name`` (its folder)."""
        return str(self.root / name)

    def save(self, name: str, content_hash: str, content: bytes, module: bytes | None) -> None:
        """Keep this version and make it the one that serves after a restart."""
        folder = self.root / name / "versions" / content_hash
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        for part in (self.root / name, self.root / name / "versions", folder):
            part.mkdir(mode=0o700, exist_ok=True)
        if module is not None:
            _write_atomic(folder / "module.wasm", module)
        _write_atomic(folder / "agent.toml", content)
        self.set_active(name, content_hash)

    def set_active(self, name: str, content_hash: str) -> bool:
        """Point ``name`` at a kept version; ``False`` when that version was never stored."""
        if not (self.root / name / "versions" / content_hash / "agent.toml").is_file():
            return False
        _write_atomic(self.root / name / "active", content_hash.encode())
        return True

    def prune(self, name: str, keep: set[str]) -> None:
        """Forget stored versions of ``name`` other than ``keep`` (and the active one)."""
        versions = self.root / name / "versions"
        if not versions.is_dir():
            return
        active = self._active(name)
        for folder in versions.iterdir():
            if folder.name not in keep and folder.name != active:
                shutil.rmtree(folder, ignore_errors=True)

    def delete(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)

    def load_all(self) -> list[StoredAgent]:
        if not self.root.is_dir():
            return []
        stored = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            active = self._active(folder.name)
            version = folder / "versions" / (active or "")
            if not active or not (version / "agent.toml").is_file():
                continue
            module_path = version / "module.wasm"
            stored.append(
                StoredAgent(
                    name=folder.name,
                    source=self.source_for(folder.name),
                    content=(version / "agent.toml").read_bytes(),
                    module=module_path.read_bytes() if module_path.is_file() else None,
                )
            )
        return stored

    def _active(self, name: str) -> str | None:
        try:
            return (self.root / name / "active").read_text().strip() or None
        except FileNotFoundError:
            return None


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    # owner-only: an agent file may hold an api_key (issue #13)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
