"""The backoff and bound of restarting a stdio MCP server (pure)."""

from __future__ import annotations

from caxton.agents.mcp_tools.restarts import MAX_DELAY_S, WINDOW_S, RestartBudget


def test_delays_double_until_the_bound_is_spent() -> None:
    budget = RestartBudget(max_restarts=3)
    delays = []
    now = 100.0
    while (delay := budget.delay(now)) is not None:
        delays.append(delay)
        now += delay
        budget = budget.restarted(now)
    assert delays == [0.5, 1.0, 2.0]
    assert budget.count == 3


def test_old_restarts_leave_the_window_and_the_delay_is_capped() -> None:
    budget = RestartBudget(max_restarts=20)
    for at in range(12):
        budget = budget.restarted(float(at))
    assert budget.delay(12.0) == MAX_DELAY_S
    later = 11.0 + WINDOW_S + 1
    assert budget.recent(later) == 0
    assert budget.delay(later) == 0.5
    assert budget.restarted(later).times == (later,)
    assert budget.restarted(later).count == 13


def test_no_restarts_allowed() -> None:
    assert RestartBudget(max_restarts=0).delay(0.0) is None
