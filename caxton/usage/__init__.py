"""Token usage accounting and budgets (issue #18)."""

from caxton.usage.context import current_caller, metering, set_caller
from caxton.usage.ledger import UsageLedger
from caxton.usage.model import Budget, BudgetExceeded, ModelPrice, UsageFilter, UsageRecord
from caxton.usage.schema import USAGE_MIGRATIONS, USAGE_POSTGRES_MIGRATIONS
from caxton.usage.service import UsageService

__all__ = [
    "USAGE_MIGRATIONS",
    "USAGE_POSTGRES_MIGRATIONS",
    "Budget",
    "BudgetExceeded",
    "ModelPrice",
    "UsageFilter",
    "UsageLedger",
    "UsageRecord",
    "UsageService",
    "current_caller",
    "metering",
    "set_caller",
]
