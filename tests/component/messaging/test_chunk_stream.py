"""The chunk stream a handler opens for a streamed reply (caxton.messages.open_chunk_stream)."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from caxton.messages import open_chunk_stream


async def test_chunks_arrive_in_order_and_the_stream_ends_when_closed() -> None:
    send, receive = open_chunk_stream()
    with send:
        send.send_nowait("a")
        await send.send("b")
    assert [text async for text in receive] == ["a", "b"]


async def test_send_waits_for_the_reader_past_the_byte_bound() -> None:
    send, receive = open_chunk_stream(max_buffered_bytes=4)
    sent: list[str] = []

    async def producer() -> None:
        for text in ("é", "abc", "d"):  # 2 + 3 bytes: the third waits
            await send.send(text)
            sent.append(text)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["é", "abc"]
        send.send_nowait("!")  # never waits (a WASM reply is bounded elsewhere)
        assert await receive.__anext__() == "é"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["é", "abc"]  # 3 + 1 bytes still held
        assert await receive.__anext__() == "abc"
        await trio.testing.wait_all_tasks_blocked()
        assert sent == ["é", "abc", "d"]


async def test_a_gone_reader_refuses_chunks_and_wakes_a_waiting_sender() -> None:
    send, receive = open_chunk_stream(max_buffered_bytes=1)
    send.send_nowait("full")
    failed: list[BaseException] = []

    async def producer() -> None:
        try:
            await send.send("more")
        except trio.BrokenResourceError as exc:
            failed.append(exc)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        receive.close()
    assert len(failed) == 1
    with pytest.raises(trio.BrokenResourceError):
        send.send_nowait("after")
