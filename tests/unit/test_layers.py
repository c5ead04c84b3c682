"""Every definition on its floor: no module of ``caxton`` imports from a higher floor.

The units of layering are the subpackages of ``caxton`` and its top-level modules. ``FLOORS``
lists them top to bottom; a unit may import from its own unit and from any lower floor, never
from a higher floor nor from another unit of its own floor (siblings stay independent). Every
import counts: at module level and inside functions alike (a lazy import is still a
dependency), and under ``if TYPE_CHECKING:`` too (a type is a definition, and it has a floor):
a lower floor that needs something of a higher one declares a Protocol at its seam, as the
router does for the agents (``caxton.messaging.agents``).

Run as a script to print the import graph between units, the cycles among them at run time
(none is allowed) and the climbing imports: ``python tests/unit/test_layers.py``.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

import attrs
import pytest

import caxton

PACKAGE = Path(caxton.__file__).parent

#: Top to bottom. A unit may import only its own unit and units of lower floors.
FLOORS: tuple[frozenset[str], ...] = tuple(
    frozenset(floor)
    for floor in (
        {"__main__"},
        {"cli"},
        {"server", "workers"},
        {"http"},
        {"services"},
        {"security", "ops"},
        {"a2a"},
        {"agents"},
        {"messaging"},
        {"memory"},
        {"cluster"},
        {"usage"},
        {"llm", "wasm", "store", "logs"},
        {"config", "datadir", "components"},
        {"errors", "units", "events", "latency", "messages", "metrics"},
        {"tracing"},
    )
)
FLOOR_OF: dict[str, int] = {unit: level for level, floor in enumerate(FLOORS) for unit in floor}


@attrs.frozen(kw_only=True)
class Import:
    """One import statement of ``importer`` naming the module ``target``."""

    path: str
    line: int
    importer: str
    target: str
    type_checking: bool

    @property
    def source_unit(self) -> str:
        return unit_of(self.importer)

    @property
    def target_unit(self) -> str:
        return unit_of(self.target)


def unit_of(module: str) -> str:
    """``caxton.http.routes`` -> ``http``; ``caxton.errors`` -> ``errors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _type_checking_nodes(tree: ast.AST) -> set[int]:
    """Ids of every node inside an ``if TYPE_CHECKING:`` body."""
    inside: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for statement in node.body:
                inside.update(id(child) for child in ast.walk(statement))
    return inside


def imports_of(source: str, path: str, module: str, *, is_package: bool = False) -> list[Import]:
    """Every import of ``caxton`` modules in ``source`` (the text of ``module``)."""
    tree = ast.parse(source, filename=path)
    guarded = _type_checking_nodes(tree)
    package = module if is_package else module.rpartition(".")[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.Import, ast.ImportFrom)):
            continue
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif node.level:
            base = package.split(".")
            prefix = ".".join(base[: len(base) - (node.level - 1)])
            if node.module:
                targets = [f"{prefix}.{node.module}"]
            else:
                targets = [f"{prefix}.{alias.name}" for alias in node.names]
        elif node.module == "caxton":
            # ``from caxton import errors`` names a unit
            targets = [f"caxton.{alias.name}" for alias in node.names]
        elif node.module:
            targets = [node.module]
        for target in targets:
            if target.startswith("caxton."):
                found.append(
                    Import(
                        path=path,
                        line=node.lineno,
                        importer=module,
                        target=target,
                        type_checking=id(node) in guarded,
                    )
                )
    return found


def all_imports() -> list[Import]:
    found: list[Import] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        found.extend(
            imports_of(
                path.read_text(encoding="utf-8"),
                str(path.relative_to(PACKAGE.parent)),
                module_name(path),
                is_package=path.name == "__init__.py",
            )
        )
    return found


def climbs(found: list[Import]) -> list[str]:
    """One line per import that leaves its unit for a higher floor or a sibling."""
    problems = []
    for imp in found:
        source, target = imp.source_unit, imp.target_unit
        if source == target or not source or not target:
            continue
        if source not in FLOOR_OF or target not in FLOOR_OF:
            continue  # reported by test_every_unit_has_a_floor
        low, high = FLOOR_OF[source], FLOOR_OF[target]
        if high <= low:
            where = "the same floor" if high == low else f"floor {high}"
            problems.append(
                f"{imp.path}:{imp.line} imports {imp.target}: {source} (floor {low}) may not "
                f"import {target} ({where}); move the definition down, or hand the value in"
            )
    return problems


def units() -> set[str]:
    found = set()
    for path in PACKAGE.iterdir():
        if path.is_dir() and (path / "__init__.py").exists():
            found.add(path.name)
        elif path.suffix == ".py" and path.name != "__init__.py":
            found.add(path.stem)
    return found


def test_every_unit_has_a_floor() -> None:
    assert units() == set(FLOOR_OF), (
        "place every subpackage and top-level module of caxton in FLOORS "
        f"(missing: {sorted(units() - set(FLOOR_OF))}, gone: {sorted(set(FLOOR_OF) - units())})"
    )
    assert sum(len(floor) for floor in FLOORS) == len(FLOOR_OF)


def test_no_import_climbs_a_floor() -> None:
    problems = climbs(all_imports())
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("module", "source", "fragment"),
    [
        # the four misplaced pieces issue #14 found
        (
            "caxton.security.roles",
            "from caxton.http.routes import Role\n",
            "security (floor 5) may not import http (floor 3)",
        ),
        (
            "caxton.config.checks",
            "def f():\n    from caxton.security.gate import auth_required\n",
            "config (floor 13) may not import security (floor 5)",
        ),
        (
            "caxton.llm.resolve",
            "from caxton.agents.spec import LlmSpec\n",
            "llm (floor 12) may not import agents (floor 7)",
        ),
        (
            "caxton.ops.backup",
            "from caxton.security import gate\n",
            "ops (floor 5) may not import security (the same floor)",
        ),
    ],
)
def test_a_climb_is_named_with_its_file_line_and_floors(
    module: str, source: str, fragment: str
) -> None:
    path = module.replace(".", "/") + ".py"
    (problem,) = climbs(imports_of(source, path, module))
    assert problem.startswith(f"{path}:")
    assert fragment in problem


def test_type_checking_imports_count_too() -> None:
    source = "if TYPE_CHECKING:\n    from caxton.http import app\n"
    found = imports_of(source, "caxton/store/x.py", "caxton.store.x")
    assert [imp.type_checking for imp in found] == [True]
    assert climbs(found)


def test_relative_imports_resolve() -> None:
    found = imports_of("from ..http import app\n", "caxton/store/x.py", "caxton.store.x")
    assert [imp.target for imp in found] == ["caxton.http"]
    assert climbs(found)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one unit (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(unit: str) -> None:
        index[unit] = low[unit] = len(index)
        stack.append(unit)
        on_stack.add(unit)
        for nxt in sorted(edges.get(unit, ())):
            if nxt not in index:
                visit(nxt)
                low[unit] = min(low[unit], low[nxt])
            elif nxt in on_stack:
                low[unit] = min(low[unit], index[nxt])
        if low[unit] == index[unit]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == unit:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for unit in sorted(edges):
        if unit not in index:
            visit(unit)
    return found


def graph(found: list[Import]) -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for imp in found:
        if not imp.type_checking and imp.source_unit != imp.target_unit and imp.source_unit:
            edges[imp.source_unit].add(imp.target_unit)
    return edges


def test_units_form_no_cycle() -> None:
    assert _cycles(graph(all_imports())) == []


def main() -> None:
    found = all_imports()
    counts: dict[tuple[str, str], int] = defaultdict(int)
    for imp in found:
        if imp.source_unit != imp.target_unit and imp.source_unit:
            counts[imp.source_unit, imp.target_unit] += 0 if imp.type_checking else 1
    for (source, target), runtime in sorted(counts.items()):
        note = " (TYPE_CHECKING only)" if runtime == 0 else ""
        print(f"{source} -> {target}: {runtime}{note}")
    print("cycles:", _cycles(graph(found)) or "none")
    problems = climbs(found)
    print(f"climbs: {len(problems) or 'none'}", *problems, sep="\n")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
