"""The embedding model's inference runtimes: OpenVINO, or onnxruntime through fastembed.

Both run the same ONNX graph with the same tokenizer (fastembed's, read from the model folder)
and the same mean pooling and normalization, so they make the same vectors up to the precision
the maths runs in. :func:`load_runtime` picks one (``memory.embedding_config.runtime``):

* ``openvino`` compiles the graph for the CPU in bfloat16 where the CPU computes in it natively
  (AMX or AVX-512 BF16, which OpenVINO reports as ``BF16``), in float32 elsewhere. On this
  project's 2-core bench machine it embedded the write load's texts 1.9-2.8 times as fast as
  onnxruntime (the bench's ceiling, batches of 16: 1.9-2.1; alone in batches of 32, about 1,100
  against 420 texts/s); its vectors agree with onnxruntime's to a cosine of 0.9999 or better
  (bf16) or to float rounding (f32, within 2e-5). Its dynamic
  quantization of activations, on by default for graphs with int8 weights like the packaged
  one, is turned off: it cost up to 0.001 of cosine for no gain over bf16. Its threads are not
  pinned to cores (``server.workers`` processes share them). The graph is compiled twice when
  ``gathered_threads`` differs from ``threads``: a call that gathers several callers' texts
  (the embedder's batch under concurrent load) runs on the fewer threads, one caller's texts on
  all of them (see :class:`OpenVinoRuntime`).
* ``onnxruntime`` is the fastembed session as before, reopened without spinning threads and
  without the slower fusion (:data:`SLOW_FUSIONS`).
* ``auto`` (the default) takes OpenVINO and falls back to onnxruntime, with a warning, when
  OpenVINO cannot be imported or cannot compile the graph.

A runtime is synchronous and not thread-safe: the embedder calls :meth:`ModelRuntime.encode`
from one worker thread at a time (its ``CapacityLimiter(1)``). Loading blocks too.

OpenVINO and wasmtime share the process, and their worker threads (trio's thread cache hands
the same threads to the embedder and to the WASM pool). OpenVINO's CPU plugin, when it compiles
a graph, gives the calling thread its own alternate signal stack (``sigaltstack``) of about
20 KB, sized for a signal frame that carries the AMX tile state it has just asked the kernel
for, and leaves it there. wasmtime turns a guest's trap into a signal handled on that stack;
with the frame taking most of those 20 KB, its handler overran it and the kernel killed the
whole server (SIGSEGV) on the next guest trap in such a thread. Every OpenVINO call here runs
in :func:`kept_signal_stack`, which puts back the thread's own signal stack (wasmtime's
256 KB, or none, which wasmtime then replaces with its own) as soon as the call returns.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Literal, Protocol

import attrs
import numpy as np
from tokenizers import Tokenizer

from caxton.memory.errors import MODEL_INSTALL_HINT, EmbeddingModelError
from caxton.memory.model import EMBEDDING_DIM, FASTEMBED_MODEL, ONNX_FILE

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from pathlib import Path

    from fastembed import TextEmbedding
    from numpy.typing import NDArray

LOGGER = logging.getLogger("caxton.memory.embedder")

RuntimeChoice = Literal["auto", "openvino", "onnxruntime"]

#: The environment variable that keeps onnxruntime from reporting telemetry (set before the
#: runtime loads, unless the environment already sets it).
RUNTIME_TELEMETRY_OFF = "ORT_DISABLE_TELEMETRY"

#: onnxruntime graph rewrites the embedder's session leaves out. SkipLayerNormFusion folds each
#: residual add into the layer norm after it, and onnxruntime's fused kernel is slower on this
#: graph than the two ops it replaces (for one 16-token text on one thread, its twelve norms take
#: about 0.7 ms against 0.45 ms for the plain norms and adds), so leaving it out saves 6-9% of
#: each model call's CPU and time. The vectors are the same to within a few millionths.
SLOW_FUSIONS: tuple[str, ...] = ("SkipLayerNormFusion",)


class ModelRuntime(Protocol):
    """A loaded model: texts in, unit-length float32 rows out."""

    #: what runs the model, for logs and statistics ("openvino 2026.4.1, bf16, 2 threads")
    description: str

    def encode(self, texts: Sequence[str], *, gathered: bool = False) -> NDArray[np.float32]:
        """One row per text, in batches of the runtime's batch size; blocks. ``gathered``:
        the texts of several callers, gathered while the model was busy (the server is under
        concurrent load); a runtime may run such a call on fewer threads."""
        ...


def unit_mean_pooled(hidden: NDArray[Any], mask: NDArray[np.int64]) -> NDArray[np.float32]:
    """The mean of each row's token states over its attention mask, scaled to unit length
    (fastembed's pooling for all-MiniLM-L6-v2: summed in float64, cast after normalizing)."""
    weights = mask[..., None].astype(np.float64)
    summed = (hidden.astype(np.float64) * weights).sum(axis=1)
    mean = summed / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)
    return np.asarray(mean / norms, dtype=np.float32)


# ------------------------------------------------------------------- the thread's signal stack


class SignalStack(ctypes.Structure):
    """Linux's ``stack_t``, as ``sigaltstack(2)`` reads and sets it."""

    _fields_ = (
        ("ss_sp", ctypes.c_void_p),
        ("ss_flags", ctypes.c_int),
        ("ss_size", ctypes.c_size_t),
    )


@functools.cache
def _libc() -> Any:
    return ctypes.CDLL(None, use_errno=True) if sys.platform == "linux" else None


def signal_stack() -> tuple[int, int, int] | None:
    """The calling thread's alternate signal stack as (address, flags, size); None where it
    cannot be read (not Linux)."""
    libc = _libc()
    current = SignalStack()
    if libc is None or libc.sigaltstack(None, ctypes.byref(current)) != 0:
        return None
    return (current.ss_sp or 0, current.ss_flags, current.ss_size)


@contextlib.contextmanager
def kept_signal_stack() -> Iterator[None]:
    """Run the body, then give the calling thread back the alternate signal stack it had
    before, if the body replaced it (module docstring: OpenVINO's compile does)."""
    libc = _libc()
    before = SignalStack()
    if libc is None or libc.sigaltstack(None, ctypes.byref(before)) != 0:
        yield
        return
    try:
        yield
    finally:
        after = SignalStack()
        libc.sigaltstack(None, ctypes.byref(after))
        if (after.ss_sp, after.ss_flags, after.ss_size) != (
            before.ss_sp,
            before.ss_flags,
            before.ss_size,
        ) and libc.sigaltstack(ctypes.byref(before), None) != 0:
            LOGGER.warning(
                "could not give a thread back its signal stack after OpenVINO (errno %d); "
                "a WASM guest's trap in that thread may stop the server",
                ctypes.get_errno(),
            )


# ------------------------------------------------------------------------------- OpenVINO


@attrs.define(eq=False)
class OpenVinoRuntime:
    """The graph compiled by OpenVINO for the CPU, with fastembed's tokenizer.

    ``gathered_request`` is the same graph compiled for fewer threads, for the calls that
    gather several callers' texts (None: ``request`` takes those too). Under concurrent load
    the model is busy all the time and the event loop, the store and PostgreSQL want a core
    beside it; a model on every core then has a thread preempted in most calls while the
    others wait for it at the end of each layer. On this project's 2-core bench machine the
    gathered calls on one thread instead of two cost 13-22% less of the server's CPU per
    entity write, and PostgreSQL's writes (there the two cores are the limit) went from
    220-284 to 258-284 a second in five interleaved pairs; a lone search or write still
    runs on both threads, as fast as before. The second compile adds about 17 MiB (the
    graph is read once) and 0.2 s to the load.
    """

    tokenizer: Tokenizer
    request: Any  # openvino.InferRequest
    inputs: frozenset[str]
    batch_size: int
    description: str
    gathered_request: Any = None  # openvino.InferRequest on fewer threads, or None

    def encode(self, texts: Sequence[str], *, gathered: bool = False) -> NDArray[np.float32]:
        request = self.request
        if gathered and self.gathered_request is not None:
            request = self.gathered_request
        rows: list[NDArray[np.float32]] = []
        for start in range(0, len(texts), self.batch_size):
            encoded = self.tokenizer.encode_batch(list(texts[start : start + self.batch_size]))
            ids = np.array([e.ids for e in encoded], dtype=np.int64)
            mask = np.array([e.attention_mask for e in encoded], dtype=np.int64)
            feed = {"input_ids": ids}
            if "attention_mask" in self.inputs:
                feed["attention_mask"] = mask
            if "token_type_ids" in self.inputs:
                feed["token_type_ids"] = np.zeros_like(ids)
            with kept_signal_stack():
                hidden = request.infer(feed)[0]
            rows.append(unit_mean_pooled(hidden, mask))
        if not rows:
            return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        return np.concatenate(rows)


#: OpenVINO's model converter, which its package imports on ``import openvino`` unless the import
#: fails (see :func:`import_openvino`)
OPENVINO_CONVERTER = "openvino.tools.ovc"


def import_openvino() -> Any:
    """Import OpenVINO's runtime without its model converter.

    ``import openvino`` also imports ``openvino.tools.ovc``, and that starts OpenVINO's
    telemetry on import: a client id and a usage count written under ``~/intel``, and events
    sent to Google Analytics once someone on the machine opts in. Caxton reads the ONNX graph
    directly and converts nothing, so the converter's entry in ``sys.modules`` is set to None
    first (the import then raises ImportError, which openvino's ``__init__`` passes over).
    """
    if OPENVINO_CONVERTER not in sys.modules:
        sys.modules[OPENVINO_CONVERTER] = None  # type: ignore[assignment]
    import openvino as ov  # type: ignore[import-untyped]

    return ov


def openvino_precision(core: Any) -> str:
    """``bf16`` where the CPU computes in bfloat16 natively, else ``f32``."""
    capabilities = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    return "bf16" if "BF16" in capabilities else "f32"


def unpack_int8_weights(ov: Any, graph: Any) -> int:
    """Replace each int8 weight matrix of ``graph``'s products by its float32 values.

    The packaged graph stores its 36 weight matrices as int8 with a scale each
    (``Constant(i8) -> Convert -> Multiply(scale) -> MatMul``). OpenVINO's CPU plugin keeps such
    weights int8 and decompresses them in every call (its ``FullyConnectedCompressed``): in
    bfloat16 that was 70-80% of a call's time for the short texts the embedder sees. Given
    the products' own values (``int8 * scale``, the one float32 rounding the plugin's
    decompression makes too), it packs them for the bfloat16 kernels once, when it compiles:
    the same vectors bit for bit, and on this project's bench machine 25-35% less CPU per text
    for one to eight texts, 15% for sixteen (a lone text on two threads: 2.0 against 2.7 ms).
    The cost is memory: the float32 matrices stay with the graph and each compile packs its
    own copy (about 90 MiB more with both compiles; the unpacking itself takes about 20 ms of
    the load). In float32 the decompressing kernels are
    as fast as the plain ones, so :func:`load_openvino` unpacks for bfloat16 only.

    Returns how many matrices it unpacked; a graph without such weights is left alone.
    """
    unpacked = 0
    for node in graph.get_ops():
        if node.get_type_name() != "Multiply":
            continue
        convert, scale = (port.get_source_output().get_node() for port in node.inputs())
        if convert.get_type_name() != "Convert" or scale.get_type_name() != "Constant":
            continue
        weights = convert.input(0).get_source_output().get_node()
        if weights.get_type_name() != "Constant" or weights.get_element_type() not in (
            ov.Type.i8,
            ov.Type.u8,
        ):
            continue
        if not all(
            target.get_node().get_type_name() == "MatMul"
            for target in node.output(0).get_target_inputs()
        ):
            continue  # the embeddings' tables (read by a Gather, not multiplied) stay int8
        # the product as numpy makes it, unless OpenVINO broadcasts these shapes otherwise
        shape = node.get_output_partial_shape(0)
        try:
            values = weights.get_data().astype(np.float32) * scale.get_data().astype(np.float32)
        except ValueError:
            continue
        if not shape.is_static or values.shape != tuple(shape.to_shape()):
            continue
        node.output(0).replace(ov.opset13.constant(values).output(0))
        unpacked += 1
    return unpacked


def openvino_config(precision: str, threads: int) -> dict[str, Any]:
    """How the embedder compiles the graph: in ``precision`` on ``threads`` unpinned threads,
    one stream, activations not quantized (module docstring)."""
    return {
        "INFERENCE_PRECISION_HINT": precision,
        "INFERENCE_NUM_THREADS": threads,
        "NUM_STREAMS": 1,
        "PERFORMANCE_HINT": "LATENCY",
        "ENABLE_CPU_PINNING": False,
        "DYNAMIC_QUANTIZATION_GROUP_SIZE": 0,
    }


def load_openvino(
    path: Path,
    *,
    threads: int,
    batch_size: int,
    gathered_threads: int | None = None,
    precision: str | None = None,
) -> OpenVinoRuntime:
    """Compile ``path``'s graph with OpenVINO (module docstring) for ``threads``, and once
    more for ``gathered_threads`` when given and different (:class:`OpenVinoRuntime`);
    ``precision`` None picks :func:`openvino_precision`. Raises what OpenVINO or the
    tokenizer raise."""
    from fastembed.common.preprocessor_utils import load_tokenizer

    tokenizer, _ = load_tokenizer(path)
    with kept_signal_stack():
        ov = import_openvino()
        core = ov.Core()
        precision = precision or openvino_precision(core)
        graph = core.read_model(str(path / ONNX_FILE))
        if precision == "bf16":
            unpack_int8_weights(ov, graph)

        def compiled_for(count: int) -> Any:
            return core.compile_model(graph, "CPU", openvino_config(precision, count))

        compiled = compiled_for(threads)
        request = compiled.create_infer_request()
        gathered_request = None
        description = f"openvino {ov.__version__.split('-')[0]}, {precision}, {threads} threads"
        if gathered_threads is not None and gathered_threads != threads:
            gathered_request = compiled_for(gathered_threads).create_infer_request()
            description += f" ({gathered_threads} for gathered batches)"
    return OpenVinoRuntime(
        tokenizer=tokenizer,
        request=request,
        inputs=frozenset(name for port in compiled.inputs for name in port.get_names()),
        batch_size=batch_size,
        description=description,
        gathered_request=gathered_request,
    )


# ---------------------------------------------------------------------------- onnxruntime


@attrs.define(eq=False)
class OnnxRuntime:
    """fastembed's model, its onnxruntime session reopened with :func:`session_options`."""

    model: Any  # fastembed.TextEmbedding, imported only when this runtime loads
    batch_size: int
    description: str

    def encode(self, texts: Sequence[str], *, gathered: bool = False) -> NDArray[np.float32]:
        # one session for every call: ``gathered`` changes nothing here
        rows = list(self.model.embed(list(texts), batch_size=self.batch_size))
        if not rows:
            return np.empty((0, EMBEDDING_DIM), dtype=np.float32)
        return np.asarray(np.stack(rows), dtype=np.float32)


def session_options(threads: int) -> Any:
    """onnxruntime session options for the embedder: ``threads`` intra- and inter-op threads,
    all graph optimizations, and the threads' busy-waiting off (onnxruntime's threads
    otherwise spin for a while after each call, a core burnt between batches)."""
    import onnxruntime as ort  # type: ignore[import-untyped]

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.add_session_config_entry("session.inter_op.allow_spinning", "0")
    return options


def open_session(onnx_path: Path, options: Any, providers: Sequence[str]) -> Any:
    """Open the graph at ``onnx_path`` as an onnxruntime session, without :data:`SLOW_FUSIONS`."""
    import onnxruntime as ort

    return ort.InferenceSession(
        str(onnx_path),
        providers=list(providers),
        sess_options=options,
        disabled_optimizers=list(SLOW_FUSIONS),
    )


def _reopen_session(model: TextEmbedding, onnx_path: Path, threads: int) -> None:
    """Reopen ``model``'s onnxruntime session with :func:`session_options` and
    :func:`open_session`.

    fastembed does not expose the session options; its session is ``model.model.model``. If a
    later fastembed moves it, the model keeps fastembed's session (logged, not fatal): threads
    that spin, and the slower fusions.
    """
    import onnxruntime as ort

    inner = getattr(model, "model", None)
    session = getattr(inner, "model", None)
    if not isinstance(session, ort.InferenceSession):
        LOGGER.debug(
            "fastembed's session not found; it keeps its spinning threads and slower fusions"
        )
        return
    inner.model = open_session(  # type: ignore[union-attr]
        onnx_path, session_options(threads), session.get_providers()
    )


def load_onnxruntime(path: Path, *, threads: int, batch_size: int) -> OnnxRuntime:
    """Load ``path`` through fastembed and reopen its session (module docstring)."""
    import onnxruntime as ort
    from fastembed import TextEmbedding

    model = TextEmbedding(
        FASTEMBED_MODEL, specific_model_path=str(path), local_files_only=True, threads=threads
    )
    _reopen_session(model, path / ONNX_FILE, threads)
    return OnnxRuntime(
        model=model,
        batch_size=batch_size,
        description=f"onnxruntime {ort.__version__}, f32, {threads} threads",
    )


# ---------------------------------------------------------------------------------- choice


def load_runtime(
    choice: RuntimeChoice,
    path: Path,
    *,
    threads: int,
    batch_size: int,
    packaged: bool,
    gathered_threads: int | None = None,
) -> ModelRuntime:
    """Load the model folder ``path`` with the runtime ``choice`` names (module docstring)
    and check that it makes vectors of :data:`EMBEDDING_DIM` numbers. ``gathered_threads``:
    OpenVINO's threads for gathered calls (:class:`OpenVinoRuntime`); onnxruntime runs every
    call on ``threads``.

    Raises:
        EmbeddingModelError: the graph cannot be loaded by the runtime asked for (with
            ``auto``: by either), or makes vectors of another size; the message names the file
            and the fix (``packaged``: the pip command; else replacing the file).
    """
    # huggingface_hub reads this when fastembed imports it; without it an offline lookup
    # retries for ~39 s before failing (research/deps-lab.md §5).
    os.environ["HF_HUB_OFFLINE"] = "1"
    # onnxruntime 1.29 and later, on Linux, report to Microsoft unless this is set before
    # they initialize: a device id and an event database under ~/.cache/Microsoft, and
    # uploads to mobile.events.data.microsoft.com retried every few seconds (lookups and
    # threads in an idle server, traffic nobody configured). fastembed imports onnxruntime,
    # so this holds for both runtimes. An operator's own setting of the variable is kept.
    os.environ.setdefault(RUNTIME_TELEMETRY_OFF, "1")
    fix = (
        MODEL_INSTALL_HINT
        if packaged
        else f"replace {path / ONNX_FILE} with a valid ONNX export of the model"
    )
    runtime: ModelRuntime | None = None
    if choice in ("auto", "openvino"):
        try:
            runtime = load_openvino(
                path, threads=threads, batch_size=batch_size, gathered_threads=gathered_threads
            )
            probe = runtime.encode(["caxton"])
            if runtime.gathered_request is not None:
                runtime.encode(["caxton"], gathered=True)
        except Exception as exc:
            if choice == "openvino":
                raise EmbeddingModelError(
                    path / ONNX_FILE,
                    f"OpenVINO cannot load it ({type(exc).__name__}: {exc})",
                    f"{fix}; or set memory.embedding_config.runtime: onnxruntime",
                ) from exc
            LOGGER.warning(
                "OpenVINO cannot run the embedding model (%s: %s); using onnxruntime, "
                "2-3 times slower on CPUs with bfloat16",
                type(exc).__name__,
                exc,
            )
            runtime = None
    if runtime is None:
        try:
            runtime = load_onnxruntime(path, threads=threads, batch_size=batch_size)
            probe = runtime.encode(["caxton"])
        except Exception as exc:
            raise EmbeddingModelError(
                path / ONNX_FILE, f"cannot be loaded ({type(exc).__name__}: {exc})", fix
            ) from exc
    if probe.shape != (1, EMBEDDING_DIM):
        raise EmbeddingModelError(
            path,
            f"the model makes {probe.shape[-1]}-number vectors; memory stores {EMBEDDING_DIM}",
            "use an all-MiniLM-L6-v2 compatible model (384 dimensions)",
        )
    return runtime
