"""Which ABI a module speaks, decided from its exports, and whether its imports are allowed.

The sans-IO core of deploy-time validation: :func:`describe_module` turns a compiled module into
plain values, :func:`choose_abi` judges them and lists every problem at once (DESIGN §4.2).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import attrs
import wasmtime

from caxton.wasm.errors import WasmBadModule

Abi = Literal["caxton-v1", "wasi-stdio"]

CAXTON_V1: Abi = "caxton-v1"
WASI_STDIO: Abi = "wasi-stdio"

HOST_MODULE = "caxton"
WASI_PREVIEW1 = "wasi_snapshot_preview1"
WASI_MODULES = frozenset({WASI_PREVIEW1, "wasi_unstable"})

ExternKind = Literal["func", "memory", "table", "global", "other"]


@attrs.frozen
class Signature:
    """A function type as value-type names, e.g. ``(("i32", "i32"), ("i32",))``."""

    params: tuple[str, ...]
    results: tuple[str, ...]

    def __str__(self) -> str:
        results = f" -> {', '.join(self.results)}" if self.results else ""
        return f"({', '.join(self.params)}){results}"


@attrs.frozen
class Extern:
    """One import or export: its kind, and its signature when it is a function."""

    kind: ExternKind
    signature: Signature | None = None

    def __str__(self) -> str:
        return f"func{self.signature}" if self.signature is not None else self.kind


@attrs.frozen
class ModuleShape:
    """The imports and exports of a module, as plain values."""

    imports: tuple[tuple[str, str, Extern], ...]
    exports: Mapping[str, Extern]


def _sig(params: Sequence[str], results: Sequence[str]) -> Extern:
    return Extern("func", Signature(tuple(params), tuple(results)))


# caxton-v1 guest exports (name -> required type) and host imports (DESIGN §4.2).
V1_REQUIRED_EXPORTS: Mapping[str, Extern] = {
    "memory": Extern("memory"),
    "caxton_alloc": _sig(["i32"], ["i32"]),
    "handle_message": _sig(["i32", "i32"], ["i32"]),
}
V1_OPTIONAL_EXPORTS: Mapping[str, Extern] = {"agent_init": _sig([], ["i32"])}
V1_HOST_FUNCTIONS: Mapping[str, Extern] = {
    "reply": _sig(["i32", "i32"], []),
    "send_message": _sig(["i32", "i32"], ["i32"]),
    "log": _sig(["i32", "i32", "i32"], []),
    "now_ms": _sig([], ["i64"]),
}
WASI_START: Extern = _sig([], [])


def _extern(ty: object) -> Extern:
    if isinstance(ty, wasmtime.FuncType):
        return _sig([str(p) for p in ty.params], [str(r) for r in ty.results])
    if isinstance(ty, wasmtime.MemoryType):
        return Extern("memory")
    if isinstance(ty, wasmtime.TableType):
        return Extern("table")
    if isinstance(ty, wasmtime.GlobalType):
        return Extern("global")
    return Extern("other")


def describe_module(module: wasmtime.Module) -> ModuleShape:
    """Return the imports and exports of a compiled module as plain values."""
    imports = tuple((imp.module, imp.name or "", _extern(imp.type)) for imp in module.imports)
    exports = {exp.name: _extern(exp.type) for exp in module.exports}
    return ModuleShape(imports=imports, exports=exports)


def choose_abi(shape: ModuleShape, *, source: str = "<module>") -> Abi:
    """Return the ABI ``shape`` speaks, or raise listing everything that is wrong with it.

    A module exporting ``handle_message`` is ``caxton-v1``; otherwise one exporting ``_start`` is
    ``wasi-stdio``.

    Raises:
        WasmBadModule: missing or mistyped exports, or imports the ABI does not provide.
    """
    if "handle_message" in shape.exports:
        problems = _caxton_v1_problems(shape)
        abi = CAXTON_V1
    elif "_start" in shape.exports:
        problems = _wasi_stdio_problems(shape)
        abi = WASI_STDIO
    else:
        missing = [name for name in V1_REQUIRED_EXPORTS if name not in shape.exports]
        exported = ", ".join(sorted(shape.exports)) or "nothing"
        problems = [
            "the module speaks no known ABI: caxton-v1 needs the exports "
            f"{', '.join(missing)} (missing), wasi-stdio needs `_start`; it exports {exported}"
        ]
    if problems:
        raise WasmBadModule(source, problems)
    return abi


def _caxton_v1_problems(shape: ModuleShape) -> list[str]:
    problems: list[str] = []
    missing = [name for name in V1_REQUIRED_EXPORTS if name not in shape.exports]
    if missing:
        problems.append(f"caxton-v1 module is missing the exports: {', '.join(missing)}")
    for name, wanted in {**V1_REQUIRED_EXPORTS, **V1_OPTIONAL_EXPORTS}.items():
        got = shape.exports.get(name)
        if got is not None and got != wanted:
            problems.append(f"export `{name}` must be {wanted}, found {got}")
    for module, name, got in shape.imports:
        if module in WASI_MODULES:
            problems.append(
                f"import `{module}.{name}`: WASI is not available to caxton-v1 agents; use the "
                "`caxton` host functions, or export `_start` instead of `handle_message` to "
                "build a wasi-stdio agent"
            )
        elif module != HOST_MODULE:
            problems.append(
                f"import `{module}.{name}`: caxton-v1 agents may import only from the "
                f"`{HOST_MODULE}` module"
            )
        elif name not in V1_HOST_FUNCTIONS:
            known = ", ".join(V1_HOST_FUNCTIONS)
            problems.append(f"import `{module}.{name}` does not exist; the host provides: {known}")
        elif got != V1_HOST_FUNCTIONS[name]:
            problems.append(
                f"import `{module}.{name}` must be {V1_HOST_FUNCTIONS[name]}, found {got}"
            )
    return problems


def _wasi_stdio_problems(shape: ModuleShape) -> list[str]:
    problems: list[str] = []
    if shape.exports["_start"] != WASI_START:
        problems.append(f"export `_start` must be {WASI_START}, found {shape.exports['_start']}")
    for module, name, _got in shape.imports:
        if module == HOST_MODULE:
            problems.append(
                f"import `{module}.{name}`: the caxton host functions are only available to "
                "caxton-v1 agents (export `handle_message`); wasi-stdio agents use stdin/stdout"
            )
        elif module != WASI_PREVIEW1:
            problems.append(
                f"import `{module}.{name}`: wasi-stdio agents may import only WASI "
                f"(`{WASI_PREVIEW1}`)"
            )
    return problems
