"""The HNSW graph over the accelerator's vectors (usearch), and its file next to the DB.

The graph only proposes candidates: :class:`caxton.memory.layered.LayeredIndex` re-scores them
exactly with the numpy mirror. Keys are a 63-bit hash of the entity name. A graph is saved with
the mirror next to the DB file and loaded only when it matches the database
(:mod:`caxton.memory.saved_index`).

**Compact vectors.** The graph stores its vectors as f16 (:data:`GRAPH_DTYPE`): half of f32's
bytes. From the graph's threshold on, the mirror keeps f16 rows too
(:class:`caxton.memory.index.VectorIndex`'s ``compact_from``), and the candidates are re-scored
in float32 arithmetic from them: the rounding of f16 (|error| < 2e-3 in a similarity of unit
vectors) reorders only near-ties, which the recall tests measure. Snapshots taken to build a
graph are f16 too, so a build needs ~0.8 GB transiently at 1M rows, not 1.5.

**Parameters per size** (:func:`params_for`), chosen from the number of rows when a graph is
built (and, for the search-time ones, at each search):

=============  ============  =============  ================  =======
rows           connectivity  expansion_add  expansion_search  rescore
=============  ============  =============  ================  =======
< 200k         16            128            128               64
200k - 600k    24            160            192               128
>= 600k        24            200            96                48
=============  ============  =============  ================  =======

Why: recall of a fixed HNSW falls as the graph grows (longer greedy paths, more local minima),
so larger graphs get more links per node (connectivity; each step of 1 costs ~8 bytes a row,
kept at 24 so a 1M build stays within a few minutes on two cores) and a wider build beam
(expansion_add, which costs build time only). The search beam (expansion_search) and the
number of candidates re-scored exactly (re-scoring 64 rows costs ~25 us, 160 ~60 us) turn the
graph's approximate order into the exact top-k; a graph built this way needs no wider beam at
1M rows than at 100k. Measured at 1M rows (the bench's data, 300 embedded sentences, recall@10
against the mirror's exact top-10, graph search plus re-score): beam 256 / re-score 160 recall
0.9997 in 8.8 ms p50 on a loaded machine, 128 / 64 recall 0.9990 in 3.8 ms, 96 / 64 0.9970,
64 / 32 0.9933; the top tier takes 96 / 48 (after a restart of the bench's 1M store, whole
searches: recall@10 0.9974, p99 8.3 ms, against 0.9988 and 9.3 ms with 128 / 64).
Measured on real MiniLM vectors at 100k rows with the first row (f32 then): building took
~27 s on two threads and recall@10 was 1.0 in ~1 ms. A graph built in one tier and saved is
rebuilt when a restart finds the data in another tier (its parameters no longer match).

**RAM** (:func:`index_ram_bytes`, what ``caxton memory capacity-check`` reports): per row, the
mirror's vector (4 * dim bytes below the threshold, 2 * dim from it) and filter columns (9
bytes), the name and key tables (:data:`ROW_OVERHEAD_BYTES`), and from the threshold the
graph's f16 vector (2 * dim) plus its links: the base layer's 2 * connectivity 4-byte slots and
a node header and upper layers (:data:`GRAPH_NODE_HEADER_BYTES`), which RSS measured at 60k
rows as 8.3 * connectivity + 137 bytes. For 384-d at 1M rows that is ~2.0 GiB (mirror 1.0,
graph 1.0); a build needs ~0.8 GB more for its f16 snapshot while it runs.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import attrs
import numpy as np
from usearch.index import Index

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from numpy.typing import NDArray

BUILD_THREADS = 2
PARALLEL_BUILD_FROM = 10_000  # smaller graphs are built on one thread (a better graph)
BUILD_CHUNK = 2048
GRAPH_DTYPE = "f16"
SNAPSHOT_DTYPE = np.float16
#: bytes a row costs in the mirror's name tables (name string, list slot, two dict entries)
ROW_OVERHEAD_BYTES = 260
#: usearch's bytes per row beyond the vector and the base layer's links (measured RSS)
GRAPH_NODE_HEADER_BYTES = 140


@attrs.frozen(kw_only=True)
class HnswParams:
    """How a graph of a given size is built and searched (see the module docstring)."""

    connectivity: int
    expansion_add: int
    expansion_search: int
    rescore: int


_TIERS: tuple[tuple[int, HnswParams], ...] = (
    (600_000, HnswParams(connectivity=24, expansion_add=200, expansion_search=96, rescore=48)),
    (200_000, HnswParams(connectivity=24, expansion_add=160, expansion_search=192, rescore=128)),
    (0, HnswParams(connectivity=16, expansion_add=128, expansion_search=128, rescore=64)),
)


def params_for(rows: int) -> HnswParams:
    """The parameters for a graph of ``rows`` vectors."""
    for start, params in _TIERS:
        if rows >= start:
            return params
    return _TIERS[-1][1]


def index_ram_bytes(rows: int, dim: int, *, threshold: int | None) -> int:
    """The RAM the accelerator needs for ``rows`` vectors of length ``dim`` (module docstring).

    ``threshold``: the row count from which the graph exists and the mirror is f16 (None:
    never).
    """
    if threshold is None or rows < threshold:
        return rows * (4 * dim + 9 + ROW_OVERHEAD_BYTES)
    links = 2 * params_for(rows).connectivity * 4
    return rows * (2 * dim + 9 + ROW_OVERHEAD_BYTES + 2 * dim + links + GRAPH_NODE_HEADER_BYTES)


_KEY_MASK = (1 << 63) - 1


def key_of(name: str) -> int:
    """The graph key of an entity name (stable across processes)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _KEY_MASK


def keys_of(names: Iterable[str]) -> NDArray[np.uint64]:
    """:func:`key_of` for many names."""
    return np.fromiter((key_of(name) for name in names), dtype=np.uint64)


class HnswGraph:
    """A usearch inner-product HNSW index over unit vectors.

    Not thread-safe: the owner serialises mutations and searches.
    """

    def __init__(self, dim: int, params: HnswParams | None = None) -> None:
        self.dim = dim
        self.params = params_for(0) if params is None else params
        self._index = Index(
            ndim=dim,
            metric="ip",
            dtype=GRAPH_DTYPE,
            connectivity=self.params.connectivity,
            expansion_add=self.params.expansion_add,
            expansion_search=self.params.expansion_search,
        )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and bool(self._index.contains(key))

    @property
    def memory_bytes(self) -> int:
        """What usearch has allocated for the graph."""
        return int(self._index.memory_usage)

    def add(
        self,
        keys: NDArray[np.uint64],
        vectors: NDArray[np.float32] | NDArray[np.float16],
        *,
        threads: int = 1,
    ) -> None:
        """Add vectors (float32 or float16) under new keys."""
        if len(keys):
            self._index.add(keys, np.ascontiguousarray(vectors), threads=threads)

    def remove(self, keys: Iterable[int]) -> None:
        """Remove keys (absent ones are ignored)."""
        for key in keys:
            self._index.remove(key)

    def search(
        self, query: NDArray[np.float32], count: int, *, expansion: int | None = None
    ) -> NDArray[np.uint64]:
        """The keys of about ``count`` nearest vectors to the unit ``query``.

        ``expansion``: the search beam (default: the graph's ``expansion_search``).
        """
        if len(self._index) == 0:
            return np.zeros(0, dtype=np.uint64)
        beam = self.params.expansion_search if expansion is None else expansion
        if self._index.expansion_search != beam:
            self._index.expansion_search = beam  # type: ignore[misc]  # usearch has a setter
        matches = self._index.search(np.ascontiguousarray(query, np.float32), count)
        return np.asarray(matches.keys, dtype=np.uint64)

    def save(self, path: Path) -> None:
        """Write the graph to ``path``."""
        self._index.save(str(path))

    def load(self, path: Path) -> None:
        """Replace the graph with the one saved at ``path``."""
        self._index.load(str(path))


def build(
    dim: int,
    keys: NDArray[np.uint64],
    vectors: NDArray[np.float32] | NDArray[np.float16],
    *,
    checkpoint: Callable[[], None] | None = None,
) -> HnswGraph:
    """Build a graph tuned for ``len(keys)`` rows, calling ``checkpoint`` between chunks.

    ``checkpoint`` may raise to stop the build.
    """
    graph = HnswGraph(dim, params_for(len(keys)))
    threads = BUILD_THREADS if len(keys) >= PARALLEL_BUILD_FROM else 1
    for start in range(0, len(keys), BUILD_CHUNK):
        if checkpoint is not None:
            checkpoint()
        stop = start + BUILD_CHUNK
        graph.add(keys[start:stop], vectors[start:stop], threads=threads)
    return graph
