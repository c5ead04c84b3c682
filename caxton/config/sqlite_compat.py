"""The seed's SQLite-only memory keys, mapped onto DuckDB (DESIGN §3).

``memory.sqlite_path`` is an alias of ``memory.database_path``. ``memory.sqlite_config`` keys are
mapped where DuckDB has an equivalent; the rest are accepted with a warning naming the key.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Where = Callable[[tuple[str | int, ...]], str]

_NO_EQUIVALENT = {
    "synchronous": "DuckDB makes every commit durable; there is nothing to relax",
    "temp_store": "DuckDB keeps temporary data in memory and spills to data_dir when needed",
    "mmap_size": "DuckDB manages its own buffer pool",
    "page_size": "DuckDB uses fixed-size blocks",
    "busy_timeout": "Caxton writes through one writer task, so there are no busy waits",
}


def apply_sqlite_compat(
    raw: dict[str, Any], warnings: list[str], problems: list[str], where: Where
) -> None:
    """Rewrite the raw mapping in place; record warnings and problems."""
    memory = raw.get("memory")
    if not isinstance(memory, dict):
        return
    if memory.get("sqlite_path") is not None:
        if memory.get("database_path") is not None:
            problems.append(
                f"memory.sqlite_path{where(('memory', 'sqlite_path'))}: both sqlite_path and "
                "database_path are set; keep only database_path"
            )
            return
        memory["database_path"] = memory["sqlite_path"]
    tuning = memory.get("sqlite_config")
    if not isinstance(tuning, dict):
        return
    for key, value in tuning.items():
        place = f"memory.sqlite_config.{key}{where(('memory', 'sqlite_config', key))}"
        if key == "cache_size" and isinstance(value, int) and not isinstance(value, bool):
            duckdb = memory.setdefault("duckdb", {})
            if isinstance(duckdb, dict) and "memory_limit" not in duckdb:
                # SQLite's negative cache_size is KiB; the seed writes 100000 for "100MB".
                duckdb["memory_limit"] = f"{abs(value)}KiB"
                warnings.append(f"{place}: mapped to memory.duckdb.memory_limit = {abs(value)} KiB")
        elif key == "journal_mode":
            if str(value).upper() != "WAL":
                warnings.append(
                    f"{place}: DuckDB always uses a write-ahead log; {value!r} is ignored"
                )
        elif key in _NO_EQUIVALENT:
            warnings.append(f"{place}: no DuckDB equivalent ({_NO_EQUIVALENT[key]}); ignored")
