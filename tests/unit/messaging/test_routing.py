"""The pure routing core: each strategy, health, ties, the capability index."""

from __future__ import annotations

from caxton.messaging.routing import Provider, capability_index, choose, failure_content


def provider(agent: str, in_flight: int = 0, status: str = "running") -> Provider:
    return Provider(agent=agent, status=status, version="1.0.0", in_flight=in_flight)


def test_best_match_takes_the_fewest_in_flight_then_the_name() -> None:
    providers = [provider("c", 2), provider("b", 1), provider("a", 1)]
    assert choose("best_match", providers).targets == ("a",)
    assert choose("best_match", [provider("a", 3), provider("b", 0)]).targets == ("b",)


def test_unhealthy_providers_are_skipped_and_none_left_gives_no_target() -> None:
    providers = [provider("a", 0, "failed"), provider("b", 5)]
    assert choose("best_match", providers).targets == ("b",)
    for strategy in ("best_match", "round_robin", "broadcast"):
        assert choose(strategy, [provider("a", 0, "loading")]).targets == ()
        assert choose(strategy, []).targets == ()


def test_round_robin_cycles_by_name() -> None:
    providers = [provider("b"), provider("a", 9), provider("c", status="draining")]
    turn, picked = 0, []
    for _ in range(5):
        choice = choose("round_robin", providers, turn=turn)
        picked.append(choice.targets[0])
        turn = choice.turn
    assert picked == ["a", "b", "a", "b", "a"]


def test_broadcast_takes_every_healthy_provider() -> None:
    providers = [provider("b"), provider("a"), provider("x", status="failed")]
    assert choose("broadcast", providers).targets == ("a", "b")


def test_capability_index() -> None:
    index = capability_index({"w": ("count", "stats"), "a": ("count",), "z": ()})
    assert index == {"count": ("a", "w"), "stats": ("w",)}


def test_failure_content_is_the_http_error_shape() -> None:
    assert failure_content("TIMEOUT", "late", {"agent": "a"}) == {
        "error": {"code": "TIMEOUT", "message": "late", "details": {"agent": "a"}}
    }


def test_provider_json() -> None:
    assert provider("a", 2).as_json() == {
        "agent": "a",
        "status": "running",
        "version": "1.0.0",
        "in_flight": 2,
        "healthy": True,
    }
