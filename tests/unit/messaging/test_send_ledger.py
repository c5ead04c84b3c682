"""The router's accounting of agent sends (issue #13 items 5 and 15): a pure core."""

from __future__ import annotations

from caxton.messaging.routing import (
    SEND_AGENT_IN_FLIGHT,
    SEND_CONVERSATION_IN_FLIGHT,
    SEND_CONVERSATION_LIMIT,
    SEND_RATE_LIMIT,
    SendLedger,
    SendLimits,
)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_in_flight_per_agent_and_per_conversation() -> None:
    ledger = SendLedger(
        SendLimits(max_in_flight_per_agent=3, max_in_flight_per_conversation=2), clock=Clock()
    )
    assert ledger.admit("a", "c1") is None
    assert ledger.admit("a", "c1") is None
    refusal = ledger.admit("a", "c1")
    assert refusal is not None
    assert (refusal.code, refusal.reason) == (SEND_CONVERSATION_IN_FLIGHT, "conversation_in_flight")
    assert ledger.admit("a", "c2") is None
    refusal = ledger.admit("a", "c3")
    assert refusal is not None
    assert refusal.code == SEND_AGENT_IN_FLIGHT
    assert ledger.admit("b", "c3") is None  # another agent is not held back
    ledger.finished("a", "c1")
    assert ledger.admit("a", "c1") is None
    assert ledger.in_flight() == 4


def test_total_per_conversation_counts_finished_sends_too() -> None:
    ledger = SendLedger(SendLimits(max_per_conversation=3), clock=Clock())
    for _ in range(3):
        assert ledger.admit("a", "c") is None
        ledger.finished("a", "c")
    refusal = ledger.admit("b", "c")
    assert refusal is not None
    assert refusal.code == SEND_CONVERSATION_LIMIT
    assert "3 messages in conversation c" in refusal.text
    assert ledger.admit("a", "other") is None
    assert ledger.in_flight() == 1


def test_sends_per_second_per_agent() -> None:
    clock = Clock()
    ledger = SendLedger(SendLimits(per_agent_per_second=2.0, per_agent_burst=3), clock=clock)
    outcomes = []
    for i in range(4):
        outcomes.append(ledger.admit("a", f"c{i}"))
    assert outcomes[:3] == [None, None, None]
    assert outcomes[3] is not None
    assert outcomes[3].code == SEND_RATE_LIMIT
    assert ledger.admit("b", "x") is None
    clock.now = 0.5  # one token back
    assert ledger.admit("a", "c9") is None
    assert ledger.admit("a", "c10") is not None


def test_conversation_totals_are_forgotten_oldest_first() -> None:
    ledger = SendLedger(SendLimits(max_per_conversation=1, tracked_conversations=2), clock=Clock())
    for conversation in ("c1", "c2", "c3"):
        assert ledger.admit("a", conversation) is None
        ledger.finished("a", conversation)
    assert ledger.admit("a", "c3") is not None
    assert ledger.admit("a", "c1") is None  # forgotten: its total starts again
