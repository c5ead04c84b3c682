"""Micro-batching in the embedder (issue #21): concurrent callers share model calls, each gets
its own rows and its own error, and one caller's cancellation leaves the others' batch alone."""

from __future__ import annotations

import numpy as np
import pytest
import trio
import trio.testing

from caxton.memory import Embedder, runtimes

pytestmark = pytest.mark.trio

#: the tokenizer refuses a lone surrogate (a real bad input, as JSON's "\ud800" decodes to)
BAD_TEXT = "broken \ud800 text"


def texts_for(caller: int) -> list[str]:
    return [f"caller {caller} writes note {i} about topic {i % 5}" for i in range(3)]


async def test_concurrent_callers_share_batches_and_get_their_own_rows(embedder):
    alone = {c: await embedder.embed(texts_for(c), use_cache=False) for c in range(12)}
    before = embedder.statistics()
    results: dict[int, np.ndarray] = {}

    async def call(caller: int) -> None:
        results[caller] = await embedder.embed(texts_for(caller), use_cache=False)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            for caller in range(12):
                nursery.start_soon(call, caller)
    after = embedder.statistics()
    for caller in range(12):
        # int8 activations are quantised per call, so a row moves a little with its batch.
        np.testing.assert_allclose(results[caller], alone[caller], atol=2e-3)
        assert np.argmax(results[caller] @ alone[caller].T, axis=1).tolist() == [0, 1, 2]
    assert after.texts_embedded - before.texts_embedded == 36
    # Twelve callers at once: far fewer model calls than callers.
    assert after.batches - before.batches <= 4


async def test_only_a_batch_of_several_callers_runs_on_the_gathered_threads(
    model_dir, nursery, monkeypatch
):
    """One caller's texts (a lone search, a bulk write) run on every thread; a batch gathered
    from callers who queued while the model was busy runs on ``gathered_threads``."""
    calls: list[tuple[int, bool]] = []
    encode = runtimes.OpenVinoRuntime.encode

    def recorded(self, texts, *, gathered=False):
        calls.append((len(texts), gathered))
        return encode(self, texts, gathered=gathered)

    monkeypatch.setattr(runtimes.OpenVinoRuntime, "encode", recorded)
    embedder = await nursery.start(Embedder(cache_dir=model_dir, threads=2).run)
    assert embedder.statistics().runtime.endswith("2 threads (1 for gathered batches)")
    calls.clear()  # the load's probes

    async def call(texts: list[str]) -> None:
        await embedder.embed(texts, use_cache=False)

    with trio.fail_after(60):
        await embedder.embed(["alone"], use_cache=False)
        await embedder.embed([f"bulk {i}" for i in range(40)], use_cache=False)
        async with trio.open_nursery() as callers:
            callers.start_soon(call, [f"busy {i} " * 20 for i in range(64)])
            await trio.testing.wait_all_tasks_blocked()  # its batch is in the model's thread
            for caller in range(3):
                callers.start_soon(call, [f"queued {caller}"])
    assert calls == [(1, False), (40, False), (64, False), (3, True)]


async def test_a_bad_text_fails_only_its_own_request(embedder):
    outcomes: dict[str, object] = {}

    async def call(name: str, texts: list[str]) -> None:
        try:
            outcomes[name] = await embedder.embed(texts)
        except Exception as exc:
            outcomes[name] = exc

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "first", ["the cat sits on the mat"])
            nursery.start_soon(call, "bad", ["a fine text", BAD_TEXT])
            nursery.start_soon(call, "last", ["stock market crashed today"])
    assert isinstance(outcomes["bad"], TypeError)
    assert isinstance(outcomes["first"], np.ndarray)
    assert isinstance(outcomes["last"], np.ndarray)
    assert float(outcomes["first"][0] @ outcomes["last"][0]) < 0.3
    # The embedder is still fine afterwards.
    assert (await embedder.embed_one("one more")).shape == (384,)


async def test_a_cancelled_caller_does_not_cancel_the_batch_for_others(embedder):
    many = [f"a long list of notes, number {i}" for i in range(200)]
    got: dict[str, np.ndarray] = {}
    impatient = trio.CancelScope()

    async def patient(name: str, texts: list[str]) -> None:
        got[name] = await embedder.embed(texts, use_cache=False)

    async def gives_up() -> None:
        with impatient:
            got["impatient"] = await embedder.embed(["the impatient one's note"], use_cache=False)

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(patient, "busy", many)  # keeps the model busy a while
            await trio.sleep(0.01)
            nursery.start_soon(gives_up)  # queued behind "busy", with "other"
            nursery.start_soon(patient, "other", ["the other caller's note"])
            await trio.sleep(0.01)
            impatient.cancel()
    assert impatient.cancelled_caught
    assert set(got) == {"busy", "other"}
    assert got["busy"].shape == (200, 384)
    assert got["other"].shape == (1, 384)


async def test_requests_waiting_when_the_embedder_stops_fail_instead_of_hanging(model_dir):
    failures: list[BaseException] = []
    with trio.fail_after(60):
        async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
            embedder = await nursery.start(Embedder(cache_dir=model_dir).run)

            async def waiting(i: int) -> None:
                try:
                    await embedder.embed([f"text {i} " * 50], use_cache=False)
                except RuntimeError as exc:
                    failures.append(exc)

            for i in range(6):
                outer.start_soon(waiting, i)
            await trio.sleep(0.005)
            nursery.cancel_scope.cancel()
    # Whatever had not started when the embedder stopped was told so; nothing hangs.
    assert all("embedder stopped" in str(exc) for exc in failures)
    with pytest.raises(RuntimeError, match="not running"):
        await embedder.embed(["after the stop"])


async def test_a_batch_taken_as_the_embedder_stops_fails_its_callers(model_dir):
    """A stop that comes while a batch runs takes effect when the model returns; the next batch
    was already taken from the queue by then, and its callers are told the embedder stopped
    (once they waited forever)."""
    got: dict[str, object] = {}
    with trio.fail_after(20):
        async with trio.open_nursery() as outer, trio.open_nursery() as nursery:
            embedder = await nursery.start(Embedder(cache_dir=model_dir).run)

            async def call(name: str, texts: list[str]) -> None:
                try:
                    got[name] = await embedder.embed(texts, use_cache=False)
                except RuntimeError as exc:
                    got[name] = exc

            outer.start_soon(call, "running", [f"long text {i} " * 20 for i in range(64)])
            await trio.testing.wait_all_tasks_blocked()  # its batch is in the model's thread
            outer.start_soon(call, "next", ["a text that waits for the next batch"])
            await trio.testing.wait_all_tasks_blocked()
            assert got == {}  # the model still runs the first batch
            nursery.cancel_scope.cancel()
    running = got["running"]
    assert isinstance(running, np.ndarray)
    assert running.shape == (64, 384)
    assert isinstance(got["next"], RuntimeError)
    assert "embedder stopped" in str(got["next"])
