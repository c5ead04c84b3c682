"""caxton.llm.redact: credentials out of URLs and texts shown to callers (pure, linear)."""

from __future__ import annotations

import time

import pytest

from caxton.llm.redact import redact_text, redact_url


@pytest.mark.parametrize(
    ("shown", "expected"),
    [
        ("https://api.example.com/v1", "https://api.example.com/v1"),
        ("https://bob:pa55@api.example.com/v1", "https://***@api.example.com/v1"),
        ("https://token@api.example.com/v1", "https://***@api.example.com/v1"),
        ("https://h/v1?key=abc123&model=x", "https://h/v1?key=***&model=x"),
        ("https://h/v1?model=x&access_token=t0k#f", "https://h/v1?model=x&access_token=***#f"),
        ("https://h/v1?X-Amz-Signature=ff00", "https://h/v1?X-Amz-Signature=***"),
        ("https://h/v1?page=2", "https://h/v1?page=2"),
    ],
)
def test_url_credentials_are_masked(shown: str, expected: str) -> None:
    assert redact_url(shown) == expected


def test_known_secrets_and_auth_headers_are_masked_in_text() -> None:
    text = "401 from https://h/v1: key sk-live-0123 is invalid (Authorization: Bearer sk-live-0123)"
    assert redact_text(text, ["sk-live-0123", None, ""]) == (
        "401 from https://h/v1: key *** is invalid (Authorization: Bearer ***)"
    )
    assert redact_text("header Basic dXNlcjpwYXNz sent") == "header Basic *** sent"


def test_redaction_is_linear_on_adversarial_text() -> None:
    for text in ("a://" * 200_000, "?" + "a" * 800_000, "?a=&" * 200_000, "x@" * 400_000):
        started = time.perf_counter()
        redact_text(text)
        assert time.perf_counter() - started < 5
