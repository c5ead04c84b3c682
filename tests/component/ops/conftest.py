"""Fixtures of the operations tests (helpers live in ``ops_servers``)."""

from __future__ import annotations

from ops_servers import ops_config

__all__ = ["ops_config"]
