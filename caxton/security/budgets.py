"""The daily budgets of API keys, from the key file (issue #18)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from caxton.usage.model import Budget

if TYPE_CHECKING:
    from collections.abc import Callable

    from caxton.security.gate import SecurityGate


def key_budgets(gate: SecurityGate) -> Callable[[str], Budget | None]:
    """The budget of a key by name, read from the gate's key file as it is now (the gate
    re-reads the file when it changes, so a new budget applies without a restart)."""

    def budget(name: str) -> Budget | None:
        ring = gate.keys
        entry = ring.named(name) if ring is not None else None
        if entry is None:
            return None
        return Budget(
            scope="key",
            name=name,
            max_tokens_per_day=entry.max_tokens_per_day,
            max_cost_per_day=entry.max_cost_per_day,
            where=f"in the key file {gate.keys_path}" if gate.keys_path else "in the key file",
        )

    return budget
