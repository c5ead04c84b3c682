"""The embedding model's two runtimes (caxton.memory.runtimes) with the real packaged model:
OpenVINO makes the vectors onnxruntime makes, and ``auto`` falls back when it cannot load."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import trio
from fastembed.common.preprocessor_utils import load_tokenizer

from caxton.memory import Embedder, EmbeddingModelError, runtimes

TEXTS = [
    "the cat sits on the mat",
    "a kitten is sitting on a rug",
    "stock market crashed today",
    "x",
    "",
    "Grüße aus Köln — 東京の天気は晴れ 🌤",
    "load-123456789-17 note note 17 about topic 17 from the load test",
    # longer than the 256 tokens the tokenizer keeps: both truncate the same way
    "a very long observation about the billing service and its owners " * 40,
    *(f"note number {i} about topic {i % 7} written on day {i * 3}" for i in range(40)),
]
QUERIES = ["who is sitting on the rug", "what happened to stocks", "topic 3 notes", "weather"]


@pytest.fixture(scope="module")
def reference(model_dir):
    """onnxruntime's vectors of TEXTS and QUERIES: what the embedder made before OpenVINO."""
    model = runtimes.load_onnxruntime(model_dir, threads=1, batch_size=16)
    return model.encode(TEXTS), model.encode(QUERIES)


@pytest.mark.parametrize("precision", [None, "f32"])
def test_openvino_makes_the_vectors_onnxruntime_makes(model_dir, reference, precision):
    """The machine's own precision (bf16 where the CPU has it) agrees to a cosine of 0.9999
    and ranks the texts for each query in the same order at the top; f32 agrees to float
    rounding. Batches of 16 mix short and long texts, so padding is covered."""
    texts, queries = reference
    model = runtimes.load_openvino(model_dir, threads=1, batch_size=16, precision=precision)
    got = model.encode(TEXTS)
    assert got.shape == texts.shape
    assert got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    cosines = (got * texts).sum(axis=1)
    if precision == "f32":
        np.testing.assert_allclose(got, texts, atol=2e-5)
    else:
        assert cosines.min() >= 0.9999, (cosines.argmin(), cosines.min())
    ranked = model.encode(QUERIES) @ got.T
    expected = queries @ texts.T
    for row, want in zip(ranked, expected, strict=True):
        assert list(np.argsort(-row)[:3]) == list(np.argsort(-want)[:3])


def test_openvino_encodes_a_batch_as_it_encodes_each_text(model_dir):
    """A text's vector does not depend on the batch it went in (padding is masked out)."""
    model = runtimes.load_openvino(model_dir, threads=1, batch_size=32)
    batched = model.encode(TEXTS)
    for index in (0, 3, 4, 7, 20):
        alone = model.encode([TEXTS[index]])[0]
        assert float(alone @ batched[index]) >= 0.9999
    assert model.encode([]).shape == (0, 384)


def test_openvino_runs_gathered_batches_on_their_own_threads_with_the_same_vectors(model_dir):
    """``gathered_threads`` compiles the graph a second time for that many threads; a gathered
    call runs there and makes the vectors the other makes. The same count compiles once."""
    model = runtimes.load_openvino(model_dir, threads=2, gathered_threads=1, batch_size=16)
    assert model.request.get_compiled_model().get_property("INFERENCE_NUM_THREADS") == 2
    assert model.gathered_request.get_compiled_model().get_property("INFERENCE_NUM_THREADS") == 1
    assert model.description.endswith(", bf16, 2 threads (1 for gathered batches)") or (
        model.description.endswith(", f32, 2 threads (1 for gathered batches)")
    )
    np.testing.assert_allclose(model.encode(TEXTS, gathered=True), model.encode(TEXTS), atol=1e-5)
    once = runtimes.load_openvino(model_dir, threads=1, gathered_threads=1, batch_size=16)
    assert once.gathered_request is None
    assert once.description.endswith(", 1 threads")


def _fully_connected_precisions(request) -> list[str]:
    """The precision each matrix product of a compiled graph runs in (``i8``: weights kept
    compressed, decompressed in every call)."""
    graph = request.get_compiled_model().get_runtime_model()
    return [
        op.get_rt_info()["runtimePrecision"].astype(str)
        for op in graph.get_ops()
        if op.get_rt_info()["layerType"].astype(str) == "FullyConnected"
    ]


def test_unpacked_int8_weights_make_the_same_outputs_bit_for_bit(model_dir):
    """Each of the graph's 36 int8 weight matrices becomes its float32 values (the scale
    applied), the embeddings' tables stay int8, and the graph compiled for bfloat16 computes
    exactly what it computed with the weights packed."""
    ov = runtimes.import_openvino()
    core = ov.Core()
    if runtimes.openvino_precision(core) != "bf16":
        pytest.skip("this CPU does not compute in bfloat16")
    packed = core.read_model(str(model_dir / runtimes.ONNX_FILE))
    unpacked = core.read_model(str(model_dir / runtimes.ONNX_FILE))
    assert runtimes.unpack_int8_weights(ov, unpacked) == 36
    assert runtimes.unpack_int8_weights(ov, unpacked) == 0  # nothing left to unpack
    left = [op for op in unpacked.get_ops() if op.get_element_type() == ov.Type.i8]
    # the word and position embeddings' tables, read by a Gather each, not multiplied
    assert sorted(op.get_friendly_name() for op in left) == [
        "inner.embeddings.position_embeddings.weight_q",
        "inner.embeddings.word_embeddings.weight_q",
    ]
    config = runtimes.openvino_config("bf16", 1)
    tokenizer, _ = load_tokenizer(model_dir)
    # as the runtime does: OpenVINO would leave this thread a signal stack too small for wasmtime
    with runtimes.kept_signal_stack():
        requests = [
            core.compile_model(graph, "CPU", config).create_infer_request()
            for graph in (packed, unpacked)
        ]
        for texts in (TEXTS[:1], TEXTS[:16], TEXTS):
            encoded = tokenizer.encode_batch(texts)
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            feed = {
                "input_ids": ids,
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
                "token_type_ids": np.zeros_like(ids),
            }
            before, after = (request.infer(feed)[0].copy() for request in requests)
            np.testing.assert_array_equal(after, before)


def test_unpacking_leaves_weights_used_by_more_than_a_product_alone():
    """On a small graph: a weight used only by a product is unpacked and the product computes
    the same; one also used elsewhere (like the embeddings' tables) keeps its int8 form."""
    ov = runtimes.import_openvino()
    opset = ov.opset13

    def graph(*, shared: bool) -> object:
        x = opset.parameter([2, 3], np.float32, name="x")
        weights = opset.constant(np.arange(-6, 6, dtype=np.int8).reshape(3, 4))
        scale = opset.constant(np.array([0.5, 1.0, 1.5, 2.0], dtype=np.float32))
        values = opset.multiply(opset.convert(weights, np.float32), scale)
        results = [opset.matmul(x, values, False, False)]
        if shared:
            results.append(opset.add(values, values))
        return ov.Model(results, [x])

    core = ov.Core()
    x = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0]], dtype=np.float32)
    expected = x @ (np.arange(-6, 6).reshape(3, 4) * np.array([0.5, 1.0, 1.5, 2.0]))
    alone = graph(shared=False)
    assert runtimes.unpack_int8_weights(ov, alone) == 1
    with runtimes.kept_signal_stack():
        got = core.compile_model(alone, "CPU", runtimes.openvino_config("f32", 1))({"x": x})
    np.testing.assert_allclose(next(iter(got.values())), expected, rtol=1e-6)
    assert runtimes.unpack_int8_weights(ov, graph(shared=True)) == 0


def test_openvino_unpacks_the_weights_for_bfloat16_only(model_dir):
    """In bfloat16 every matrix product runs on unpacked weights (none decompresses int8 in
    each call); in float32 the weights stay packed, as fast there and a smaller process."""
    ov = runtimes.import_openvino()
    if runtimes.openvino_precision(ov.Core()) != "bf16":
        pytest.skip("this CPU does not compute in bfloat16")
    model = runtimes.load_openvino(model_dir, threads=2, gathered_threads=1, batch_size=16)
    for request in (model.request, model.gathered_request):
        precisions = _fully_connected_precisions(request)
        assert len(precisions) == 36
        assert set(precisions) == {"bf16"}
    f32 = runtimes.load_openvino(model_dir, threads=1, batch_size=16, precision="f32")
    assert set(_fully_connected_precisions(f32.request)) == {"i8"}


@pytest.mark.trio
async def test_auto_takes_openvino_and_says_so(model_dir, nursery):
    embedder = await nursery.start(Embedder(cache_dir=model_dir).run)
    assert embedder.statistics().runtime.startswith("openvino ")


@pytest.mark.trio
async def test_auto_falls_back_to_onnxruntime_when_openvino_cannot_load(
    model_dir, nursery, monkeypatch, caplog
):
    """No importable OpenVINO (a platform without its wheel): a warning, then onnxruntime."""
    monkeypatch.setitem(sys.modules, "openvino", None)
    with caplog.at_level(logging.WARNING, logger="caxton.memory.embedder"), trio.fail_after(60):
        embedder = await nursery.start(Embedder(cache_dir=model_dir).run)
        vector = await embedder.embed_one("hello")
    assert vector.shape == (384,)
    assert embedder.statistics().runtime.startswith("onnxruntime ")
    assert "OpenVINO cannot run the embedding model" in caplog.text
    assert "using onnxruntime" in caplog.text


@pytest.mark.trio
async def test_openvino_asked_for_and_missing_is_a_startup_error(model_dir, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with trio.fail_after(60), pytest.raises(EmbeddingModelError) as info:
        await Embedder(cache_dir=model_dir, runtime="openvino").run()
    assert "OpenVINO cannot load it" in info.value.message
    assert "memory.embedding_config.runtime: onnxruntime" in info.value.message


@pytest.mark.trio
async def test_onnxruntime_asked_for_is_used(model_dir, nursery):
    embedder = await nursery.start(Embedder(cache_dir=model_dir, runtime="onnxruntime").run)
    assert embedder.statistics().runtime.startswith("onnxruntime ")
    assert (await embedder.embed_one("hello")).shape == (384,)


# A guest that traps under three calls of its own, so that wasmtime's signal handler walks a
# few frames (the handler's stack use grows with them).
_TRAPPING_GUEST = """
(module
  (func $deep (param i32) (result i32)
    local.get 0
    i32.eqz
    if (result i32)
      unreachable
    else
      local.get 0
      i32.const 1
      i32.sub
      call $deep
    end)
  (func (export "run") (result i32) i32.const 3 call $deep))
"""

_SHARED_THREAD = """
import sys, threading
from pathlib import Path
import trio, wasmtime
from caxton.memory import runtimes

engine = wasmtime.Engine()
module = wasmtime.Module(engine, sys.argv[2])

def trap():
    store = wasmtime.Store(engine)
    run = wasmtime.Instance(store, module, []).exports(store)["run"]
    try:
        run(store)
    except wasmtime.Trap:
        pass
    return threading.get_native_id(), runtimes.signal_stack()

def load_and_encode():
    model = runtimes.load_openvino(Path(sys.argv[1]), threads=2, batch_size=8)
    model.encode(["a guest traps after the model ran here"] * 3)
    return threading.get_native_id(), runtimes.signal_stack()

async def main():
    seen = [await trio.to_thread.run_sync(step) for step in (trap, load_and_encode, trap)]
    for _ in range(20):
        seen.append(await trio.to_thread.run_sync(trap))
    assert len({thread for thread, _ in seen}) == 1, seen  # trio reused one thread
    print("|".join(str(stack) for _, stack in seen[:3]))

trio.run(main)
"""


def test_a_guest_trap_after_openvino_in_the_same_thread_does_not_stop_the_process(model_dir):
    """OpenVINO's compile leaves a small signal stack of its own on the calling thread; a
    wasmtime trap handled on it killed the server (SIGSEGV). The thread gets its own back."""
    done = subprocess.run(
        [sys.executable, "-c", _SHARED_THREAD, str(model_dir), _TRAPPING_GUEST],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    wasmtime_stack, after_model, after_trap = done.stdout.strip().split("|")
    assert wasmtime_stack == after_model == after_trap, done.stdout
