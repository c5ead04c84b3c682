"""Turn what an operator deploys (.wasm bytes or .wat text) into a WebAssembly binary.

Pure and synchronous: the pool runs it in a worker thread because compiling WAT can take a while
for large modules.
"""

from __future__ import annotations

import hashlib
import re

import wasmtime

from caxton.wasm.errors import WasmBadModule

WASM_MAGIC = b"\x00asm"

# wasmtime renders WAT syntax errors as "<message>\n --> <anon>:LINE:COL\n  |\n N | text\n  | ^".
_WAT_LOCATION = re.compile(r"-->\s*<anon>:(\d+):(\d+)")


def content_hash(source: bytes | str) -> str:
    """Return the SHA-256 hex digest of a module source (text is hashed as UTF-8)."""
    data = source.encode() if isinstance(source, str) else source
    return hashlib.sha256(data).hexdigest()


def version_hash(manifest_hash: str, module: bytes) -> str:
    """Return the identity of one WASM agent version: BLAKE2b of its manifest's hash and module.

    A new module under the same manifest is a new version. The value names the version's folder
    in the deployments store, so it must not change between releases.
    """
    return hashlib.blake2b(manifest_hash.encode() + module, digest_size=16).hexdigest()


def looks_binary(source: bytes | str) -> bool:
    """Return whether ``source`` is (the start of) a binary module rather than WAT text.

    WAT text never contains NUL, so a NUL byte near the start marks a binary even when it is
    truncated before the end of the ``\\0asm`` magic.
    """
    return isinstance(source, bytes) and b"\x00" in source[:8]


def to_wasm_binary(source: bytes | str, *, source_name: str = "<module>") -> bytes:
    """Return the WebAssembly binary for ``source``, compiling WAT text when needed.

    Args:
        source: a binary module, or WAT as text or as UTF-8 bytes.
        source_name: shown in error messages (usually the file name).

    Raises:
        WasmBadModule: the text is not UTF-8, or has a WAT syntax error (the message names the
            line and column and quotes the line).
    """
    if looks_binary(source):
        assert isinstance(source, bytes)
        if not source.startswith(WASM_MAGIC):
            raise WasmBadModule(
                source_name,
                ["not a WebAssembly binary: the file does not start with the \\0asm magic"],
            )
        return source
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WasmBadModule(
                source_name,
                [f"neither a WebAssembly binary (no \\0asm magic) nor UTF-8 WAT text ({exc})"],
            ) from None
    else:
        text = source
    try:
        return bytes(wasmtime.wat2wasm(text))
    except wasmtime.WasmtimeError as exc:
        raise wat_syntax_error(str(exc), text, source_name=source_name) from None


def wat_syntax_error(message: str, text: str, *, source_name: str) -> WasmBadModule:
    """Build the :class:`WasmBadModule` for a WAT syntax error reported by wasmtime."""
    first = message.strip().splitlines()[0] if message.strip() else "syntax error"
    match = _WAT_LOCATION.search(message)
    if match is None:
        return WasmBadModule(source_name, [f"WAT syntax error: {first}"])
    line, column = int(match.group(1)), int(match.group(2))
    lines = text.splitlines()
    quoted = lines[line - 1] if 0 < line <= len(lines) else ""
    caret = " " * (column - 1) + "^"
    problem = (
        f"WAT syntax error at line {line}, column {column}: {first}\n"
        f"      {line} | {quoted}\n"
        f"      {' ' * len(str(line))} | {caret}"
    )
    return WasmBadModule(source_name, [problem], line=line, column=column)


def compile_error(exc: wasmtime.WasmtimeError, *, source_name: str) -> WasmBadModule:
    """Build the :class:`WasmBadModule` for a binary that wasmtime refuses to compile."""
    text = str(exc).strip()
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    # The useful part is the last "Caused by" line, e.g. "unexpected end-of-file (at offset 0x2d)".
    cause = lines[-1] if lines else "invalid module"
    cause = re.sub(r"^\d+:\s*", "", cause)
    head = lines[0] if lines else "failed to compile"
    detail = head if cause == head else f"{head}: {cause}"
    if "end-of-file" in cause:
        detail += " (is the .wasm file truncated?)"
    return WasmBadModule(source_name, [f"invalid WebAssembly module: {detail}"])
