"""Agents deployed through the API, kept under ``data_dir/deployed`` so they survive restarts.

Each agent is a folder ``deployed/<name>/`` holding ``agent.toml`` and, for WASM agents
deployed with their module, ``module.wasm``. Writes go to a temporary name first and are
renamed into place, so a crash never leaves half a file.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import attrs


@attrs.frozen(kw_only=True)
class StoredAgent:
    name: str
    manifest_path: Path
    content: bytes
    module: bytes | None


class DeploymentStore:
    """Blocking file operations; the registry calls them through ``trio.to_thread``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def manifest_path(self, name: str) -> Path:
        return self.root / name / "agent.toml"

    def save(self, name: str, content: bytes, module: bytes | None) -> Path:
        folder = self.root / name
        folder.mkdir(parents=True, exist_ok=True)
        if module is not None:
            _write_atomic(folder / "module.wasm", module)
        elif (folder / "module.wasm").exists():
            (folder / "module.wasm").unlink()
        _write_atomic(folder / "agent.toml", content)
        return folder / "agent.toml"

    def delete(self, name: str) -> None:
        shutil.rmtree(self.root / name, ignore_errors=True)

    def load_all(self) -> list[StoredAgent]:
        if not self.root.is_dir():
            return []
        stored = []
        for folder in sorted(p for p in self.root.iterdir() if p.is_dir()):
            manifest = folder / "agent.toml"
            if not manifest.is_file():
                continue
            module_path = folder / "module.wasm"
            stored.append(
                StoredAgent(
                    name=folder.name,
                    manifest_path=manifest,
                    content=manifest.read_bytes(),
                    module=module_path.read_bytes() if module_path.is_file() else None,
                )
            )
        return stored


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
