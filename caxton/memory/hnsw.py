"""The HNSW graph over the accelerator's vectors (usearch), and its file next to the DB.

The graph only proposes candidates: :class:`caxton.memory.layered.LayeredIndex` re-scores them
exactly with the numpy mirror. Keys are a 63-bit hash of the entity name, so a saved graph can
be matched against what DuckDB holds without storing a name table: the sidecar
(``<graph>.json``) records the row count and a fingerprint of every (key, vector) pair, plus the
size and digest of the graph file, and a graph is loaded only when all of them match.

Measured on real MiniLM vectors at 100k rows: building takes ~27 s on two threads; 64
candidates at ``expansion_search=128`` re-scored exactly give recall@10 1.0 in ~1 ms.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import TYPE_CHECKING

import numpy as np
from usearch.index import Index

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable
    from pathlib import Path

    from numpy.typing import NDArray

LOGGER = logging.getLogger("caxton.memory")

CONNECTIVITY = 16
EXPANSION_ADD = 128
EXPANSION_SEARCH = 128
BUILD_THREADS = 2
PARALLEL_BUILD_FROM = 10_000  # smaller graphs are built on one thread (a better graph)
BUILD_CHUNK = 2048
FORMAT_VERSION = 1
_KEY_MASK = (1 << 63) - 1
_DIGEST_CHUNK = 1 << 20
_FINGERPRINT_ROWS = 8192


def key_of(name: str) -> int:
    """The graph key of an entity name (stable across processes)."""
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _KEY_MASK


def keys_of(names: Iterable[str]) -> NDArray[np.uint64]:
    """:func:`key_of` for many names."""
    return np.fromiter((key_of(name) for name in names), dtype=np.uint64)


def fingerprint(keys: NDArray[np.uint64], vectors: NDArray[np.float32]) -> str:
    """A digest of the (key, vector) pairs, independent of row order."""
    order = np.argsort(keys, kind="stable")
    digest = hashlib.blake2b(digest_size=16)
    digest.update(np.ascontiguousarray(keys[order]).tobytes())
    for start in range(0, len(order), _FINGERPRINT_ROWS):
        block = vectors[order[start : start + _FINGERPRINT_ROWS]]
        digest.update(np.ascontiguousarray(block, dtype=np.float32).tobytes())
    return f"{len(keys)}:{digest.hexdigest()}"


class HnswGraph:
    """A usearch inner-product HNSW index over unit vectors.

    Not thread-safe: the owner serialises mutations and searches.
    """

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = Index(
            ndim=dim,
            metric="ip",
            dtype="f32",
            connectivity=CONNECTIVITY,
            expansion_add=EXPANSION_ADD,
            expansion_search=EXPANSION_SEARCH,
        )

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: object) -> bool:
        return isinstance(key, int) and bool(self._index.contains(key))

    def add(
        self, keys: NDArray[np.uint64], vectors: NDArray[np.float32], *, threads: int = 1
    ) -> None:
        """Add vectors under new keys."""
        if len(keys):
            self._index.add(keys, np.ascontiguousarray(vectors, np.float32), threads=threads)

    def remove(self, keys: Iterable[int]) -> None:
        """Remove keys (absent ones are ignored)."""
        for key in keys:
            self._index.remove(key)

    def search(self, query: NDArray[np.float32], count: int) -> NDArray[np.uint64]:
        """The keys of about ``count`` nearest vectors to the unit ``query``."""
        if len(self._index) == 0:
            return np.zeros(0, dtype=np.uint64)
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
    vectors: NDArray[np.float32],
    *,
    checkpoint: Callable[[], None] | None = None,
) -> HnswGraph:
    """Build a graph, calling ``checkpoint`` between chunks (it may raise to stop)."""
    graph = HnswGraph(dim)
    threads = BUILD_THREADS if len(keys) >= PARALLEL_BUILD_FROM else 1
    for start in range(0, len(keys), BUILD_CHUNK):
        if checkpoint is not None:
            checkpoint()
        stop = start + BUILD_CHUNK
        graph.add(keys[start:stop], vectors[start:stop], threads=threads)
    return graph


def sidecar_path(path: Path) -> Path:
    """Where the JSON description of the graph at ``path`` lives."""
    return path.with_name(path.name + ".json")


def _file_digest(path: Path) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with path.open("rb") as handle:
        while chunk := handle.read(_DIGEST_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def save(graph: HnswGraph, path: Path, content: str) -> None:
    """Save ``graph`` (whose (key, vector) pairs have fingerprint ``content``) to ``path``.

    The sidecar is removed first and written last, so an interrupted save leaves no sidecar
    and the next start rebuilds.
    """
    side = sidecar_path(path)
    side.unlink(missing_ok=True)
    partial = path.with_name(path.name + ".partial")
    try:
        graph.save(partial)
        described = {
            "format": FORMAT_VERSION,
            "dim": graph.dim,
            "rows": len(graph),
            "fingerprint": content,
            "file_size": partial.stat().st_size,
            "file_digest": _file_digest(partial),
            "connectivity": CONNECTIVITY,
        }
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    side_partial = side.with_name(side.name + ".partial")
    side_partial.write_text(json.dumps(described), encoding="utf-8")
    os.replace(side_partial, side)


def load(path: Path, dim: int, content: str) -> HnswGraph | None:
    """The graph saved at ``path`` if its sidecar says it holds exactly ``content``, else None.

    A missing, stale or corrupt file is logged and gives None (the caller rebuilds).
    """
    side = sidecar_path(path)
    try:
        described = json.loads(side.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        LOGGER.warning("ignoring the unreadable HNSW sidecar %s: %s", side, exc)
        return None
    expected = {
        "format": FORMAT_VERSION,
        "dim": dim,
        "connectivity": CONNECTIVITY,
        "fingerprint": content,
    }
    if not isinstance(described, dict) or any(
        described.get(field) != value for field, value in expected.items()
    ):
        LOGGER.info("the saved HNSW index %s is stale; rebuilding it", path)
        return None
    try:
        size = path.stat().st_size
        if size != described.get("file_size") or _file_digest(path) != described.get("file_digest"):
            LOGGER.warning("the saved HNSW index %s does not match its sidecar; rebuilding", path)
            return None
        graph = HnswGraph(dim)
        graph.load(path)
    except (OSError, RuntimeError, ValueError) as exc:
        LOGGER.warning("cannot load the saved HNSW index %s (%s); rebuilding it", path, exc)
        return None
    if len(graph) != described.get("rows"):
        LOGGER.warning("the saved HNSW index %s has the wrong row count; rebuilding", path)
        return None
    return graph
