"""Deploy-time checks: every malformed or disallowed module is a WASM_BAD_MODULE with a reason."""

from __future__ import annotations

import pytest
import trio
import wasm_guests as g
import wasmtime

from caxton.wasm import WasmBadModule, WasmPool


async def bad(pool: WasmPool, source: bytes | str, **kwargs: str) -> WasmBadModule:
    with trio.fail_after(10), pytest.raises(WasmBadModule) as refused:
        await pool.load(source, **kwargs)
    error = refused.value
    assert (error.code, error.http_status) == ("WASM_BAD_MODULE", 422)
    return error


async def test_examples_load_with_the_caxton_v1_abi(pool: WasmPool) -> None:
    with trio.fail_after(10):
        for name in ("echo", "counter"):
            agent = await pool.load((g.AGENTS / f"{name}.wat").read_bytes(), name=name)
            assert agent.abi == "caxton-v1"


async def test_the_abi_is_chosen_from_the_exports(pool: WasmPool) -> None:
    with trio.fail_after(10):
        wasi = await pool.load(g.WASI_CAT)
        v1 = await pool.load(wasmtime.wat2wasm(g.UNREACHABLE))
    assert (wasi.abi, v1.abi) == ("wasi-stdio", "caxton-v1")


async def test_a_caxton_v1_module_may_not_import_wasi(pool: WasmPool) -> None:
    error = await bad(pool, g.IMPORTS_WASI)
    assert "wasi_snapshot_preview1.fd_write" in error.message
    assert "WASI is not available to caxton-v1" in error.message


async def test_an_unknown_host_function_is_named(pool: WasmPool) -> None:
    error = await bad(pool, g.IMPORTS_UNKNOWN_HOST_FUNCTION)
    assert "caxton.open_socket` does not exist" in error.message
    assert "reply, send_message, log, now_ms" in error.message


async def test_missing_exports_are_listed(pool: WasmPool) -> None:
    error = await bad(pool, g.MISSING_EXPORTS)
    assert error.problems == ["caxton-v1 module is missing the exports: caxton_alloc"]


async def test_a_module_with_no_known_abi_is_refused(pool: WasmPool) -> None:
    error = await bad(pool, g.NO_ABI)
    assert "memory, caxton_alloc, handle_message" in error.message
    assert "_start" in error.message


async def test_a_mistyped_export_is_refused(pool: WasmPool) -> None:
    source = g.v1_module('(func (export "handle_message") (param i32) (result i32) (i32.const 0))')
    error = await bad(pool, source)
    assert "`handle_message` must be func(i32, i32) -> i32, found func(i32) -> i32" in error.message


async def test_a_truncated_binary_is_refused(pool: WasmPool) -> None:
    binary = wasmtime.wat2wasm(g.UNREACHABLE)
    error = await bad(pool, bytes(binary[: len(binary) // 2]), source_name="agent.wasm")
    assert "truncated" in error.message
    assert error.message.startswith("agent.wasm:")
    error = await bad(pool, b"\x00as")
    assert "\\0asm" in error.message


async def test_garbage_bytes_are_refused(pool: WasmPool) -> None:
    error = await bad(pool, b"\xff\xfe not a module")
    assert "neither a WebAssembly binary" in error.message


async def test_a_wat_syntax_error_shows_the_line(pool: WasmPool) -> None:
    source = '(module\n  (memory (export "memory") 1)\n  (func (export "f") (bogus))\n)\n'
    error = await bad(pool, source, source_name="broken.wat")
    assert (error.line, error.column) == (3, 23)
    assert error.message.startswith("broken.wat:3:23:")
    assert "line 3" in error.message
    assert '(func (export "f") (bogus))' in error.message


async def test_an_invalid_module_reports_the_validation_error(pool: WasmPool) -> None:
    error = await bad(pool, '(module (func (export "f") (result i32) (i64.const 1)))')
    assert "type mismatch" in error.message


async def test_a_failing_agent_init_is_a_load_error(pool: WasmPool) -> None:
    error = await bad(pool, g.INIT_FAILS, name="init")
    assert "agent_init returned status 7" in error.message
    assert isinstance(error.__cause__, Exception)


async def test_a_wasi_stdio_module_may_not_import_caxton_functions(pool: WasmPool) -> None:
    error = await bad(pool, g.WASI_IMPORTS_HOST)
    assert "only available to caxton-v1" in error.message


async def test_an_unknown_wasi_function_is_refused(pool: WasmPool) -> None:
    error = await bad(pool, g.WASI_UNKNOWN_FUNCTION)
    assert "no_such_call" in error.message


async def test_compiled_modules_are_cached_by_content(pool: WasmPool) -> None:
    with trio.fail_after(10):
        first = await pool.load(g.UNREACHABLE, name="a")
        second = await pool.load(g.UNREACHABLE, name="b")
        await pool.load(g.SPIN, name="c")
    assert first.content_hash == second.content_hash
    assert pool.statistics().cached_modules == 2
