"""A cancelled caller stops its guest within ~50 ms, through the epoch deadline callback."""

from __future__ import annotations

import importlib.metadata
import time

import pytest
import trio
import wasm_guests as g

from caxton.errors import ServiceUnavailable
from caxton.wasm import WasmLimits, WasmPool, open_wasm_pool

# The limits alone would let these guests run for a minute.
PATIENT = WasmLimits(max_fuel=10**15, max_execution_time_s=60)
# Cancellation lands at the next epoch tick (10 ms); the slack is for a busy machine (the
# whole suite runs on two workers), still a hundred times under what the limits allow.
SLACK_S = 0.5


async def assert_cpu_idle(pool: WasmPool) -> None:
    """No guest keeps running: the process barely uses CPU while trio sleeps."""
    assert pool.statistics().calls_in_flight == 0
    before = time.process_time()
    await trio.sleep(0.3)
    assert time.process_time() - before < 0.1


async def test_cancelling_a_spinning_caxton_v1_call(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.COUNTER_THAT_SPINS, PATIENT, name="spinner")
        first = await agent.handle(b"a")
        started = time.monotonic()
        with trio.move_on_after(0.2) as scope:
            await agent.handle(b"!")
        elapsed = time.monotonic() - started
        assert scope.cancelled_caught
        assert 0.2 <= elapsed < 0.2 + SLACK_S
        await assert_cpu_idle(pool)
        # The interrupted instance was discarded; a fresh one answers.
        after = await agent.handle(b"a")
    assert int.from_bytes(first.body, "little") == int.from_bytes(after.body, "little") == 1
    stats = agent.statistics()
    assert (stats.instances_created, stats.failures) == (2, 0)


async def test_cancelling_a_spinning_wasi_stdio_call(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.WASI_SPIN, PATIENT, name="spinner")
        started = time.monotonic()
        with trio.move_on_after(0.1) as scope:
            await agent.handle(b"{}")
        elapsed = time.monotonic() - started
        assert scope.cancelled_caught
        assert 0.1 <= elapsed < 0.1 + SLACK_S
        await assert_cpu_idle(pool)


async def test_cancelling_while_the_reader_holds_a_chunk(pool: WasmPool) -> None:
    received: list[bytes] = []
    send, receive = g.chunk_stream()

    async def stuck() -> None:
        received.append(await receive.receive())
        await trio.sleep_forever()

    with trio.fail_after(10):
        agent = await pool.load(g.SPIN_AFTER_REPLY, PATIENT, name="spinner")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(stuck)
            started = time.monotonic()
            with trio.move_on_after(0.1) as scope:
                await agent.handle(b"{}", stream=send)
            assert scope.cancelled_caught
            assert time.monotonic() - started < 0.1 + SLACK_S
            await assert_cpu_idle(pool)
            nursery.cancel_scope.cancel()
    assert received == [b"started"]


async def test_cancelling_after_the_first_chunk(pool: WasmPool) -> None:
    send, receive = g.chunk_stream()
    with trio.fail_after(10):
        agent = await pool.load(g.SPIN_AFTER_REPLY, PATIENT, name="spinner")
        with trio.CancelScope() as scope:

            async def cancel_on_first() -> None:
                assert await receive.receive() == b"started"
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_on_first)
                started = time.monotonic()
                await agent.handle(b"{}", stream=send)
        assert scope.cancelled_caught
        assert time.monotonic() - started < SLACK_S
        await assert_cpu_idle(pool)


async def test_a_closed_stream_stops_the_guest(pool: WasmPool) -> None:
    """The stream's reader is gone: the guest is stopped at its first chunk, and the call
    raises what the stream raised."""
    send, receive = g.chunk_stream()
    receive.close()
    with trio.fail_after(10):
        agent = await pool.load(g.SPIN_AFTER_REPLY, PATIENT, name="spinner")
        started = time.monotonic()
        with pytest.raises(trio.BrokenResourceError):
            await agent.handle(b"{}", stream=send)
        assert time.monotonic() - started < SLACK_S
        await assert_cpu_idle(pool)
    assert not agent.statistics().instance_alive


async def test_cancelling_a_spinning_agent_init(pool: WasmPool) -> None:
    with trio.fail_after(10):
        started = time.monotonic()
        with trio.move_on_after(0.1) as scope:
            await pool.load(g.INIT_SPINS, PATIENT, name="slow-start")
        assert scope.cancelled_caught
        assert time.monotonic() - started < 0.1 + SLACK_S
        await assert_cpu_idle(pool)


async def test_stopping_the_pool_stops_running_guests(nursery) -> None:
    pool = WasmPool()
    pool_scope = trio.CancelScope()
    with trio.fail_after(10):

        async def run_pool(task_status=trio.TASK_STATUS_IGNORED) -> None:
            with pool_scope:
                await pool.run(task_status=task_status)

        await nursery.start(run_pool)
        agent = await pool.load(g.SPIN_AFTER_REPLY, PATIENT, name="spinner")
        send, receive = g.chunk_stream()
        outcome: list[BaseException] = []

        async def call() -> None:
            try:
                await agent.handle(b"{}", stream=send)
            except ServiceUnavailable as exc:
                outcome.append(exc)

        async with trio.open_nursery() as calls:
            calls.start_soon(call)
            await receive.receive()  # the guest runs (and now spins)
            stopped_at = time.monotonic()
            pool_scope.cancel()
        assert time.monotonic() - stopped_at < SLACK_S
    assert len(outcome) == 1
    assert "shutting down" in str(outcome[0])
    assert not pool.statistics().running
    with pytest.raises(ServiceUnavailable, match="not running"):
        await agent.handle(b"{}")


async def test_a_pool_that_is_not_running_refuses_work() -> None:
    with trio.fail_after(10), pytest.raises(ServiceUnavailable, match="not running"):
        await WasmPool().load(g.UNREACHABLE)


async def test_open_wasm_pool_runs_the_ticker_for_the_block() -> None:
    with trio.fail_after(10):
        async with open_wasm_pool(max_concurrent_calls=3) as pool:
            agent = await pool.load(g.TRIPLE, name="triple")
            reply = await agent.handle(b"ab")
            stats = pool.statistics()
        assert reply.body == b"ababab"
        assert stats.running
        assert stats.max_concurrent_calls == 3
        assert not pool.statistics().running


async def test_the_ticker_runs_only_while_a_guest_call_is_in_flight(pool: WasmPool) -> None:
    # An idle server must not wake up 100 times a second (issue #21); a running guest still
    # gets its ticks, so its deadline stops it.
    with trio.fail_after(10):
        agent = await pool.load(g.SPIN, PATIENT, name="spinner")
        await trio.sleep(0.05)  # the tick due when the load ended (at most one)
        idle_from = pool.statistics().epoch_ticks
        await trio.sleep(0.3)
        assert pool.statistics().epoch_ticks == idle_from
        with trio.move_on_after(0.3) as scope:
            await agent.handle(b"{}")
        assert scope.cancelled_caught
        spun = pool.statistics().epoch_ticks - idle_from
        assert spun >= 5  # ~30 at 10 ms a tick, fewer on a loaded machine
        await assert_cpu_idle(pool)
        after = pool.statistics().epoch_ticks
        await trio.sleep(0.3)
        assert pool.statistics().epoch_ticks == after


def test_the_private_wasmtime_api_we_rely_on_is_there() -> None:
    # caxton.wasm.control, caxton.wasm.capi and caxton.wasm.wasi_stdio use these through
    # wasmtime._ffi, which is why pyproject.toml pins wasmtime exactly; an upgrade must keep
    # this test green.
    from wasmtime import _ffi as ffi

    assert importlib.metadata.version("wasmtime") == "50.0.1"
    for name in (
        "wasmtime_store_epoch_deadline_callback",
        "wasmtime_error_new",
        "wasi_config_set_stdin_bytes",
        "bytes_to_capi",
        "wasmtime_context_t",
        "wasmtime_func_call_unchecked",
        "wasmtime_linker_define_func_unchecked",
        "wasmtime_func_unchecked_callback_t",
        "wasmtime_val_raw_t",
        "wasmtime_extern_t",
        "WASMTIME_EXTERN_MEMORY",
        "wasm_engine_t",
        "wasmtime_engine_increment_epoch",
        "dll",
    ):
        assert hasattr(ffi, name), name
