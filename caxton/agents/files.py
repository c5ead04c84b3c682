"""Reading agent files from disk: size check, validation, and the WASM module beside them.

Blocking; callers run :func:`read_agent_file` through ``trio.to_thread``. A manifest's
content hash is combined with its module's bytes, so editing ``echo.wat`` alone is a new
version of ``echo`` too.
"""

from __future__ import annotations

import re
from pathlib import Path

import attrs

from caxton.agents.problems import AgentSpecError, SpecProblem
from caxton.agents.spec import SpecReport, WasmAgentSpec, check_agent_file, check_spec_size
from caxton.wasm.source import version_hash

MODULE_SUFFIXES = (".wasm", ".wat")
MAX_MODULE_BYTES = 64 * 1024 * 1024
_WASM_TABLE = re.compile(r"^\s*\[wasm\]", re.M)


@attrs.frozen(kw_only=True)
class AgentFile:
    """One manifest as read from disk.

    Attributes:
        report: validation result (``report.spec`` carries the combined content hash).
        text: the file text when it decoded, for naming broken files.
        module: the WASM module bytes, for WASM manifests that name one.
        module_path: where the module was read from.
        kind: ``wasm`` when the file has a ``[wasm]`` table, else ``config``.
    """

    report: SpecReport
    text: str | None
    module: bytes | None = None
    module_path: Path | None = None
    kind: str = "config"


def read_agent_file(path: Path) -> AgentFile | None:
    """Read and validate ``path``; ``None`` when the file vanished meanwhile."""
    source = str(path)
    try:
        size = path.stat().st_size
        check_spec_size(size, source=source)
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except AgentSpecError as exc:
        return AgentFile(report=SpecReport.failed(source, exc.problems), text=None)
    except OSError as exc:
        read_problem = SpecProblem.unplaced(
            source, f"cannot read {path}: {exc.strerror}", suggestion="check the file's permissions"
        )
        return AgentFile(report=SpecReport.failed(source, [read_problem]), text=None)
    text = raw.decode("utf-8", errors="replace")
    kind = "wasm" if _WASM_TABLE.search(text) else "config"
    report = check_agent_file(raw, source=source)
    spec = report.spec
    if not isinstance(spec, WasmAgentSpec) or spec.module is None:
        return AgentFile(report=report, text=text, kind=kind)
    module_path = path.parent / spec.module
    module_problem = _module_problem(source, module_path)
    if module_problem is not None:
        report = SpecReport.failed(source, [module_problem])
        return AgentFile(report=report, text=text, kind=kind, module_path=module_path)
    module = module_path.read_bytes()
    combined = version_hash(spec.content_hash, module)
    report = attrs.evolve(report, spec=attrs.evolve(spec, content_hash=combined))
    return AgentFile(report=report, text=text, module=module, module_path=module_path, kind=kind)


def _module_problem(source: str, module_path: Path) -> SpecProblem | None:
    try:
        size = module_path.stat().st_size
    except FileNotFoundError:
        return SpecProblem.unplaced(
            source,
            f"the module {module_path} named by [wasm] module does not exist",
            key="wasm.module",
            suggestion="put the .wasm or .wat file next to the manifest, or fix the path",
        )
    except OSError as exc:
        return SpecProblem.unplaced(
            source,
            f"cannot read the module {module_path}: {exc.strerror}",
            key="wasm.module",
        )
    if module_path.suffix not in MODULE_SUFFIXES:
        return SpecProblem.unplaced(
            source,
            f"the module {module_path.name} is neither .wasm nor .wat",
            key="wasm.module",
        )
    if size > MAX_MODULE_BYTES:
        return SpecProblem.unplaced(
            source,
            f"the module {module_path.name} is {size} bytes, over {MAX_MODULE_BYTES}",
            key="wasm.module",
        )
    return None
