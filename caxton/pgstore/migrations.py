"""Versioned migrations on PostgreSQL: the same values and rules as the DuckDB store's.

A migration is any value with ``feature``, ``version``, ``description`` and ``statements``, as
:class:`caxton.store.Migration` has (a Protocol here, because the two stores stand on one
floor and neither imports the other). Each feature numbers its series 1, 2, ..., n; PostgreSQL
SQL differs from DuckDB's, so a feature hands each store its own series.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    feature TEXT NOT NULL,
    version INTEGER NOT NULL,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (feature, version)
)
"""

#: ``pg_advisory_lock`` key held while migrating, so that instances starting together on one
#: database migrate it once ("caxton" in ASCII).
MIGRATION_LOCK_KEY = 0x636178746F6E


class MigrationStep(Protocol):
    """One step of a feature's schema (:class:`caxton.store.Migration` is one)."""

    @property
    def feature(self) -> str: ...

    @property
    def version(self) -> int: ...

    @property
    def description(self) -> str: ...

    @property
    def statements(self) -> tuple[str, ...]: ...


def plan(migrations: Sequence[MigrationStep], applied: Mapping[str, int]) -> list[MigrationStep]:
    """Return the migrations still to apply, feature by feature, version ascending.

    Raises:
        ValueError: a feature's series is not 1..n, or the database is newer than this build.
    """
    by_feature: dict[str, list[MigrationStep]] = {}
    for migration in migrations:
        if not migration.feature.isidentifier() or migration.feature != migration.feature.lower():
            raise ValueError(f"migration feature {migration.feature!r} is not a lower-case name")
        if not migration.statements:
            raise ValueError(
                f"migration {migration.feature} v{migration.version} has no SQL statements"
            )
        by_feature.setdefault(migration.feature, []).append(migration)
    for feature, series in by_feature.items():
        series.sort(key=lambda m: m.version)
        versions = [m.version for m in series]
        if versions != list(range(1, len(series) + 1)):
            raise ValueError(
                f"migrations of feature {feature!r} must be numbered 1..{len(series)} without "
                f"gaps or duplicates, got versions {versions}"
            )
    for feature, version in sorted(applied.items()):
        known = len(by_feature.get(feature, []))
        if feature in by_feature and version > known:
            raise ValueError(
                f"the database has feature {feature!r} at schema version {version}, but this "
                f"Caxton only knows versions up to {known}: upgrade Caxton"
            )
    pending: list[MigrationStep] = []
    for feature in sorted(by_feature):
        done = applied.get(feature, 0)
        pending.extend(m for m in by_feature[feature] if m.version > done)
    return pending
