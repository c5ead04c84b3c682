"""CORS answers from security.cors."""

from __future__ import annotations

from caxton.config.model import CorsConfig
from caxton.security.cors import CorsPolicy

DASH = "https://dashboard.example.com"


def _policy(*origins: str) -> CorsPolicy:
    return CorsPolicy.from_config(
        CorsConfig(allowed_origins=list(origins), allowed_methods=["GET", "POST"])
    )


def test_preflight_from_an_allowed_origin() -> None:
    answer = _policy(DASH).preflight(DASH, "POST", "Content-Type, X-API-Key")
    assert isinstance(answer, dict)
    assert answer["Access-Control-Allow-Origin"] == DASH
    assert answer["Access-Control-Allow-Methods"] == "GET, POST"
    assert "X-API-Key" in answer["Access-Control-Allow-Headers"]
    assert answer["Access-Control-Max-Age"] == "600"
    assert answer["Vary"] == "Origin"


def test_preflight_refusals_say_which_setting() -> None:
    policy = _policy(DASH)
    assert "allowed_origins" in str(policy.preflight("https://evil.example", "GET", None))
    assert "allowed_methods" in str(policy.preflight(DASH, "DELETE", None))
    assert "X-Secret" in str(policy.preflight(DASH, "GET", "X-Secret"))


def test_responses_carry_cors_headers_only_for_allowed_origins() -> None:
    policy = _policy(DASH + "/")
    assert policy.response_headers(DASH)["Access-Control-Allow-Origin"] == DASH
    assert "X-RateLimit-Remaining" in policy.response_headers(DASH)["Access-Control-Expose-Headers"]
    assert policy.response_headers("https://evil.example") == {"Vary": "Origin"}
    assert policy.response_headers(None) == {"Vary": "Origin"}


def test_empty_list_turns_cors_off_and_star_allows_all() -> None:
    off = _policy()
    assert not off.enabled
    assert off.response_headers(DASH) == {}
    assert isinstance(off.preflight(DASH, "GET", None), str)
    anyone = _policy("*")
    assert anyone.response_headers("https://x.example")["Access-Control-Allow-Origin"] == "*"
