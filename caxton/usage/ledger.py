"""The usage records in the store: one row per LLM call, read back as reports and as today's
spend of one agent or one caller (issue #18).

Works on both stores of record (DuckDB and PostgreSQL): the SQL is plain, with ``?``
placeholders turned into psycopg's ``%s`` for PostgreSQL; days are stored as text, so no date
function of either dialect is needed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from caxton.usage.model import UsageFilter, UsageRecord, UsageTotals

if TYPE_CHECKING:
    from caxton.store.backend import Backend
    from caxton.usage.model import GroupBy

#: Most groups one report returns (the biggest by tokens first).
MAX_GROUPS: Final = 1000

_GROUP_COLUMNS: Final = {"agent": "agent", "key": "caller", "model": "model", "day": "day"}
_SUMS: Final = (
    "count(*), coalesce(sum(input_tokens), 0), coalesce(sum(output_tokens), 0), "
    "coalesce(sum(cache_read_tokens), 0), coalesce(sum(cache_write_tokens), 0), "
    "coalesce(sum(cost), 0)"
)
_INSERT: Final = (
    "INSERT INTO llm_usage (called_at, day, agent, caller, model, provider, input_tokens, "
    "output_tokens, cache_read_tokens, cache_write_tokens, cost) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)


def _totals(row: Any) -> UsageTotals:
    return UsageTotals(
        calls=int(row[0]),
        input_tokens=int(row[1]),
        output_tokens=int(row[2]),
        cache_read_tokens=int(row[3]),
        cache_write_tokens=int(row[4]),
        cost=float(row[5]),
    )


def _where(where: UsageFilter) -> tuple[str, list[Any]]:
    clauses: list[str] = []
    params: list[Any] = []
    if where.since is not None:
        clauses.append("called_at >= ?")
        params.append(where.since)
    if where.until is not None:
        clauses.append("called_at < ?")
        params.append(where.until)
    if where.agent is not None:
        clauses.append("agent = ?")
        params.append(where.agent)
    if where.key is not None:
        clauses.append("caller = ?")
        params.append(where.key)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


class UsageLedger:
    """``llm_usage`` in ``store`` (which must have run :mod:`caxton.usage.schema`)."""

    def __init__(self, store: Backend) -> None:
        self.store = store
        self._postgres = store.dialect == "postgres"

    def _sql(self, text: str) -> str:
        return text.replace("?", "%s") if self._postgres else text

    async def record(self, record: UsageRecord) -> None:
        """Keep one call's usage (returns once committed)."""
        sql = self._sql(_INSERT)
        params = (
            record.at,
            record.day,
            record.agent,
            record.key,
            record.model,
            record.provider,
            record.input_tokens,
            record.output_tokens,
            record.cache_read_tokens,
            record.cache_write_tokens,
            record.cost,
        )

        def insert(conn: Any) -> None:
            conn.execute(sql, params)

        await self.store.execute_write_fn(insert)

    async def report(
        self, where: UsageFilter, group_by: GroupBy
    ) -> tuple[list[tuple[str, UsageTotals]], UsageTotals]:
        """The sums per group (most tokens first, at most :data:`MAX_GROUPS`; by day: in day
        order) and over every record ``where`` selects."""
        column = _GROUP_COLUMNS[group_by]
        clause, params = _where(where)
        order = (
            "day"
            if group_by == "day"
            else "sum(input_tokens + output_tokens + "
            + ("cache_read_tokens + cache_write_tokens) DESC, 1")
        )
        grouped = self._sql(
            f"SELECT {column}, {_SUMS} FROM llm_usage{clause} GROUP BY {column} "
            f"ORDER BY {order} LIMIT {MAX_GROUPS}"
        )
        overall = self._sql(f"SELECT {_SUMS} FROM llm_usage{clause}")

        def read(conn: Any) -> tuple[list[tuple[str, UsageTotals]], UsageTotals]:
            rows = conn.execute(grouped, params).fetchall()
            total = conn.execute(overall, params).fetchone()
            return [(str(row[0]), _totals(row[1:])) for row in rows], _totals(total)

        return await self.store.execute_fn(read)

    async def spent_on(
        self, day: str, *, agent: str | None = None, key: str | None = None
    ) -> UsageTotals:
        """What one agent (or one caller) used on ``day`` (``YYYY-MM-DD``, UTC)."""
        column, value = ("agent", agent) if agent is not None else ("caller", key)
        sql = self._sql(f"SELECT {_SUMS} FROM llm_usage WHERE day = ? AND {column} = ?")

        def read(conn: Any) -> UsageTotals:
            return _totals(conn.execute(sql, (day, value)).fetchone())

        return await self.store.execute_fn(read)
