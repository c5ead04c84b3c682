"""caxton-v1 guests: replies, streaming, instance state, re-creation, host functions."""

from __future__ import annotations

import json
import time

import pytest
import trio
import wasm_guests as g

from caxton.errors import ServiceUnavailable
from caxton.wasm import GuestHooks, WasmAgentFailed, WasmLimits, WasmPool, WasmTrap

LOTS_OF_FUEL = WasmLimits(max_fuel=10_000_000_000)


async def test_echo_example_replies_the_message_in_two_chunks(pool: WasmPool) -> None:
    with trio.fail_after(10):
        echo = await pool.load((g.AGENTS / "echo.wat").read_text(), name="echo")
        assert echo.abi == "caxton-v1"
        message = json.dumps({"performative": "request", "content": "hello, wasm"}).encode()
        send, receive = g.chunk_stream()
        reply = await echo.handle(message, stream=send)
    chunks = g.taken(receive)
    assert reply.body == message
    assert b"".join(chunks) == message
    assert len(chunks) == reply.chunks == 2
    assert reply.fuel_consumed > 0


async def test_counter_example_keeps_state_between_messages(pool: WasmPool) -> None:
    with trio.fail_after(10):
        counter = await pool.load((g.AGENTS / "counter.wat").read_text(), name="counter")
        bodies = [(await counter.handle(b"{}")).body for _ in range(3)]
    assert [json.loads(body) for body in bodies] == [{"count": 1}, {"count": 2}, {"count": 3}]
    assert counter.statistics().instances_created == 1


async def test_instance_is_recreated_after_a_trap(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.COUNTER_THAT_TRAPS, name="fragile")
        first = await agent.handle(b"a")
        second = await agent.handle(b"b")
        with pytest.raises(WasmTrap) as trapped:
            await agent.handle(b"!")
        assert not agent.statistics().instance_alive
        after = await agent.handle(b"c")
    assert [int.from_bytes(r.body, "little") for r in (first, second, after)] == [1, 2, 1]
    assert trapped.value.trap == "unreachable"
    stats = agent.statistics()
    assert stats.instances_created == 2
    assert (stats.calls, stats.failures) == (3, 1)


async def test_chunks_stream_in_order_while_the_guest_runs(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.CHUNKS, LOTS_OF_FUEL, name="chunks")
        arrivals: list[tuple[bytes, float]] = []
        send, receive = g.chunk_stream()

        async def read() -> None:
            async for chunk in receive:
                arrivals.append((chunk, time.monotonic()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            with send:
                reply = await agent.handle(b"{}", stream=send)
                finished = time.monotonic()
    assert [chunk for chunk, _ in arrivals] == [b"0", b"1", b"2", b"3", b"4"]
    assert reply.body == b"01234"
    # Each chunk is followed by guest work, so the first arrives well before the call ends.
    assert finished - arrivals[0][1] > 0.02
    times = [at for _, at in arrivals]
    assert times == sorted(times)


async def test_a_reader_that_waits_does_not_delay_the_call(pool: WasmPool) -> None:
    """The guest never waits for the stream's reader (issue #13 item 11): ``handle`` returns
    while the reader still holds the first chunk, and the reader then takes the whole stream
    in order."""
    with trio.fail_after(10):
        agent = await pool.load(g.CHUNKS, LOTS_OF_FUEL, name="chunks")
        received: list[bytes] = []
        send, receive = g.chunk_stream()
        returned = trio.Event()

        async def waits_for_the_call() -> None:
            async for chunk in receive:
                await returned.wait()
                received.append(chunk)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(waits_for_the_call)
            with send:
                reply = await agent.handle(b"{}", stream=send)
                returned.set()
    assert received == [b"0", b"1", b"2", b"3", b"4"]
    assert reply.body == b"01234"


async def test_send_message_goes_to_the_hook_and_its_status_back(pool: WasmPool) -> None:
    sent: list[bytes] = []

    def accept(data: bytes) -> int:
        sent.append(data)
        return 0

    with trio.fail_after(10):
        agent = await pool.load(g.SENDER, name="sender", hooks=GuestHooks(send_message=accept))
        accepted = await agent.handle(b'{"receiver":"other"}')
        refused = await agent.handle(b"x", hooks=GuestHooks(send_message=lambda _data: -5))
        unrouted = await agent.handle(b"y", hooks=GuestHooks())
    assert sent == [b'{"receiver":"other"}']
    assert int.from_bytes(accepted.body, "little", signed=True) == 0
    assert int.from_bytes(refused.body, "little", signed=True) == -5
    assert int.from_bytes(unrouted.body, "little", signed=True) == -1


async def test_log_and_now_ms_reach_the_host(pool: WasmPool) -> None:
    lines: list[tuple[int, str]] = []
    with trio.fail_after(10):
        agent = await pool.load(
            g.LOGGER_CLOCK,
            name="clock",
            hooks=GuestHooks(log=lambda lvl, s: lines.append((lvl, s))),
        )
        before = time.time() * 1000
        reply = await agent.handle("héllo".encode())
        after = time.time() * 1000
    assert lines == [(2, "héllo")]
    assert before - 1 <= int.from_bytes(reply.body, "little") <= after + 1


async def test_a_non_zero_status_fails_but_keeps_the_instance(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load(g.STATUS_3, name="grumpy")
        with pytest.raises(WasmAgentFailed) as failed:
            await agent.handle(b"{}")
    assert failed.value.status == 3
    assert failed.value.code == "WASM_AGENT_FAILED"
    assert agent.statistics().instance_alive


@pytest.mark.parametrize(
    ("source", "fragment"),
    [(g.BAD_ALLOC, "caxton_alloc"), (g.BAD_REPLY_POINTER, "caxton.reply")],
)
async def test_pointers_outside_guest_memory_are_traps(
    pool: WasmPool, source: str, fragment: str
) -> None:
    with trio.fail_after(10):
        agent = await pool.load(source, name="wild")
        with pytest.raises(WasmTrap) as trapped:
            await agent.handle(b"{}")
    assert trapped.value.trap == "bad_pointer"
    assert fragment in trapped.value.message
    assert trapped.value.code == "WASM_TRAP"


async def test_a_closed_module_refuses_messages(pool: WasmPool) -> None:
    with trio.fail_after(10):
        agent = await pool.load((g.AGENTS / "counter.wat").read_text(), name="counter")
        await agent.handle(b"{}")
        await agent.aclose()
        await agent.aclose()  # idempotent
        assert not agent.statistics().instance_alive
        with pytest.raises(ServiceUnavailable, match="stopped"):
            await agent.handle(b"{}")
