"""The store component: the DuckDB file of record, one writer, pooled readers, migrations."""

from caxton.store.errors import MigrationError, StoreClosed, StoreLockedError, StoreOpenError
from caxton.store.migrations import Migration
from caxton.store.store import (
    Connection,
    Store,
    StoreStatistics,
    open_store,
)

__all__ = [
    "Connection",
    "Migration",
    "MigrationError",
    "Store",
    "StoreClosed",
    "StoreLockedError",
    "StoreOpenError",
    "StoreStatistics",
    "open_store",
]
