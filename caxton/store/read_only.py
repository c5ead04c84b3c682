"""Opening the DuckDB file of a stopped server read-only (offline export, storage migrate).

DuckDB refuses a read-only connection while a server holds the file: that refusal becomes
:class:`~caxton.store.errors.StoreLockedError`, anything else
:class:`~caxton.store.errors.StoreOpenError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from caxton.store.errors import StoreLockedError, StoreOpenError

if TYPE_CHECKING:
    from pathlib import Path


def connect_read_only(path: Path, *, missing: str) -> duckdb.DuckDBPyConnection:
    """A read-only connection to the database file at ``path`` (blocking).

    Args:
        missing: what to say when the file does not exist (the fix, for the caller's user).

    Raises:
        StoreOpenError: the file does not exist or is not a DuckDB database.
        StoreLockedError: a running server holds the file.
    """
    if not path.is_file():
        raise StoreOpenError(path, f"the file does not exist ({missing})")
    try:
        return duckdb.connect(str(path), read_only=True)
    except duckdb.IOException as exc:
        if "lock" in str(exc).lower():
            raise StoreLockedError(path, str(exc)) from exc
        raise StoreOpenError(path, str(exc)) from exc
    except duckdb.Error as exc:
        raise StoreOpenError(path, str(exc)) from exc
