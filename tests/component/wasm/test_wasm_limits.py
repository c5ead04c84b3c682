"""Every way a guest can run away ends in its own error, and the agent keeps working."""

from __future__ import annotations

import time

import pytest
import trio
import wasm_guests as g

from caxton.wasm import WasmLimitExceeded, WasmLimits, WasmPool, WasmTrap

MIB = 1024 * 1024


async def test_an_infinite_loop_runs_out_of_fuel(pool: WasmPool) -> None:
    limits = WasmLimits(max_fuel=2_000_000, max_execution_time_s=20)
    with trio.fail_after(10):
        agent = await pool.load(g.SPIN, limits, name="spinner")
        started = time.monotonic()
        with pytest.raises(WasmLimitExceeded) as exceeded:
            await agent.handle(b"{}")
    assert time.monotonic() - started < 2
    error = exceeded.value
    assert (error.code, error.http_status, error.limit) == ("WASM_LIMIT_EXCEEDED", 422, "fuel")
    assert error.details["key"] == "max_fuel"
    assert "max_fuel = 2000000" in error.message


async def test_an_infinite_loop_hits_the_wall_clock_limit(pool: WasmPool) -> None:
    limits = WasmLimits(max_fuel=10**15, max_execution_time_s=0.2)
    with trio.fail_after(10):
        agent = await pool.load(g.SPIN, limits, name="spinner")
        started = time.monotonic()
        with pytest.raises(WasmLimitExceeded) as exceeded:
            await agent.handle(b"{}")
        elapsed = time.monotonic() - started
    assert exceeded.value.limit == "time"
    assert "max_execution_time" in exceeded.value.message
    assert 0.2 <= elapsed < 0.2 + 0.1


async def test_memory_grow_fails_inside_the_guest_at_the_limit(pool: WasmPool) -> None:
    limits = WasmLimits(max_memory_bytes=2 * MIB)
    with trio.fail_after(10):
        agent = await pool.load(g.GROW_UNTIL_REFUSED, limits, name="hungry")
        reply = await agent.handle(b"{}")
    pages = int.from_bytes(reply.body, "little")
    assert pages * 65536 == 2 * MIB  # grew up to the limit, then memory.grow returned -1


async def test_writing_past_refused_growth_traps(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.GROW_AND_OVERRUN, WasmLimits(max_memory_bytes=MIB), name="x")
        with pytest.raises(WasmTrap) as trapped:
            await agent.handle(b"{}")
    assert trapped.value.trap == "memory_out_of_bounds"


async def test_initial_memory_over_the_limit_is_refused_at_load(pool: WasmPool) -> None:
    with trio.fail_after(10), pytest.raises(WasmLimitExceeded) as exceeded:
        await pool.load(g.BIG_INITIAL_MEMORY, WasmLimits(max_memory_bytes=MIB), name="big")
    assert exceeded.value.limit == "memory"
    assert exceeded.value.observed == 200 * 65536


async def test_infinite_recursion_is_a_stack_overflow_trap(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.RECURSE, name="deep")
        with pytest.raises(WasmTrap) as trapped:
            await agent.handle(b"{}")
    error = trapped.value
    assert (error.code, error.http_status, error.trap) == ("WASM_TRAP", 500, "stack_overflow")


async def test_unreachable_is_a_trap(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.UNREACHABLE, name="oops")
        with pytest.raises(WasmTrap) as trapped:
            await agent.handle(b"{}")
    assert trapped.value.trap == "unreachable"
    assert "unreachable" in trapped.value.message


async def test_a_reply_over_the_size_limit_is_refused(pool: WasmPool) -> None:
    limits = WasmLimits(max_message_size=100)
    with trio.fail_after(10):
        agent = await pool.load(g.TRIPLE, limits, name="chatty")
        ok = await agent.handle(b"x" * 33)  # 99 bytes of reply: fits
        send, receive = g.chunk_stream()
        with pytest.raises(WasmLimitExceeded) as exceeded:
            await agent.handle(b"y" * 34, stream=send)  # 102 bytes
    delivered = g.taken(receive)
    assert ok.body == b"x" * 99
    assert exceeded.value.limit == "message_size"
    assert exceeded.value.observed == 102
    assert delivered == [b"y" * 34, b"y" * 34]  # the chunk that overflows is never delivered


async def test_an_endless_reply_is_stopped_by_the_size_limit(pool: WasmPool) -> None:
    limits = WasmLimits(max_message_size=10_000, max_fuel=10**12, max_execution_time_s=20)
    with trio.fail_after(10):
        agent = await pool.load(g.FLOOD, limits, name="flood")
        started = time.monotonic()
        with pytest.raises(WasmLimitExceeded) as exceeded:
            await agent.handle(b"z" * 1000)
    assert exceeded.value.limit == "message_size"
    assert time.monotonic() - started < 1


async def test_a_message_over_the_size_limit_is_refused_before_the_guest_runs(
    pool: WasmPool,
) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.COUNTER_THAT_TRAPS, WasmLimits(max_message_size=50), name="c")
        with pytest.raises(WasmLimitExceeded) as exceeded:
            await agent.handle(b"a" * 51)
        reply = await agent.handle(b"a" * 50)
    assert exceeded.value.limit == "message_size"
    assert exceeded.value.observed == 51
    assert "incoming message" in exceeded.value.message
    assert int.from_bytes(reply.body, "little") == 1  # the guest never saw the big one


async def test_after_a_limit_hit_the_agent_answers_again(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.COUNTER_THAT_TRAPS, WasmLimits(max_fuel=100_000), name="c")
        first = await agent.handle(b"a")
        with pytest.raises(WasmTrap):
            await agent.handle(b"!")
        again = await agent.handle(b"a")
    assert int.from_bytes(first.body, "little") == int.from_bytes(again.body, "little") == 1


def test_limits_default_to_the_documented_values() -> None:
    limits = WasmLimits()
    assert limits.max_memory_bytes == 10 * MIB
    assert limits.max_fuel == 500_000_000
    assert limits.max_execution_time_s == 30.0
    assert limits.max_message_size == 100_000
    with pytest.raises(ValueError, match="max_fuel"):
        WasmLimits(max_fuel=0)
