"""What a hostile or runaway guest cannot do to the host or to other agents (issue #13).

Guest logs stay within their budget (item 4); a stream consumer that never reads holds no
worker thread (item 11); looping agents do not starve the others (item 12); time queued counts
against ``max_execution_time`` and a full queue is refused at once (item 13).
"""

from __future__ import annotations

import contextlib
import threading
import time

import pytest
import trio
import wasm_guests as g

from caxton.errors import AgentBusy
from caxton.wasm import (
    GuestHooks,
    LoadedAgentModule,
    WasmLimitExceeded,
    WasmLimits,
    WasmPool,
    open_wasm_pool,
)
from caxton.wasm.limits import (
    LOG_LINES_BURST,
    MAX_LOG_BYTES_PER_CALL,
    MAX_LOG_LINE_BYTES,
    MAX_QUEUED_CALLS_PER_AGENT,
)

ECHO = (g.AGENTS / "echo.wat").read_text()
# The limits alone would let the spinning guests below run for a minute.
PATIENT = WasmLimits(max_fuel=10**15, max_execution_time_s=60)


def log_flood(lines: int, size: int) -> str:
    """A guest that logs ``lines`` lines of ``size`` bytes in one call, then replies "done"."""
    return g.v1_module(
        f"""(data (i32.const 0) "done")
           (func (export "handle_message") (param i32 i32) (result i32)
             (local $i i32)
             (drop (memory.grow (i32.const {size // 65536 + 1})))
             (loop $again
               (call $log (i32.const 2) (i32.const 0) (i32.const {size}))
               (local.set $i (i32.add (local.get $i) (i32.const 1)))
               (br_if $again (i32.lt_u (local.get $i) (i32.const {lines}))))
             (call $reply (i32.const 0) (i32.const 4))
             (i32.const 0))""",
        imports='(import "caxton" "log" (func $log (param i32 i32 i32)))',
    )


# Writes 64 KiB to stderr 40 times (2.5 MiB), then "done" to stdout.
WASI_STDERR_FLOOD = g.wasi_module(
    """(data (i32.const 64) "done")
       (func (export "_start")
         (local $i i32)
         (loop $again
           (i32.store (i32.const 0) (i32.const 0))
           (i32.store (i32.const 4) (i32.const 65536))
           (drop (call $fd_write (i32.const 2) (i32.const 0) (i32.const 1) (i32.const 16)))
           (local.set $i (i32.add (local.get $i) (i32.const 1)))
           (br_if $again (i32.lt_u (local.get $i) (i32.const 40))))
         (call $write (i32.const 64) (i32.const 4)))"""
)


class Logs:
    """A log hook and a log_dropped hook that remember what they were given."""

    def __init__(self) -> None:
        self.lines: list[tuple[int, str]] = []
        self.dropped: list[int] = []
        self._lock = threading.Lock()

    def log(self, level: int, text: str) -> None:
        with self._lock:
            self.lines.append((level, text))

    def log_dropped(self, count: int) -> None:
        with self._lock:
            self.dropped.append(count)

    @property
    def hooks(self) -> GuestHooks:
        return GuestHooks(log=self.log, log_dropped=self.log_dropped)

    def split(self) -> tuple[list[str], list[str]]:
        """The guest's lines, and the host's notes about dropped bytes."""
        notes = [t for _, t in self.lines if t.startswith("caxton: ")]
        kept = [t for _, t in self.lines if not t.startswith("caxton: ")]
        return kept, notes


# -- item 4: guest logs ---------------------------------------------------------------------


async def test_a_call_logs_at_most_its_byte_budget_and_notes_the_rest(pool: WasmPool) -> None:
    lines, size = 3000, 100_000  # 300 MB of log in one call
    logs = Logs()
    with trio.fail_after(20):
        agent = await pool.load(log_flood(lines, size), name="chatty")
        reply = await agent.handle(b"{}", hooks=logs.hooks)
    assert reply.body == b"done"
    kept, notes = logs.split()
    kept_bytes = sum(len(t.encode()) for t in kept)
    assert 0 < kept_bytes <= MAX_LOG_BYTES_PER_CALL
    assert all(len(t.encode()) <= MAX_LOG_LINE_BYTES for t in kept)
    assert len(notes) == 1
    assert f"{lines * size - kept_bytes} bytes of guest log dropped" in notes[0]
    assert sum(logs.dropped) == lines * size - kept_bytes


async def test_a_guest_past_its_log_rate_on_every_call_gets_a_note_a_second_not_a_call(
    pool: WasmPool,
) -> None:
    logs = Logs()
    with trio.fail_after(30):
        agent = await pool.load(log_flood(LOG_LINES_BURST + 10, 8), name="chatty")
        started = time.monotonic()
        for _ in range(40):  # after the first call, every line is past the rate
            await agent.handle(b"{}", hooks=logs.hooks)
        elapsed = time.monotonic() - started
    _, notes = logs.split()
    assert 1 <= len(notes) <= 2 + int(elapsed)
    assert len(logs.dropped) == 40  # the metric still counts every call's drops
    assert sum(int(n.split()[1]) for n in notes) <= sum(logs.dropped)


async def test_log_lines_are_rate_limited_per_agent(pool: WasmPool) -> None:
    logs = Logs()
    with trio.fail_after(20):
        agent = await pool.load(log_flood(LOG_LINES_BURST + 100, 8), name="chatty")
        await agent.handle(b"{}", hooks=logs.hooks)
        first, notes = logs.split()
        assert len(first) == LOG_LINES_BURST  # the burst, then the rate: ~0 lines in a call
        assert len(notes) == 1
        assert "100 whole lines" in notes[0]
        logs.lines.clear()
        await agent.handle(b"{}", hooks=logs.hooks)
    again, _ = logs.split()
    assert len(again) < LOG_LINES_BURST // 2  # 20 lines a second refill the bucket


async def test_wasi_stderr_is_within_the_same_budget(pool: WasmPool) -> None:
    logs = Logs()
    with trio.fail_after(20):
        agent = await pool.load(WASI_STDERR_FLOOD, name="noisy")
        reply = await agent.handle(b"{}", hooks=logs.hooks)
    assert reply.body == b"done"
    kept, notes = logs.split()
    kept_bytes = sum(len(t.encode()) for t in kept)
    assert 0 < kept_bytes <= MAX_LOG_BYTES_PER_CALL
    assert notes
    assert kept_bytes + sum(logs.dropped) == 40 * 65536


# -- item 11: a consumer that never reads ------------------------------------------------------


@pytest.mark.parametrize("guest", ["caxton-v1", "wasi-stdio"])
async def test_a_consumer_that_never_reads_holds_no_worker_thread(guest: str) -> None:
    """With one worker thread in the whole pool, an unrelated agent still answers."""
    source, message = (g.CHUNKS, b"{}") if guest == "caxton-v1" else (g.WASI_CAT, b"x" * 20_000)
    send, receive = g.chunk_stream()

    async with open_wasm_pool(max_concurrent_calls=1) as pool:
        streamer = await pool.load(source, WasmLimits(max_fuel=10**12), name="streamer")
        echo = await pool.load(ECHO, name="echo")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(lambda: streamer.handle(message, stream=send))
            with trio.fail_after(5):
                await receive.receive()  # the first chunk; no other is ever read
            with trio.fail_after(5):  # waits forever when the stream holds the only thread
                reply = await echo.handle(b"hello")
            assert reply.body == b"hello"
            assert pool.statistics().calls_in_flight == 0  # the streamer's guest is done
            nursery.cancel_scope.cancel()


async def test_a_slow_consumer_does_not_hold_the_agent_back(pool: WasmPool) -> None:
    send, receive = g.chunk_stream()

    async def streamed() -> None:
        with send:
            await agent.handle(b"{}", stream=send)

    async with trio.open_nursery() as nursery:
        with trio.fail_after(10):
            agent = await pool.load(g.CHUNKS, WasmLimits(max_fuel=10**12), name="chunks")
            nursery.start_soon(streamed)
            received = [await receive.receive()]
            other = await agent.handle(b"{}")  # the instance is free while chunks wait
            assert other.body == b"01234"
            assert received == [b"0"]
            received.extend([chunk async for chunk in receive])
    assert received == [b"0", b"1", b"2", b"3", b"4"]


# -- item 12: fair sharing of the pool ---------------------------------------------------------


async def spin_until_cancelled(agent: LoadedAgentModule) -> None:
    with contextlib.suppress(WasmLimitExceeded, AgentBusy):
        await agent.handle(b"{}")


async def wait_running(pool: WasmPool, count: int) -> None:
    while pool.statistics().calls_in_flight < count:
        await trio.sleep(0.01)


async def test_echo_answers_while_eight_agents_loop_at_their_time_limit() -> None:
    """The default pool: eight looping agents (5 s limit) leave echo fast."""
    limits = WasmLimits(max_fuel=10**15, max_execution_time_s=5)
    async with open_wasm_pool() as pool:
        loopers = [await pool.load(g.SPIN, limits, name=f"loop-{i}") for i in range(8)]
        echo = await pool.load(ECHO, name="echo")
        async with trio.open_nursery() as nursery:
            for looper in loopers:
                nursery.start_soon(spin_until_cancelled, looper)
            with trio.fail_after(5):
                await wait_running(pool, 8)
            started = time.monotonic()
            with trio.fail_after(4):
                for _ in range(5):
                    assert (await echo.handle(b"hi")).body == b"hi"
            assert time.monotonic() - started < 2.0
            nursery.cancel_scope.cancel()


async def test_one_agent_holds_at_most_its_share_of_the_threads() -> None:
    limits = WasmLimits(max_fuel=10**15, max_execution_time_s=5)
    async with open_wasm_pool(max_concurrent_calls=4, max_calls_per_agent=2) as pool:
        looper = await pool.load(g.WASI_SPIN, limits, name="looper")
        echo = await pool.load(ECHO, name="echo")
        async with trio.open_nursery() as nursery:
            for _ in range(8):
                nursery.start_soon(spin_until_cancelled, looper)
            with trio.fail_after(5):
                await wait_running(pool, 8)
                await trio.sleep(0.1)
            assert pool.statistics().agents_waiting == 1  # looper's other six calls
            with trio.fail_after(2):
                assert (await echo.handle(b"hi")).body == b"hi"
            nursery.cancel_scope.cancel()


# -- item 13: bounded queues -------------------------------------------------------------------


@pytest.mark.parametrize("source", [g.SPIN, g.WASI_SPIN], ids=["caxton-v1", "wasi-stdio"])
async def test_time_in_the_queue_counts_against_the_time_limit(source: str) -> None:
    limits = WasmLimits(max_fuel=10**15, max_execution_time_s=1)
    outcomes: list[tuple[str, float]] = []
    async with open_wasm_pool(max_calls_per_agent=1) as pool:
        agent = await pool.load(source, limits, name="slow")
        started = time.monotonic()

        async def call() -> None:
            try:
                await agent.handle(b"{}")
            except (WasmLimitExceeded, AgentBusy) as exc:
                outcomes.append((exc.code, time.monotonic() - started))

        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                for _ in range(4):
                    nursery.start_soon(call)
    codes = sorted(code for code, _ in outcomes)
    assert codes == ["AGENT_BUSY", "AGENT_BUSY", "AGENT_BUSY", "WASM_LIMIT_EXCEEDED"]
    # one after the other, the last would answer after 4 s
    assert max(at for _, at in outcomes) < 2.5


async def test_a_full_queue_is_refused_at_once(pool: WasmPool) -> None:
    agent = await pool.load(g.SPIN, PATIENT, name="stuck")
    async with trio.open_nursery() as nursery:
        for _ in range(agent.max_pending_calls):
            nursery.start_soon(spin_until_cancelled, agent)
        with trio.fail_after(5):
            while agent.statistics().pending < agent.max_pending_calls:
                await trio.sleep(0.01)
        assert agent.max_pending_calls > MAX_QUEUED_CALLS_PER_AGENT
        with trio.fail_after(1), pytest.raises(AgentBusy) as busy:
            await agent.handle(b"{}")
        nursery.cancel_scope.cancel()
    assert busy.value.http_status == 503
    assert busy.value.code == "AGENT_BUSY"
    assert busy.value.retry_after_s >= 1
    assert "'stuck'" in busy.value.message
    assert agent.statistics().busy == 1
