"""The embedder component: all-MiniLM-L6-v2, loaded once, run in a thread.

``run()`` prepares the model folder (:mod:`caxton.memory.model`) and loads it before it reports
started, so a missing or damaged model stops the server at start with a message naming the file
and the fix, never at the first search. The model runs on OpenVINO or onnxruntime
(:mod:`caxton.memory.runtimes`, ``memory.embedding_config.runtime``). Encoding runs in a worker
thread behind the component's ``CapacityLimiter(1)`` (the runtime has its own ``threads`` for the
maths), in batches of ``batch_size``. An LRU cache of ``cache_size`` texts saves re-encoding the
same query; its hit rate is the seed's ``caxton_memory_cache_hit_rate``.

Micro-batching. Callers do not run the model themselves: they queue their texts and ``run()``'s
batcher encodes everything queued in one model call. A request that finds the model idle is
encoded at once (no waiting window: a lone search is not delayed); requests that arrive while a
batch runs are gathered and go together in the next one, up to ``max_batch`` texts, so the window
adapts to the load by itself (it is as long as the batch before it). Sixteen concurrent writers
or searches thus cost a few model calls instead of sixteen. A batch that gathers several callers'
texts runs on ``gathered_threads`` (one less than ``threads`` by default): under that load the
model is busy all the time and the rest of the server needs a core beside it
(:class:`caxton.memory.runtimes.OpenVinoRuntime`); one caller's texts run on all ``threads``.
Each caller gets its own rows back;
if a batch fails, its requests are encoded again one by one, so a bad text fails only the
request that carried it. A caller cancelled while it waits leaves the queue (or, once its batch
has started, its rows are dropped); the batch goes on for the others.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, NoReturn, Protocol

import attrs
import numpy as np
import trio
from numpy.typing import NDArray

from caxton.memory.model import EMBEDDING_DIM, assemble_default_model, check_model_dir
from caxton.memory.runtimes import ModelRuntime, RuntimeChoice, load_runtime

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

LOGGER = logging.getLogger("caxton.memory.embedder")


class TextEncoder(Protocol):
    """What the memory service needs from an embedder (the seam for other encoders)."""

    dim: int

    async def embed(
        self, texts: Sequence[str], *, use_cache: bool = True
    ) -> NDArray[np.float32]: ...

    async def embed_one(self, text: str) -> NDArray[np.float32]: ...


@attrs.frozen(kw_only=True)
class EmbedderStatistics:
    """A snapshot of the embedder's counters.

    Attributes:
        hit_rate: cache hits over lookups since start (0.0 before the first lookup).
    """

    model_path: str
    #: what runs the model ("openvino 2026.4.1, bf16, 2 threads"); "" before it loads
    runtime: str
    loaded: bool
    dim: int
    load_seconds: float
    cache_size: int
    cache_entries: int
    cache_hits: int
    cache_misses: int
    hit_rate: float
    texts_embedded: int
    batches: int
    embed_seconds_total: float


#: texts per model call at most, gathered from every waiting caller
MAX_BATCH_TEXTS = 256
#: inference threads at most when ``memory.embedding_config.threads`` is not set
MAX_DEFAULT_THREADS = 4


def default_threads(*, workers: int = 1, cores: int | None = None) -> int:
    """Inference threads for one server process when the config names none: the cores
    (at most :data:`MAX_DEFAULT_THREADS`) shared among the host's ``server.workers``
    processes, at least one each.

    Every worker loads its own model; with each taking every core, N workers ran N times
    as many inference threads as there are cores, which then preempt each other mid-batch.
    (On this project's 2-core bench machine the write rate of two workers moved within its
    noise: 148 and 127 writes/s with one thread each, 136 and 125 with two.)
    """
    available = min(MAX_DEFAULT_THREADS, cores or os.cpu_count() or 1)
    return max(1, available // max(1, workers))


def default_gathered_threads(threads: int) -> int:
    """Inference threads for a batch gathered from several callers when the config names
    none: one less than ``threads``, at least one (a core left to the event loop and the
    store, which are busy too whenever batches gather)."""
    return max(1, threads - 1)


@attrs.define(eq=False)
class _Request:
    """One caller's texts waiting for the batcher."""

    texts: list[str]
    done: trio.Event = attrs.field(factory=trio.Event)
    vectors: NDArray[np.float32] | None = None
    error: BaseException | None = None
    #: taken into a batch (its rows will be computed even if the caller goes)
    started: bool = False
    #: the caller was cancelled; the batcher skips it
    abandoned: bool = False

    def succeed(self, vectors: NDArray[np.float32]) -> None:
        self.vectors = vectors
        self.done.set()

    def fail(self, error: BaseException) -> None:
        self.error = error
        self.done.set()


def _fail_stopped(requests: Iterable[_Request]) -> None:
    """Tell the callers of ``requests`` that the embedder stopped before encoding them."""
    for request in requests:
        request.fail(RuntimeError("the embedder stopped"))


class Embedder:
    """Turns texts into unit-length float32 vectors of ``dim`` numbers.

    Args:
        cache_dir: where the packaged model folder is assembled (for example
            ``data_dir/models/all-MiniLM-L6-v2``); used when ``model_path`` is None.
        model_path: another local model folder with ``model.onnx`` and the tokenizer files
            (``memory.embedding_model``), used as is.
        batch_size: texts per onnxruntime call.
        cache_size: texts kept in the LRU embedding cache (0 disables it).
        threads: the runtime's threads for the maths.
        gathered_threads: the runtime's threads for a batch of several callers' texts (None:
            :func:`default_gathered_threads`).
        runtime: ``memory.embedding_config.runtime``: ``auto``, ``openvino`` or
            ``onnxruntime`` (:func:`caxton.memory.runtimes.load_runtime`).
    """

    def __init__(
        self,
        *,
        cache_dir: Path,
        model_path: Path | None = None,
        batch_size: int = 32,
        cache_size: int = 10_000,
        threads: int = 2,
        gathered_threads: int | None = None,
        max_batch: int = MAX_BATCH_TEXTS,
        runtime: RuntimeChoice = "auto",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if cache_size < 0:
            raise ValueError(f"cache_size cannot be negative, got {cache_size}")
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        if gathered_threads is not None and gathered_threads < 1:
            raise ValueError(f"gathered_threads must be at least 1, got {gathered_threads}")
        self.cache_dir = cache_dir
        self.model_path = model_path
        self.batch_size = batch_size
        self.cache_size = cache_size
        self.threads = threads
        self.gathered_threads = (
            default_gathered_threads(threads) if gathered_threads is None else gathered_threads
        )
        self.max_batch = max_batch
        self.runtime = runtime
        self.dim = EMBEDDING_DIM
        self._limiter = trio.CapacityLimiter(1)
        self._model: ModelRuntime | None = None
        self._resolved_path: Path | None = None
        self._cache: collections.OrderedDict[str, NDArray[np.float32]] = collections.OrderedDict()
        self._hits = 0
        self._misses = 0
        self._texts_embedded = 0
        self._batches = 0
        self._embed_seconds = 0.0
        self._load_seconds = 0.0
        self._queue: collections.deque[_Request] = collections.deque()
        self._queued = trio.Event()
        self._stopped = False

    async def run(
        self, *, task_status: trio.TaskStatus[Embedder] = trio.TASK_STATUS_IGNORED
    ) -> NoReturn:
        """Load the model, report started with this embedder, then wait until cancelled.

        Raises:
            EmbeddingModelError: the model folder is missing, incomplete or cannot be loaded;
                the message names the file and the pip command or setting that fixes it.

        Cancellation:
            Cancelling ``run`` unloads the model. A load or a batch in progress finishes first
            (a worker thread cannot be interrupted); requests still queued then fail with
            RuntimeError.

        Resource handling:
            The model (its runtime's session) is released when ``run`` exits; ``embed`` then raises.
        """
        started = time.perf_counter()
        self._model = await trio.to_thread.run_sync(self._load_sync, limiter=self._limiter)
        self._load_seconds = time.perf_counter() - started
        LOGGER.info(
            "embedding model %s loaded in %.2fs (%s)",
            self._resolved_path,
            self._load_seconds,
            self._model.description,
        )
        self._stopped = False
        try:
            task_status.started(self)
            await self._batch_forever()
        finally:
            self._model = None
            self._stopped = True
            waiting, self._queue = self._queue, collections.deque()
            _fail_stopped(waiting)

    async def _batch_forever(self) -> NoReturn:
        while True:
            await self._queued.wait()
            self._queued = trio.Event()
            # One checkpoint, so that requests made in the same scheduler pass join this batch.
            await trio.sleep(0)  # noqa: ASYNC115 - a plain checkpoint, not trio.lowlevel
            while self._queue:
                await self._run_batch(self._take_batch())

    def _take_batch(self) -> list[_Request]:
        """The oldest waiting requests, up to ``max_batch`` texts (always at least one)."""
        batch: list[_Request] = []
        texts = 0
        while self._queue:
            request = self._queue[0]
            if batch and texts + len(request.texts) > self.max_batch:
                break
            self._queue.popleft()
            if request.abandoned:
                continue
            request.started = True
            batch.append(request)
            texts += len(request.texts)
        return batch

    async def _run_batch(self, batch: list[_Request]) -> None:
        """Encode ``batch`` and give each request its rows or its error.

        Every request of ``batch`` has left the queue, so every one is answered here, also
        when the embedder stops meanwhile (a model call cannot be cancelled once in its
        thread: a stop takes effect before a call starts, and that batch never ran).
        """
        if not batch:
            return
        unique = list(dict.fromkeys(text for request in batch for text in request.texts))
        try:
            vectors = await self._encode(unique, gathered=len(batch) > 1)
        except Exception as exc:
            if len(batch) == 1:
                batch[0].fail(exc)
                return
            # Someone's text broke the batch: find whose, one request at a time.
            for index, request in enumerate(batch):
                try:
                    await self._run_batch([request])
                except BaseException:
                    _fail_stopped(batch[index + 1 :])
                    raise
            return
        except BaseException:
            _fail_stopped(batch)
            raise
        rows = {text: i for i, text in enumerate(unique)}
        for request in batch:
            request.succeed(vectors[[rows[text] for text in request.texts]])

    async def _submit(self, texts: list[str]) -> NDArray[np.float32]:
        """Queue ``texts`` for the batcher and wait for their vectors (module docstring)."""
        if self._model is None or self._stopped:
            raise RuntimeError("the embedder is not running; start Embedder.run() first")
        request = _Request(texts=texts)
        self._queue.append(request)
        self._queued.set()
        try:
            await request.done.wait()
        except BaseException:
            request.abandoned = True
            if not request.started:
                with contextlib.suppress(ValueError):
                    self._queue.remove(request)
            raise
        if request.error is not None:
            raise request.error
        assert request.vectors is not None
        return request.vectors

    def _load_sync(self) -> ModelRuntime:
        if self.model_path is None:
            path = assemble_default_model(self.cache_dir)
        else:
            path = self.model_path
        check_model_dir(path)
        self._resolved_path = path
        return load_runtime(
            self.runtime,
            path,
            threads=self.threads,
            gathered_threads=self.gathered_threads,
            batch_size=self.batch_size,
            packaged=self.model_path is None,
        )

    async def embed(self, texts: Sequence[str], *, use_cache: bool = True) -> NDArray[np.float32]:
        """Return one unit-length vector per text, as rows of an ``(n, dim)`` array.

        Args:
            texts: the texts to encode.
            use_cache: look texts up in (and add them to) the LRU cache. Bulk writes pass
                False so stored entities do not push search queries out of the cache; they
                then count as neither hits nor misses.

        Raises:
            RuntimeError: the model is not loaded (``run`` has not started or has ended).

        Cancellation:
            A batch that has started in the worker thread finishes first; cancellation takes
            effect when it returns. Vectors already computed are kept in the cache.

        Resource handling:
            One batch runs at a time (the embedder's limiter), holding the texts of every
            caller waiting then (module docstring); texts found in the cache do not reach the
            model.
        """
        result = np.empty((len(texts), self.dim), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for index, text in enumerate(texts):
            cached = self._cache_get(text) if use_cache else None
            if cached is None:
                missing.setdefault(text, []).append(index)
            else:
                result[index] = cached
        if missing:
            unique = list(missing)
            for start in range(0, len(unique), self.max_batch):
                chunk = unique[start : start + self.max_batch]
                vectors = await self._submit(chunk)
                for text, vector in zip(chunk, vectors, strict=True):
                    if use_cache:
                        self._cache_put(text, vector)
                    for index in missing[text]:
                        result[index] = vector
        return result

    async def embed_one(self, text: str) -> NDArray[np.float32]:
        """Return the vector of one text (see :meth:`embed`).

        Cancellation:
            As :meth:`embed`.

        Resource handling:
            As :meth:`embed`.
        """
        matrix = await self.embed([text])
        vector: NDArray[np.float32] = matrix[0]
        return vector

    async def _encode(self, texts: list[str], *, gathered: bool) -> NDArray[np.float32]:
        model = self._model
        if model is None:
            raise RuntimeError("the embedder is not running; start Embedder.run() first")
        started = time.perf_counter()
        vectors = await trio.to_thread.run_sync(
            self._encode_sync, model, texts, gathered, limiter=self._limiter
        )
        self._embed_seconds += time.perf_counter() - started
        self._batches += 1
        self._texts_embedded += len(texts)
        return vectors

    def _encode_sync(
        self, model: ModelRuntime, texts: list[str], gathered: bool
    ) -> NDArray[np.float32]:
        # A bad text (one the tokenizer cannot take) raises here, failing its batch only.
        return model.encode(texts, gathered=gathered)

    def _cache_get(self, text: str) -> NDArray[np.float32] | None:
        if self.cache_size == 0:
            self._misses += 1
            return None
        vector = self._cache.get(text)
        if vector is None:
            self._misses += 1
            return None
        self._hits += 1
        self._cache.move_to_end(text)
        return vector

    def _cache_put(self, text: str, vector: NDArray[np.float32]) -> None:
        if self.cache_size == 0:
            return
        vector.setflags(write=False)
        self._cache[text] = vector
        self._cache.move_to_end(text)
        while len(self._cache) > self.cache_size:
            self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        """Forget every cached vector (``caxton memory cache-clear``); counters are kept."""
        self._cache.clear()

    def statistics(self) -> EmbedderStatistics:
        """Return a snapshot of the embedder's counters."""
        lookups = self._hits + self._misses
        return EmbedderStatistics(
            model_path=str(self._resolved_path or self.model_path or self.cache_dir),
            runtime=self._model.description if self._model is not None else "",
            loaded=self._model is not None,
            dim=self.dim,
            load_seconds=self._load_seconds,
            cache_size=self.cache_size,
            cache_entries=len(self._cache),
            cache_hits=self._hits,
            cache_misses=self._misses,
            hit_rate=self._hits / lookups if lookups else 0.0,
            texts_embedded=self._texts_embedded,
            batches=self._batches,
            embed_seconds_total=self._embed_seconds,
        )
