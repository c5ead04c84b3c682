"""Reading the memory from its DuckDB file while the server is stopped (``caxton memory
export`` without a server, DESIGN §8).

The file is opened read-only, so DuckDB refuses it while a server holds it: a running server
must be asked through the API instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import duckdb

from caxton.memory import transfer
from caxton.store.errors import StoreOpenError
from caxton.store.read_only import connect_read_only

if TYPE_CHECKING:
    from pathlib import Path


def read_snapshot(path: Path) -> transfer.Snapshot:
    """Read every entity and relation from the database file at ``path``.

    Raises:
        StoreOpenError: the file does not exist, is not a Caxton DuckDB database, or has no
            memory tables yet.
        StoreLockedError: a running server holds the file.

    Resource handling:
        Blocking; opens one read-only connection and closes it before returning.
    """
    conn = connect_read_only(path, missing="has the server ever started?")
    try:
        return transfer.Snapshot.read(conn)
    except duckdb.CatalogException as exc:
        raise StoreOpenError(path, f"it holds no memory tables ({exc})") from exc
    finally:
        conn.close()
