"""Fixtures of the operations tests (helpers live in ``ops_servers`` and ``migrate_sources``)."""

from __future__ import annotations

from migrate_sources import embedder, model_dir
from ops_servers import ops_config

__all__ = ["embedder", "model_dir", "ops_config"]
