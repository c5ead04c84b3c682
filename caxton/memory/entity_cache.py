"""A bounded cache of recently read entities, in front of the store's reads by name.

A search ranks in the in-process accelerator in about a millisecond, then reads its hits'
rows and observations from the store: on DuckDB two point queries of ~1.5 ms each (a columnar
engine pays a fixed cost per query), which dominated a search at 100k entities and more under
concurrent load. Hits repeat (the same entities answer similar questions), so the rows read are
kept here, up to ``max_bytes`` of observation text and names, least recently used first out.

Only a store that this process alone writes may be cached (``Backend.shared`` is False): the
memory service invalidates the names every write touches, after its commit and before the
writer's caller hears of it. A read that started before a write and ends after it must not
put its older rows back: :meth:`EntityCache.put` takes the :attr:`generation` seen when the
read began and keeps nothing if a write has happened since.

The service fills the cache when it starts and after a rebuild, in the background, with the
most recently updated entities up to the bound (:meth:`EntityCache.start_fill`,
:meth:`EntityCache.fill`): a restarted server's searches then read their hits from memory as
a long-running one's do, instead of paying a store read each until the cache has seen them.
A fill never evicts what reads put, and skips every name a write invalidated after the fill's
read began.

Not thread-safe: used from the trio thread only.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

    from caxton.memory.types import Entity

#: bytes of entities kept by default (``memory.entity_cache_size``): ~60k entities of 1 KB
#: of text, ~160k of 40 characters
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024
#: what an entity costs beyond its text: the object, its tuple, datetimes, the LRU slot
#: (measured with tracemalloc: 100k entities of one 40-character observation take 350 bytes
#: each in all)
ENTRY_OVERHEAD_BYTES = 360


def entity_bytes(entity: Entity) -> int:
    """The approximate bytes ``entity`` holds in the cache."""
    text = len(entity.name) + len(entity.entity_type) + sum(len(o) for o in entity.observations)
    return ENTRY_OVERHEAD_BYTES + text + 64 * len(entity.metadata)


class EntityCache:
    """Entities by name, least recently used first out, bounded by approximate bytes."""

    def __init__(self, max_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        if max_bytes < 0:
            raise ValueError(f"max_bytes cannot be negative, got {max_bytes}")
        self.max_bytes = max_bytes
        self._entries: collections.OrderedDict[str, tuple[Entity, int]] = collections.OrderedDict()
        self._bytes = 0
        self.generation = 0
        self.hits = 0
        self.misses = 0
        #: while a fill runs: the names invalidated since it started (None: no fill)
        self._fill_stale: set[str] | None = None
        self._fill_spoiled = False

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def nbytes(self) -> int:
        return self._bytes

    def lookup(self, names: Sequence[str]) -> tuple[dict[str, Entity], list[str]]:
        """The cached entities among ``names``, and the names to read from the store."""
        found: dict[str, Entity] = {}
        missing: list[str] = []
        for name in names:
            entry = self._entries.get(name)
            if entry is None:
                missing.append(name)
                continue
            self._entries.move_to_end(name)
            found[name] = entry[0]
        self.hits += len(found)
        self.misses += len(missing)
        return found, missing

    def put(self, entities: Mapping[str, Entity], *, read_at: int) -> None:
        """Keep ``entities``, read from the store when :attr:`generation` was ``read_at``;
        nothing is kept if a write has invalidated anything since."""
        if read_at != self.generation or self.max_bytes == 0:
            return
        for name, entity in entities.items():
            size = entity_bytes(entity)
            if size > self.max_bytes:
                continue
            old = self._entries.pop(name, None)
            if old is not None:
                self._bytes -= old[1]
            self._entries[name] = (entity, size)
            self._bytes += size
        while self._bytes > self.max_bytes:
            _, (_, size) = self._entries.popitem(last=False)
            self._bytes -= size

    def start_fill(self) -> None:
        """Begin a fill: from now on, note the names invalidated, which :meth:`fill` skips
        (the store read behind the fill starts after this)."""
        self._fill_stale = set()
        self._fill_spoiled = False

    def fill(self, entities: Iterable[Entity]) -> bool:
        """Add ``entities`` (best first) read since :meth:`start_fill`, without evicting:
        names already held or invalidated since the start are skipped, and the fill stops at
        the first entity that does not fit. Each added entity goes behind everything held
        (first out), the best last of them, so reads keep precedence.

        Returns:
            Whether more would fit: False once the cache is full or the fill was spoiled (an
            invalidation of everything since its start), and outside a fill.
        """
        stale = self._fill_stale
        if stale is None or self._fill_spoiled:
            return False
        for entity in entities:
            name = entity.name
            if name in stale or name in self._entries:
                continue
            size = entity_bytes(entity)
            if self._bytes + size > self.max_bytes:
                return False
            self._entries[name] = (entity, size)
            self._entries.move_to_end(name, last=False)
            self._bytes += size
        return True

    def end_fill(self) -> None:
        """Stop noting invalidated names for a fill."""
        self._fill_stale = None
        self._fill_spoiled = False

    def invalidate(self, names: Iterable[str] | None = None) -> None:
        """Forget ``names`` (every entity with None) after a write that changed them."""
        self.generation += 1
        if names is None:
            self._entries.clear()
            self._bytes = 0
            self._fill_spoiled = True
            return
        if self._fill_stale is not None:
            names = list(names)
            self._fill_stale.update(names)
        for name in names:
            old = self._entries.pop(name, None)
            if old is not None:
                self._bytes -= old[1]
