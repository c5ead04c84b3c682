"""The usage table, as store migrations for DuckDB and PostgreSQL (issue #18).

``llm_usage`` holds one row per LLM call: when (epoch seconds, and its UTC ``day`` so daily
budgets and per-day reports need no date functions of either dialect), which agent, which
caller (``caller``: an API key's name or a token's subject), which model and provider, the
four token counts and the cost from ``usage.prices``. Budgets read today's rows of one agent
or one caller, hence the two indexes.
"""

from __future__ import annotations

from typing import Final

from caxton.store.migrations import Migration

#: The feature name of the usage migrations.
FEATURE: Final = "usage"

_COLUMNS: Final = """
    called_at {double} NOT NULL,
    day {text} NOT NULL,
    agent {text} NOT NULL,
    caller {text} NOT NULL,
    model {text} NOT NULL,
    provider {text} NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cache_read_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost {double} NOT NULL
"""

_INDEXES: Final = (
    "CREATE INDEX llm_usage_day_agent ON llm_usage (day, agent)",
    "CREATE INDEX llm_usage_day_caller ON llm_usage (day, caller)",
    "CREATE INDEX llm_usage_called_at ON llm_usage (called_at)",
)

USAGE_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        feature=FEATURE,
        version=1,
        description="llm_usage: tokens and cost of every LLM call",
        statements=(
            "CREATE TABLE llm_usage (" + _COLUMNS.format(double="DOUBLE", text="VARCHAR") + ")",
            *_INDEXES,
        ),
    ),
)

USAGE_POSTGRES_MIGRATIONS: Final[tuple[Migration, ...]] = (
    Migration(
        feature=FEATURE,
        version=1,
        description="llm_usage: tokens and cost of every LLM call",
        statements=(
            "CREATE TABLE llm_usage (id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
            + _COLUMNS.format(double="DOUBLE PRECISION", text="TEXT")
            + ")",
            *_INDEXES,
        ),
    ),
)
