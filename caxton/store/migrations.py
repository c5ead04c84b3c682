"""Versioned schema migrations: values and the pure planning step.

Each feature (memory, conversations, deployments, ...) owns a numbered series of migrations and
hands them to the store's constructor; nothing is registered at import time. The store records
what it applied in ``schema_migrations`` (one row per feature and version) and, at start, applies
what is missing in version order, each migration in its own transaction.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

SCHEMA_MIGRATIONS_DDL = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    feature VARCHAR NOT NULL,
    version INTEGER NOT NULL,
    description VARCHAR NOT NULL,
    applied_at TIMESTAMP NOT NULL,
    PRIMARY KEY (feature, version)
)
"""


@attrs.frozen(kw_only=True)
class Migration:
    """One step of a feature's schema.

    Attributes:
        feature: the owning feature ("memory", "conversations", ...); lower-case identifier.
        version: 1 for the first migration of the feature, then 2, 3, ... without gaps.
        description: one line for operators (shown by ``storage verify``).
        statements: SQL statements run in order inside one transaction.
    """

    feature: str
    version: int
    description: str
    statements: tuple[str, ...]


def check_registered(migrations: Iterable[Migration]) -> dict[str, list[Migration]]:
    """Group migrations by feature and check that each series is 1, 2, ..., n.

    Returns:
        The migrations of each feature, sorted by version.

    Raises:
        ValueError: naming the feature and the duplicate or missing version.
    """
    by_feature: dict[str, list[Migration]] = {}
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
    return by_feature


def plan(migrations: Sequence[Migration], applied: Mapping[str, int]) -> list[Migration]:
    """Return the migrations still to apply, in order (feature by feature, version ascending).

    Args:
        migrations: every migration this build of Caxton knows.
        applied: the highest applied version of each feature, as recorded in the database.

    Raises:
        ValueError: when the registered series are malformed, or when the database is newer
            than this build (a feature recorded at a version this build does not know).
    """
    by_feature = check_registered(migrations)
    pending: list[Migration] = []
    for feature, version in sorted(applied.items()):
        known = len(by_feature.get(feature, []))
        if feature in by_feature and version > known:
            raise ValueError(
                f"the database has feature {feature!r} at schema version {version}, but this "
                f"Caxton only knows versions up to {known}: upgrade Caxton or restore a backup "
                "made by this version"
            )
    for feature in sorted(by_feature):
        done = applied.get(feature, 0)
        pending.extend(m for m in by_feature[feature] if m.version > done)
    return pending
