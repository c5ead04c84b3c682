"""The numpy mirror with an optional HNSW graph on top (DESIGN §6's in-process accelerator).

Below :data:`DEFAULT_HNSW_THRESHOLD` rows the mirror's exact scan is already fast (~2 ms), so
the graph is only built above it. A search with the graph takes ``max(rescore, 4 * limit)``
candidates from it (``rescore`` and the search beam from :func:`caxton.memory.hnsw.params_for`
of the current size) (scaled up by the share of rows the filters exclude, so that about that many
pass them), re-scores them exactly with the mirror's rows and applies the same filters as the
full scan; when the filters leave fewer than ``limit`` hits it falls back to an exact scan of
the rows the filters allow, so the answer equals the mirror's whenever the graph's candidates
hold the true top hits. Filters that allow fewer than ``threshold`` rows, or would need more
than :data:`MAX_CANDIDATES` candidates, are answered by that exact scan directly.

A graph is built off-line from an f16 snapshot of the mirror (:meth:`LayeredIndex.begin_build`);
names written meanwhile are journalled and re-applied from the mirror when the graph is
installed (:meth:`LayeredIndex.finish_build`), so no write is lost.

Not thread-safe: every method runs under the memory service's index limiter; only the build
itself (on a snapshot) runs outside it.
"""

from __future__ import annotations

import functools
import logging
from typing import TYPE_CHECKING

from caxton.memory.hnsw import SNAPSHOT_DTYPE, HnswGraph, key_of, keys_of, params_for
from caxton.memory.index import IndexEntry, MirrorArrays, VectorIndex

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np
    from numpy.typing import NDArray

    from caxton.memory.types import Scope

LOGGER = logging.getLogger("caxton.memory")

DEFAULT_HNSW_THRESHOLD = 20_000
CANDIDATES_PER_HIT = 4
MAX_CANDIDATES = 2048


class LayeredIndex:
    """A :class:`VectorIndex` plus, above ``threshold`` rows, an HNSW graph of the same rows.

    From ``threshold`` rows on the mirror also keeps its vectors as float16 (its
    ``compact_from``): the graph's candidates are re-scored from those rows in float32.

    Args:
        dim: the vector length.
        threshold: build and use the graph from this many rows; None never does.
    """

    def __init__(self, dim: int, *, threshold: int | None = DEFAULT_HNSW_THRESHOLD) -> None:
        self.dim = dim
        self.threshold = threshold
        self.mirror = VectorIndex(dim, compact_from=threshold)
        self.graph: HnswGraph | None = None
        self.dirty = False  # the graph has changed since it was last saved or loaded
        self.graph_searches = 0
        self.fallbacks = 0
        self._journal: set[str] | None = None
        self._names_by_key: dict[int, str] = {}
        self._collision = False

    def __len__(self) -> int:
        return len(self.mirror)

    def __contains__(self, name: object) -> bool:
        return name in self.mirror

    @property
    def building(self) -> bool:
        """Whether a graph is being built from a snapshot."""
        return self._journal is not None

    def wants_graph(self) -> bool:
        """Whether a graph should be built now."""
        return (
            self.threshold is not None
            and not self._collision
            and self.graph is None
            and self._journal is None
            and len(self.mirror) >= self.threshold
        )

    # ----------------------------------------------------------------------------- writes

    def reserve(self, rows: int) -> None:
        """As :meth:`VectorIndex.reserve`."""
        self.mirror.reserve(rows)

    def upsert(self, entries: Sequence[IndexEntry], vectors: NDArray[np.float32]) -> None:
        """Add or replace entries in the mirror and the graph."""
        self.mirror.upsert(entries, vectors)
        names = [entry.name for entry in entries]
        for name in names:
            known = self._names_by_key.setdefault(key_of(name), name)
            if known != name:
                LOGGER.warning(
                    "entity names %r and %r share an HNSW key; searches use the numpy scan",
                    known,
                    name,
                )
                self._collision = True
                self.graph = None
        self._follow(names)

    def remove(self, names: Sequence[str]) -> None:
        """Drop entries (unknown names are ignored) from the mirror and the graph."""
        self.mirror.remove(names)
        for name in names:
            key = key_of(name)
            if self._names_by_key.get(key) == name:
                del self._names_by_key[key]
        self._follow(names)

    def clear(self) -> None:
        """Remove everything, graph included."""
        self.mirror.clear()
        self.graph = None
        self._journal = None
        self._names_by_key.clear()

    def _follow(self, names: Sequence[str]) -> None:
        if self._journal is not None:
            self._journal.update(names)
        if self.graph is not None:
            try:
                self._apply(self.graph, names)
            except Exception:
                LOGGER.exception(
                    "the HNSW index could not follow a write; it is dropped and rebuilt"
                )
                self.graph = None
            else:
                self.dirty = True

    def _apply(self, graph: HnswGraph, names: Sequence[str]) -> None:
        """Make ``graph`` hold the mirror's current vector for each of ``names``."""
        unique = list(dict.fromkeys(names))
        graph.remove(key for key in (key_of(name) for name in unique) if key in graph)
        live = [name for name in unique if name in self.mirror]
        graph.add(keys_of(live), self.mirror.vectors_of(live))

    # ----------------------------------------------------------------------------- builds

    def begin_build(self) -> tuple[NDArray[np.uint64], NDArray[np.float16]] | None:
        """Start journalling writes and return a snapshot (keys, f16 unit vectors) to build from.

        Returns None when no graph is wanted (see :meth:`wants_graph`).
        """
        if not self.wants_graph():
            return None
        self._journal = set()
        names, vectors = self.mirror.snapshot(SNAPSHOT_DTYPE)
        return keys_of(names), vectors

    def finish_build(self, graph: HnswGraph, *, saved: bool) -> None:
        """Install a graph built from the snapshot, re-applying the journalled writes.

        ``saved``: the graph as built is what the file next to the DB holds.
        """
        journal, self._journal = self._journal, None
        if journal is None or self._collision:
            return
        if journal:
            self._apply(graph, sorted(journal))
        self.graph = graph
        self.dirty = bool(journal) or not saved

    def restore(self, arrays: MirrorArrays, keys: NDArray[np.uint64], graph: HnswGraph) -> None:
        """Replace everything with a saved mirror and the graph saved with it (``keys``: the
        graph key of each of ``arrays.names``).

        Raises:
            ValueError: the parts do not fit together (nothing is changed then).
        """
        names = arrays.names
        if len(keys) != len(names) or len(graph) != len(names) or graph.dim != self.dim:
            raise ValueError(f"{len(names)} names, {len(keys)} keys, {len(graph)} graph rows")
        names_by_key = dict(zip(keys.tolist(), names, strict=True))
        if len(names_by_key) != len(names):
            raise ValueError("two names share a graph key")
        self.mirror.restore(arrays)
        self._names_by_key = names_by_key
        self._journal = None
        self._collision = False
        self.graph = graph
        self.dirty = False

    def install(self, graph: HnswGraph) -> None:
        """Use a saved ``graph`` of exactly the mirror's rows (their content token matched).

        Raises:
            ValueError: it does not hold as many rows as the mirror, or names collide.
        """
        if self._collision or len(graph) != len(self.mirror) or graph.dim != self.dim:
            raise ValueError(f"a graph of {len(graph)} rows for a mirror of {len(self.mirror)}")
        self.graph = graph
        self.dirty = False

    def abort_build(self) -> None:
        """Stop journalling after a failed build."""
        self._journal = None

    def content(self) -> tuple[MirrorArrays, NDArray[np.uint64]]:
        """The mirror's arrays and the graph key of each row (what is saved with the graph).

        The arrays are views of the mirror's own: use them before the next write.
        """
        arrays = self.mirror.arrays()
        return arrays, keys_of(arrays.names)

    # ----------------------------------------------------------------------------- search

    def search(
        self,
        query: NDArray[np.float32],
        *,
        limit: int,
        min_similarity: float = -1.0,
        scope: Scope | None = None,
        agent: str | None = None,
        entity_types: Sequence[str] | None = None,
    ) -> list[tuple[str, float]]:
        """As :meth:`VectorIndex.search`, through the graph when it is in use."""
        graph = self.graph
        scan = functools.partial(
            self.mirror.search,
            query,
            limit=limit,
            min_similarity=min_similarity,
            scope=scope,
            agent=agent,
            entity_types=entity_types,
        )
        size = len(self.mirror)
        if graph is None or self.threshold is None or size < self.threshold:
            return scan()
        allowed = self.mirror.filter_rows(scope=scope, agent=agent, entity_types=entity_types)
        matching = size if allowed is None else len(allowed)
        if matching == 0:
            return []
        # Ask the graph for enough neighbours that about ``base`` of them pass the filters.
        params = params_for(size)
        base = max(params.rescore, CANDIDATES_PER_HIT * limit)
        wanted = -(-base * size // matching)
        if matching < self.threshold or wanted >= size or wanted > MAX_CANDIDATES:
            return scan(rows=allowed)
        self.graph_searches += 1
        beam = max(params.expansion_search, wanted)
        keys = graph.search(self.mirror.unit(query), wanted, expansion=beam)
        names_by_key = self._names_by_key
        names = [names_by_key[key] for key in keys.tolist() if key in names_by_key]
        hits = scan(rows=self.mirror.rows_of(names))
        if len(hits) < limit:
            self.fallbacks += 1
            return scan(rows=allowed)
        return hits
