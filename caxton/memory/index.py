"""The in-process search accelerator: a numpy mirror of ``memory_embeddings``.

DuckDB's ``array_cosine_similarity`` scan is the exact path and the truth; at 100k vectors it
measured 75 ms median / 154 ms worst, over the seed's ``MemorySystemSlow`` alert (p99 > 100 ms).
The mirror holds the same unit vectors in one float32 matrix and answers the same query with a
matrix-vector product and a partial sort (~10 ms at 100k). It is rebuilt from DuckDB at start
and updated after every committed write, so it gives the same hits as the exact path (ties and
the last float bits aside).

Visibility is the same rule as the SQL path (:func:`caxton.memory.queries.search_exact`):
an ``agent``-scoped entity is visible only when the query names its agent.

From ``compact_from`` rows on, the mirror keeps its vectors as float16 (half the RAM: 0.77 GB
instead of 1.5 GB for 1M 384-d rows) and scores them in float32 chunks; the similarities then
differ from DuckDB's by the rounding of f16 (|error| < 2e-3 on unit vectors), which reorders
only near-ties. Below it (where the whole matrix is small) the rows stay float32 and the scores
are DuckDB's to the last float bits.

Not thread-safe: the memory service runs every call under its own ``CapacityLimiter(1)``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import numpy as np
from numpy.typing import NDArray

from caxton.memory.types import Scope

if TYPE_CHECKING:
    from collections.abc import Sequence

_SCOPE_CODES = {Scope.AGENT: 0, Scope.WORKSPACE: 1, Scope.GLOBAL: 2}
_AGENT_CODE = _SCOPE_CODES[Scope.AGENT]


@attrs.frozen(kw_only=True)
class IndexEntry:
    """What the mirror keeps of one entity besides its vector."""

    name: str
    entity_type: str
    scope: Scope
    agent: str | None


_SCORE_CHUNK = 65_536  # float16 rows converted to float32 at a time by a full scan


@attrs.frozen(kw_only=True, eq=False)
class MirrorArrays:
    """A mirror's whole state as flat arrays: what :mod:`caxton.memory.saved_index` writes.

    Row ``i`` is ``names[i]``'s; ``agents`` and ``types`` hold ids from ``agent_ids`` (None is
    -1) and ``type_ids``; ``scopes`` holds scope codes (agent 0, workspace 1, global 2).
    """

    names: list[str]
    vectors: NDArray[Any]
    scopes: NDArray[np.int8]
    agents: NDArray[np.int32]
    types: NDArray[np.int32]
    agent_ids: dict[str | None, int]
    type_ids: dict[str, int]


class VectorIndex:
    """Unit vectors of every entity with the fields searches filter on.

    Args:
        dim: the vector length.
        compact_from: keep the vectors as float16 from this many rows on; None never does.
    """

    def __init__(self, dim: int, *, compact_from: int | None = None) -> None:
        self.dim = dim
        self.compact_from = compact_from
        self._reset()

    @property
    def compact(self) -> bool:
        """Whether the vectors are held as float16."""
        return self._matrix.dtype == np.float16

    @property
    def nbytes(self) -> int:
        """The bytes of the vector matrix and filter columns (capacity included)."""
        return sum(a.nbytes for a in (self._matrix, self._scopes, self._agents, self._types))

    def _reset(self) -> None:
        dim = self.dim
        self._matrix: NDArray[np.float32] | NDArray[np.float16] = np.zeros(
            (0, dim), dtype=np.float32
        )
        self._scopes: NDArray[np.int8] = np.zeros(0, dtype=np.int8)
        self._agents: NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._types: NDArray[np.int32] = np.zeros(0, dtype=np.int32)
        self._names: list[str] = []
        self._rows: dict[str, int] = {}
        self._agent_ids: dict[str | None, int] = {None: -1}
        self._type_ids: dict[str, int] = {}
        self._size = 0
        #: rows of ``agent`` scope: while there are none, an unfiltered search sees every row
        #: without a pass over the filter columns (O(rows) per query at 1M rows: ~1-2 ms)
        self._agent_scoped = 0

    def __len__(self) -> int:
        return self._size

    def __contains__(self, name: object) -> bool:
        return name in self._rows

    def clear(self) -> None:
        """Remove everything."""
        self._reset()

    def upsert(self, entries: Sequence[IndexEntry], vectors: NDArray[np.float32]) -> None:
        """Add or replace entries; ``vectors`` has one row per entry."""
        if len(entries) != len(vectors):
            raise ValueError(f"{len(entries)} entries but {len(vectors)} vectors")
        if not entries:
            return
        matrix = np.asarray(vectors).reshape(len(entries), self.dim)
        new = len({entry.name for entry in entries if entry.name not in self._rows})
        self._reserve(self._size + new)
        # Normalised a chunk at a time: a reload of 1M rows needs no second float32 copy.
        for start in range(0, len(entries), _SCORE_CHUNK):
            stop = start + _SCORE_CHUNK
            units = _normalise(np.asarray(matrix[start:stop], dtype=np.float32))
            self._upsert_rows(entries[start:stop], units)

    def _upsert_rows(self, entries: Sequence[IndexEntry], units: NDArray[np.float32]) -> None:
        # Only the name lookups are a Python loop; the columns are written in one go each
        # (a reload of 1M rows in ~1 s instead of ~6).
        count = len(entries)
        rows = np.empty(count, dtype=np.int64)
        existing: set[int] = set()
        known = self._rows
        first_new = self._size
        for i, entry in enumerate(entries):
            row = known.get(entry.name)
            if row is None:
                row = self._size
                self._size += 1
                known[entry.name] = row
                self._names.append(entry.name)
            elif row < first_new:
                existing.add(row)
            rows[i] = row
        agent_ids, type_ids = self._agent_ids, self._type_ids
        codes = np.fromiter((_SCOPE_CODES[e.scope] for e in entries), np.int8, count)
        agents = np.fromiter(
            (agent_ids.setdefault(e.agent, len(agent_ids)) for e in entries), np.int32, count
        )
        types = np.fromiter(
            (type_ids.setdefault(e.entity_type, len(type_ids)) for e in entries), np.int32, count
        )
        unique, last = np.unique(rows[::-1], return_index=True)
        if len(unique) < count:  # a name twice: its last row wins, as in a loop
            keep = np.sort(count - 1 - last)
            rows, units, codes, agents, types = (
                rows[keep],
                units[keep],
                codes[keep],
                agents[keep],
                types[keep],
            )
        if existing:
            before = np.fromiter(existing, np.int64, len(existing))
            self._agent_scoped -= int(np.count_nonzero(self._scopes[before] == _AGENT_CODE))
        self._matrix[rows] = units
        self._scopes[rows] = codes
        self._agents[rows] = agents
        self._types[rows] = types
        self._agent_scoped += int(np.count_nonzero(codes == _AGENT_CODE))

    def remove(self, names: Sequence[str]) -> None:
        """Drop entries by name (unknown names are ignored)."""
        for name in names:
            row = self._rows.pop(name, None)
            if row is None:
                continue
            self._agent_scoped -= int(self._scopes[row] == _AGENT_CODE)
            last = self._size - 1
            if row != last:
                moved = self._names[last]
                self._matrix[row] = self._matrix[last]
                self._scopes[row] = self._scopes[last]
                self._agents[row] = self._agents[last]
                self._types[row] = self._types[last]
                self._names[row] = moved
                self._rows[moved] = row
            self._names.pop()
            self._size = last

    def search(
        self,
        query: NDArray[np.float32],
        *,
        limit: int,
        min_similarity: float = -1.0,
        scope: Scope | None = None,
        agent: str | None = None,
        entity_types: Sequence[str] | None = None,
        rows: NDArray[np.int64] | None = None,
    ) -> list[tuple[str, float]]:
        """Return up to ``limit`` ``(name, similarity)`` pairs, best first (ties by name).

        ``rows`` (from :meth:`rows_of`) limits the scan to those rows; by default every row is
        scored.
        """
        size = self._size
        if size == 0 or limit <= 0:
            return []
        unit = self.unit(query)
        if rows is None:
            scores = self._scores(unit, size)
            scopes, agents, types = self._scopes[:size], self._agents[:size], self._types[:size]
        else:
            scores = np.asarray(self._matrix[rows], dtype=np.float32) @ unit
            scopes, agents, types = self._scopes[rows], self._agents[rows], self._types[rows]
        mask = scores >= np.float32(min_similarity)
        mask &= self._visible(scopes, agents, types, scope, agent, entity_types)
        candidates = np.flatnonzero(mask)
        if candidates.size == 0:
            return []
        picked = scores[candidates]
        if rows is not None:
            candidates = rows[candidates]
        if candidates.size > limit:
            # Keep everything tied with the limit-th score, so ties are broken by name below.
            kth = np.partition(picked, candidates.size - limit)[candidates.size - limit]
            keep = picked >= kth
            candidates, picked = candidates[keep], picked[keep]
        order = sorted(
            zip(picked.tolist(), candidates.tolist(), strict=True),
            key=lambda pair: (-pair[0], self._names[pair[1]]),
        )
        return [(self._names[row], float(score)) for score, row in order[:limit]]

    def _scores(self, unit: NDArray[np.float32], size: int) -> NDArray[np.float32]:
        if not self.compact:
            return np.asarray(self._matrix[:size] @ unit, dtype=np.float32)
        scores = np.empty(size, dtype=np.float32)
        for start in range(0, size, _SCORE_CHUNK):
            stop = min(size, start + _SCORE_CHUNK)
            scores[start:stop] = np.asarray(self._matrix[start:stop], dtype=np.float32) @ unit
        return scores

    def filter_rows(
        self,
        *,
        scope: Scope | None = None,
        agent: str | None = None,
        entity_types: Sequence[str] | None = None,
    ) -> NDArray[np.int64] | None:
        """The rows a search with these filters may return; None when that is every row."""
        size = self._size
        if scope is None and entity_types is None and self._agent_scoped == 0:
            return None
        mask = self._visible(
            self._scopes[:size], self._agents[:size], self._types[:size], scope, agent, entity_types
        )
        if bool(mask.all()):
            return None
        return np.flatnonzero(mask).astype(np.int64, copy=False)

    def _visible(
        self,
        scopes: NDArray[np.int8],
        agents: NDArray[np.int32],
        types: NDArray[np.int32],
        scope: Scope | None,
        agent: str | None,
        entity_types: Sequence[str] | None,
    ) -> NDArray[np.bool_]:
        agent_id = self._agent_ids.get(agent, -2) if agent is not None else -2
        mask: NDArray[np.bool_] = (scopes != _SCOPE_CODES[Scope.AGENT]) | (agents == agent_id)
        if scope is not None:
            mask &= scopes == _SCOPE_CODES[scope]
        if entity_types is not None:
            wanted = [self._type_ids[t] for t in entity_types if t in self._type_ids]
            mask &= np.isin(types, np.asarray(wanted, dtype=np.int32))
        return mask

    def unit(self, query: NDArray[np.float32]) -> NDArray[np.float32]:
        """``query`` as a unit vector of this index's length."""
        unit: NDArray[np.float32] = _normalise(
            np.asarray(query, dtype=np.float32).reshape(1, self.dim)
        )[0]
        return unit

    def rows_of(self, names: Sequence[str]) -> NDArray[np.int64]:
        """The rows of ``names`` (unknown names are skipped)."""
        rows = self._rows
        return np.fromiter((rows[n] for n in names if n in rows), dtype=np.int64)

    def vectors_of(self, names: Sequence[str]) -> NDArray[np.float32]:
        """A copy of the unit vectors of ``names`` (all must be present)."""
        rows = np.asarray([self._rows[n] for n in names], dtype=np.int64)
        return np.asarray(self._matrix[rows], dtype=np.float32)

    def snapshot(
        self, dtype: type[np.floating[Any]] = np.float32, *, copy: bool = True
    ) -> tuple[list[str], NDArray[Any]]:
        """Every name and unit vector (as ``dtype``), row by row.

        ``copy=False`` returns a view of the matrix when it already holds ``dtype``: valid only
        until the next write.
        """
        return list(self._names), self._matrix[: self._size].astype(dtype, copy=copy)

    def arrays(self) -> MirrorArrays:
        """The mirror's rows as flat arrays (views of its own: use them before the next
        write)."""
        size = self._size
        return MirrorArrays(
            names=self._names,
            vectors=self._matrix[:size],
            scopes=self._scopes[:size],
            agents=self._agents[:size],
            types=self._types[:size],
            agent_ids=self._agent_ids,
            type_ids=self._type_ids,
        )

    def restore(self, arrays: MirrorArrays) -> None:
        """Replace everything with ``arrays`` (as :meth:`arrays` gave them; owned from now on).

        Raises:
            ValueError: the arrays do not describe a mirror of this index's shape.
        """
        size = len(arrays.names)
        columns = (arrays.scopes, arrays.agents, arrays.types)
        if arrays.vectors.shape != (size, self.dim) or any(len(c) != size for c in columns):
            raise ValueError(f"{size} names but arrays of other lengths or widths")
        rows = dict(zip(arrays.names, range(size), strict=True))
        if len(rows) != size:
            raise ValueError("a name appears twice")
        compact = self.compact_from is not None and size >= self.compact_from
        if compact:
            self._matrix = np.asarray(arrays.vectors, dtype=np.float16)
        else:
            self._matrix = np.asarray(arrays.vectors, dtype=np.float32)
        self._scopes, self._agents, self._types = columns
        self._names = arrays.names
        self._rows = rows
        self._agent_ids = arrays.agent_ids
        self._type_ids = arrays.type_ids
        self._size = size
        self._agent_scoped = int(np.count_nonzero(self._scopes == _AGENT_CODE))

    def reserve(self, rows: int) -> None:
        """Make room for ``rows`` rows at once (a reload that knows its size copies nothing)."""
        self._reserve(rows)

    def _reserve(self, needed: int) -> None:
        capacity = len(self._matrix)
        compact = self.compact or (self.compact_from is not None and needed >= self.compact_from)
        if needed <= capacity and compact == self.compact:
            return
        # Grow by an eighth, not double: at 1M rows a doubling would reserve another 1.5 GB
        # for the next write after a reload.
        grown = capacity if needed <= capacity else max(needed, capacity + capacity // 8, 1024)
        matrix = np.zeros((grown, self.dim), dtype=np.float16 if compact else np.float32)
        matrix[: self._size] = self._matrix[: self._size]
        self._matrix = matrix
        for attr, dtype in (("_scopes", np.int8), ("_agents", np.int32), ("_types", np.int32)):
            old = getattr(self, attr)
            new = np.zeros(grown, dtype=dtype)
            new[: self._size] = old[: self._size]
            setattr(self, attr, new)


def _normalise(matrix: NDArray[np.float32]) -> NDArray[np.float32]:
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return np.asarray(matrix / norms, dtype=np.float32)
