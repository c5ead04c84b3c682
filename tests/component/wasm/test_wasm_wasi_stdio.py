"""wasi-stdio guests: stdin in, stdout out, a fresh sandboxed instance per message."""

from __future__ import annotations

import time

import pytest
import trio
import wasm_guests as g

from caxton.wasm import GuestHooks, WasmAgentFailed, WasmLimitExceeded, WasmLimits, WasmPool


async def test_stdin_is_the_message_and_stdout_the_reply(pool: WasmPool) -> None:
    message = b'{"performative":"request","content":"' + b"w" * 10_000 + b'"}'
    send, receive = g.chunk_stream()
    with trio.fail_after(10):
        agent = await pool.load(g.WASI_CAT, name="cat")
        reply = await agent.handle(message, stream=send)
    chunks = g.taken(receive)
    assert agent.abi == "wasi-stdio"
    assert reply.body == message
    assert b"".join(chunks) == message
    assert len(chunks) == reply.chunks >= 3  # one write per 4 KiB read: streamed


async def test_the_sandbox_has_a_program_name_only_and_a_fresh_instance(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.WASI_PROBE, name="probe")
        replies = [(await agent.handle(b"{}")).body for _ in range(2)]
    argc, envc, prestat_errno, runs = replies[0]
    assert argc == 1  # the program name, nothing else
    assert envc == 0  # no environment
    assert prestat_errno == 8  # EBADF: no preopened directory, so no filesystem
    assert runs == 1
    assert replies[1] == replies[0]  # state does not survive: a fresh instance each time


async def test_a_non_zero_exit_code_fails_the_call(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.WASI_EXIT_3, name="exit3")
        with pytest.raises(WasmAgentFailed) as failed:
            await agent.handle(b"{}")
    assert failed.value.status == 3


async def test_exit_code_zero_keeps_the_reply(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.WASI_EXIT_0, name="exit0")
        reply = await agent.handle(b"{}")
    assert reply.body == b"bye"


async def test_a_spinning_program_hits_its_limits(pool: WasmPool) -> None:
    with trio.fail_after(10):
        fuel = await pool.load(g.WASI_SPIN, WasmLimits(max_fuel=1_000_000), name="spin")
        with pytest.raises(WasmLimitExceeded) as by_fuel:
            await fuel.handle(b"{}")
        timed = await pool.load(
            g.WASI_SPIN, WasmLimits(max_fuel=10**15, max_execution_time_s=0.1), name="spin"
        )
        started = time.monotonic()
        with pytest.raises(WasmLimitExceeded) as by_time:
            await timed.handle(b"{}")
    assert by_fuel.value.limit == "fuel"
    assert by_time.value.limit == "time"
    assert time.monotonic() - started < 0.1 + 0.1


async def test_a_reply_over_the_size_limit_is_refused(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.WASI_CAT, WasmLimits(max_message_size=5000), name="cat")
        with pytest.raises(WasmLimitExceeded) as exceeded:
            # 6000 bytes in: a first write of 4096 bytes fits, the next 1904 bytes do not.
            await agent.handle(b"a" * 6000)
    assert exceeded.value.limit == "message_size"
    assert exceeded.value.observed == 6000


async def test_stderr_goes_to_the_log_hook(pool: WasmPool) -> None:
    lines: list[tuple[int, str]] = []
    source = g.wasi_module(
        """(data (i32.const 64) "oops\\n")
           (func (export "_start")
             (i32.store (i32.const 0) (i32.const 64))
             (i32.store (i32.const 4) (i32.const 5))
             (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16))))"""
    )
    with trio.fail_after(10):
        agent = await pool.load(
            source, name="err", hooks=GuestHooks(log=lambda lvl, s: lines.append((lvl, s)))
        )
        reply = await agent.handle(b"{}")
    assert reply.body == b""
    assert lines == [(2, "oops")]


async def test_concurrent_messages_run_in_parallel(pool: WasmPool) -> None:
    limits = WasmLimits(max_fuel=10**15, max_execution_time_s=0.3)
    with trio.fail_after(10):
        agent = await pool.load(g.WASI_SPIN, limits, name="spin")
        failures: list[str] = []

        async def one() -> None:
            try:
                await agent.handle(b"{}")
            except WasmLimitExceeded as exc:
                failures.append(exc.limit)

        started = time.monotonic()
        async with trio.open_nursery() as nursery:
            for _ in range(2):
                nursery.start_soon(one)
        elapsed = time.monotonic() - started
    assert failures == ["time", "time"]
    assert elapsed < 0.3 * 2  # both ran at once (the pool allows 4 concurrent calls)
