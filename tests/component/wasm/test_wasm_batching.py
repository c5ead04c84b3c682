"""Queued caxton-v1 messages to one module share worker-thread trips, one message at a time.

Each test first sends a *gate* message whose ``caxton.log`` hook holds the guest (and so the
instance and its worker thread) until the test has queued more messages behind it; those then
run back to back in one trip to a worker thread, each under its own limits, errors and
cancellation. A message that streams its reply joins the trip like any other (its chunks go
to its own stream, which its caller drains).
"""

from __future__ import annotations

import threading
import time

import pytest
import trio
import trio.testing
import wasm_guests as g

from caxton.errors import ServiceUnavailable
from caxton.wasm import (
    GuestHooks,
    LoadedAgentModule,
    WasmLimitExceeded,
    WasmLimits,
    WasmPool,
    WasmTrap,
)

# A counter in guest memory, incremented by every message, which replies the new count
# (4 bytes, little endian). A message starting with "!" traps after counting, one starting
# with "~" spins forever after counting, one starting with "g" logs itself first.
COUNTER = g.v1_module(
    """(func (export "handle_message") (param $ptr i32) (param $len i32) (result i32)
         (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 103))
           (then (call $log (i32.const 1) (local.get $ptr) (local.get $len))))
         (i32.store (i32.const 0) (i32.add (i32.load (i32.const 0)) (i32.const 1)))
         (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 33))
           (then unreachable))
         (if (i32.eq (i32.load8_u (local.get $ptr)) (i32.const 126))
           (then (loop $forever (br $forever))))
         (call $reply (i32.const 0) (i32.const 4))
         (i32.const 0))""",
    imports='(import "caxton" "log" (func $log (param i32 i32 i32)))',
)

PATIENT = WasmLimits(max_fuel=10**15, max_execution_time_s=60)
SLACK_S = 0.05


def count(body: bytes) -> int:
    return int.from_bytes(body, "little")


class Gate:
    """A message that holds the module's instance (in its worker thread) until released."""

    def __init__(self) -> None:
        self.holding = trio.Event()
        self.release = threading.Event()
        self.count: int | None = None

    def log(self, level: int, text: str) -> None:  # runs in the worker thread
        trio.from_thread.run_sync(self.holding.set)
        assert self.release.wait(timeout=10), "the test never released the gate"

    async def run(self, agent: LoadedAgentModule) -> None:
        reply = await agent.handle(b"gate", hooks=GuestHooks(log=self.log))
        self.count = count(reply.body)


async def hold(agent: LoadedAgentModule, nursery: trio.Nursery) -> Gate:
    gate = Gate()
    nursery.start_soon(gate.run, agent)
    await gate.holding.wait()
    return gate


class Calls:
    """Messages queued in a known order; each outcome is kept (a reply count or an error)."""

    def __init__(self, agent: LoadedAgentModule) -> None:
        self.agent = agent
        self.outcomes: dict[str, int | BaseException] = {}
        self.scopes: dict[str, trio.CancelScope] = {}
        self.cancelled: dict[str, float] = {}

    async def queue(self, nursery: trio.Nursery, key: str, message: bytes) -> None:
        """Start a call; it is queued by the time this returns."""
        await nursery.start(self._call, key, message)

    async def _call(
        self,
        key: str,
        message: bytes,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        with trio.CancelScope() as scope:
            self.scopes[key] = scope
            task_status.started()
            try:
                reply = await self.agent.handle(message)
            except (WasmTrap, WasmLimitExceeded) as exc:
                self.outcomes[key] = exc
            else:
                self.outcomes[key] = count(reply.body)
        if scope.cancelled_caught:
            self.cancelled[key] = time.monotonic()


async def test_queued_messages_run_in_order_in_few_trips(pool: WasmPool) -> None:
    n = 20
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            for i in range(n):
                await calls.queue(nursery, f"m{i}", b"{}")
            gate.release.set()
        # and again, concurrently without a gate: whatever the interleaving, none is lost
        async with trio.open_nursery() as nursery:
            for i in range(n, 2 * n):
                nursery.start_soon(calls.queue, nursery, f"m{i}", b"{}")
    assert gate.count == 1
    assert [calls.outcomes[f"m{i}"] for i in range(n)] == list(range(2, n + 2))
    later = sorted(calls.outcomes[f"m{i}"] for i in range(n, 2 * n))
    assert later == list(range(n + 2, 2 * n + 2))
    stats = agent.statistics()
    assert (stats.calls, stats.failures, stats.instances_created) == (2 * n + 1, 0, 1)
    # the gate's trip, then the 20 queued messages in one trip (up to BATCH_MAX_MESSAGES)
    assert stats.batches < n + 2


async def test_a_trap_in_a_batch_fails_only_that_message(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            for key, message in [("a", b"{}"), ("b", b"{}"), ("trap", b"!"), ("c", b"{}")]:
                await calls.queue(nursery, key, message)
            await calls.queue(nursery, "d", b"{}")
            gate.release.set()
    trap = calls.outcomes.pop("trap")
    assert isinstance(trap, WasmTrap)
    assert trap.trap == "unreachable"
    # a and b count on after the gate; c and d run on the re-created instance
    assert (gate.count, calls.outcomes) == (1, {"a": 2, "b": 3, "c": 1, "d": 2})
    stats = agent.statistics()
    assert (stats.calls, stats.failures, stats.instances_created) == (5, 1, 2)


async def test_a_fuel_limit_in_a_batch_fails_only_that_message(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, WasmLimits(max_fuel=200_000), name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            for key, message in [("a", b"{}"), ("spin", b"~"), ("b", b"{}"), ("c", b"{}")]:
                await calls.queue(nursery, key, message)
            gate.release.set()
    spin = calls.outcomes.pop("spin")
    assert isinstance(spin, WasmLimitExceeded)
    assert spin.limit == "fuel"
    assert (gate.count, calls.outcomes) == (1, {"a": 2, "b": 1, "c": 2})
    assert agent.statistics().instances_created == 2


async def test_a_caller_cancelled_while_queued_never_runs(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            for key in ("a", "b", "c", "d"):
                await calls.queue(nursery, key, b"{}")
            calls.scopes["b"].cancel()
            calls.scopes["a"].cancel()  # the head of the queue, which would drive the trip
            await trio.sleep(0.05)
            gate.release.set()
    assert set(calls.cancelled) == {"a", "b"}
    assert (gate.count, calls.outcomes) == (1, {"c": 2, "d": 3})
    stats = agent.statistics()
    assert (stats.calls, stats.failures, stats.instances_created) == (3, 0, 1)


async def test_cancelling_a_message_running_in_a_batch(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, PATIENT, name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            for key, message in [("a", b"{}"), ("spin", b"~"), ("b", b"{}")]:
                await calls.queue(nursery, key, message)
            gate.release.set()
            # "a" has its reply although "spin", run in the same trip, still runs
            while "a" not in calls.outcomes:
                await trio.sleep(0.01)
            await trio.sleep(0.2)
            assert "spin" not in calls.outcomes
            assert "b" not in calls.outcomes
            cancelled_at = time.monotonic()
            calls.scopes["spin"].cancel()
        assert calls.cancelled["spin"] - cancelled_at < SLACK_S
        assert pool.statistics().calls_in_flight == 0
        before = time.process_time()
        await trio.sleep(0.3)
        assert time.process_time() - before < 0.1  # the spinning guest has stopped
    # "b" was not affected and ran on a fresh instance
    assert (gate.count, calls.outcomes) == (1, {"a": 2, "b": 1})
    stats = agent.statistics()
    assert (stats.calls, stats.failures, stats.instances_created) == (3, 0, 2)


async def test_cancelling_the_first_message_of_a_batch(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, PATIENT, name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            for key, message in [("spin", b"~"), ("a", b"{}"), ("b", b"{}")]:
                await calls.queue(nursery, key, message)
            gate.release.set()
            await trio.sleep(0.2)
            assert not calls.outcomes
            cancelled_at = time.monotonic()
            calls.scopes["spin"].cancel()
        assert calls.cancelled["spin"] - cancelled_at < SLACK_S
    assert (gate.count, calls.outcomes) == (1, {"a": 1, "b": 2})
    assert agent.statistics().instances_created == 2


async def test_a_slow_message_does_not_hold_back_the_replies_before_it(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, PATIENT, name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            for key, message in [("a", b"{}"), ("b", b"{}"), ("spin", b"~")]:
                await calls.queue(nursery, key, message)
            gate.release.set()
            await trio.sleep(0.2)
            # "spin" runs in the same trip, but "b" got its reply at an epoch tick
            assert calls.outcomes == {"a": 2, "b": 3}
            calls.scopes["spin"].cancel()


async def test_streaming_messages_keep_their_place_in_the_queue(pool: WasmPool) -> None:
    send, receive = g.chunk_stream()

    async def streamed() -> None:
        with send:
            reply = await agent.handle(b"{}", stream=send)
        assert count(reply.body) == 3

    with trio.fail_after(10):
        agent = await pool.load(COUNTER, name="counter")
        calls = Calls(agent)
        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            await calls.queue(nursery, "a", b"{}")
            nursery.start_soon(streamed)
            await trio.testing.wait_all_tasks_blocked()
            await calls.queue(nursery, "b", b"{}")
            gate.release.set()
    assert [count(chunk) for chunk in g.taken(receive)] == [3]
    assert calls.outcomes == {"a": 2, "b": 4}


@pytest.mark.parametrize("closing", [False, True])
async def test_queued_messages_of_a_closed_module_are_refused(
    pool: WasmPool, closing: bool
) -> None:
    with trio.fail_after(10):
        agent = await pool.load(COUNTER, name="counter")
        refused: list[str] = []

        async def call(key: str, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            try:
                await agent.handle(b"{}")
            except Exception as exc:
                refused.append(f"{key}: {type(exc).__name__}")

        async with trio.open_nursery() as nursery:
            gate = await hold(agent, nursery)
            await nursery.start(call, "a")
            await nursery.start(call, "b")
            if closing:
                nursery.start_soon(agent.aclose)
                await trio.testing.wait_all_tasks_blocked()
            gate.release.set()
    if closing:
        assert sorted(refused) == ["a: ServiceUnavailable", "b: ServiceUnavailable"]
    else:
        assert refused == []


async def test_stopping_the_pool_fails_running_and_queued_messages(nursery) -> None:
    pool = WasmPool()
    pool_scope = trio.CancelScope()

    async def run_pool(task_status: trio.TaskStatus[WasmPool] = trio.TASK_STATUS_IGNORED) -> None:
        with pool_scope:
            await pool.run(task_status=task_status)

    with trio.fail_after(10):
        await nursery.start(run_pool)
        agent = await pool.load(COUNTER, PATIENT, name="counter")
        refused: list[str] = []

        async def call(key: str, message: bytes, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            try:
                await agent.handle(message)
            except ServiceUnavailable:
                refused.append(key)

        async with trio.open_nursery() as calls:
            gate = await hold(agent, calls)
            for key, message in [("a", b"{}"), ("spin", b"~"), ("b", b"{}")]:
                await calls.start(call, key, message)
            gate.release.set()
            await trio.sleep(0.2)  # "a" is done, "spin" runs, "b" waits
            stopped_at = time.monotonic()
            pool_scope.cancel()
        assert time.monotonic() - stopped_at < SLACK_S
    assert sorted(refused) == ["b", "spin"]
    assert agent.statistics().calls == 2
