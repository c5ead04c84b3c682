"""JWT HS256 tokens: issue and verify, and every way a token can be bad."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import TYPE_CHECKING

import pytest

from caxton.security.errors import TokenSecretError, Unauthenticated
from caxton.security.roles import Role
from caxton.security.tokens import issue_token, load_secret, verify_token

if TYPE_CHECKING:
    from pathlib import Path

SECRET = b"s" * 32
NOW = 1_800_000_000.0


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _forge(header: dict[str, object], claims: dict[str, object], secret: bytes = SECRET) -> str:
    signing = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return signing + "." + _b64(hmac.new(secret, signing.encode(), hashlib.sha256).digest())


def _reason(token: str, now: float = NOW) -> str:
    with pytest.raises(Unauthenticated) as caught:
        verify_token(token, SECRET, now=now)
    return caught.value.reason


def test_issued_token_verifies_with_its_claims() -> None:
    token = issue_token(SECRET, subject="dash", role=Role.USER, now=NOW, expiry_s=3600)
    claims = verify_token(token, SECRET, now=NOW + 10)
    assert (claims.sub, claims.role, claims.iat, claims.exp) == (
        "dash",
        Role.USER,
        int(NOW),
        int(NOW) + 3600,
    )
    header = json.loads(base64.urlsafe_b64decode(token.split(".")[0] + "=="))
    assert header == {"alg": "HS256", "typ": "JWT"}


def test_expired_token_is_refused_after_the_leeway() -> None:
    token = issue_token(SECRET, subject="dash", role=Role.USER, now=NOW, expiry_s=60)
    assert verify_token(token, SECRET, now=NOW + 60 + 29).sub == "dash"
    assert _reason(token, now=NOW + 60 + 31) == "expired_token"


def test_wrongly_signed_token_is_refused() -> None:
    token = issue_token(b"t" * 32, subject="dash", role=Role.ADMIN, now=NOW, expiry_s=60)
    assert _reason(token) == "bad_signature"
    user = issue_token(SECRET, subject="x", role=Role.USER, now=NOW, expiry_s=60)
    head, _, signature = user.split(".")
    promoted = json.dumps({"sub": "x", "role": "admin", "iat": int(NOW), "exp": int(NOW) + 60})
    assert _reason(f"{head}.{_b64(promoted.encode())}.{signature}") == "bad_signature"


@pytest.mark.parametrize("alg", ["none", "None", "HS512", "RS256", None])
def test_other_algorithms_and_alg_none_are_refused(alg: str | None) -> None:
    claims = {"sub": "x", "role": "admin", "iat": int(NOW), "exp": int(NOW) + 60}
    header: dict[str, object] = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
    unsigned = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode()) + "."
    assert _reason(unsigned) == "wrong_algorithm"
    assert _reason(_forge(header, claims)) == "wrong_algorithm"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "abc",
        "a.b",
        "a.b.c.d",
        "..",
        "!!!.???.###",
        _b64(b"[1,2]") + "." + _b64(b"{}") + ".x",
        "x" * 9000,
    ],
)
def test_malformed_tokens_are_refused(token: str) -> None:
    assert _reason(token) in {"malformed_token", "bad_signature"}


@pytest.mark.parametrize(
    "claims",
    [
        {"role": "admin", "iat": NOW, "exp": NOW + 60},
        {"sub": "", "role": "admin", "iat": NOW, "exp": NOW + 60},
        {"sub": "x", "iat": NOW, "exp": NOW + 60},
        {"sub": "x", "role": "root", "iat": NOW, "exp": NOW + 60},
        {"sub": "x", "role": "admin", "exp": NOW + 60},
        {"sub": "x", "role": "admin", "iat": NOW, "exp": "tomorrow"},
        {"sub": "x", "role": "admin", "iat": NOW, "exp": True},
        {"sub": "x", "role": "admin", "iat": NOW + 600, "exp": NOW + 900},
        {"sub": "x", "role": "admin", "iat": NOW, "exp": NOW - 1},
    ],
)
def test_tokens_with_bad_claims_are_refused(claims: dict[str, object]) -> None:
    assert _reason(_forge({"alg": "HS256", "typ": "JWT"}, claims)) == "malformed_token"


def test_secret_file_is_stripped_and_must_be_long_enough(tmp_path: Path) -> None:
    path = tmp_path / "jwt-secret"
    path.write_text("a" * 64 + "\n")
    assert load_secret(path) == b"a" * 64
    path.write_text("short\n")
    with pytest.raises(TokenSecretError, match="at least 32"):
        load_secret(path)
    with pytest.raises(TokenSecretError, match="openssl rand -hex 32"):
        load_secret(tmp_path / "missing")


def _unsigned(header: str, claims: str) -> str:
    return f"{_b64(header.encode())}.{_b64(claims.encode())}.{_b64(b'sig')}"


GOOD_CLAIMS = json.dumps({"sub": "x", "role": "admin", "iat": int(NOW), "exp": int(NOW) + 60})


@pytest.mark.parametrize(
    "token",
    [
        "é.é.é",  # non-ASCII
        "ab\u00ff.c.d",
        "eyJhbGciOiJIUzI1NiJ9.€€€.x",
        "%%%.###.$$$",  # not base64url
        _unsigned("not json", GOOD_CLAIMS),
        _unsigned('{"alg": "HS256"}', "not json"),
        _unsigned('{"alg": "HS256"}', "[1, 2, 3]"),
        _unsigned("[]", GOOD_CLAIMS),
        _unsigned('{"alg": "HS256"', GOOD_CLAIMS),
    ],
)
def test_every_malformed_token_is_a_401_reason_never_a_crash(token: str) -> None:
    assert _reason(token) in {"malformed_token", "bad_signature", "wrong_algorithm"}


@pytest.mark.parametrize(
    "header",
    [{"alg": "none"}, {"alg": "NONE", "typ": "JWT"}, {"alg": "HS384"}, {"alg": ""}, {"alg": 256}],
)
def test_alg_none_and_friends_are_wrong_algorithm_even_with_a_good_mac(
    header: dict[str, object],
) -> None:
    claims = {"sub": "x", "role": "admin", "iat": int(NOW), "exp": int(NOW) + 60}
    assert _reason(_forge(header, claims)) == "wrong_algorithm"


@pytest.mark.parametrize(
    "claims",
    [
        {"sub": "x", "role": "admin", "iat": NOW, "exp": NOW + 31 * 86_400},
        {"sub": "x", "role": "admin", "iat": NOW, "exp": 10**400},
        {"sub": 5, "role": "admin", "iat": NOW, "exp": NOW + 60},
        {"sub": "x", "role": ["admin"], "iat": NOW, "exp": NOW + 60},
    ],
)
def test_overlong_lifetimes_and_mistyped_claims_are_refused(claims: dict[str, object]) -> None:
    assert _reason(_forge({"alg": "HS256", "typ": "JWT"}, claims)) == "malformed_token"


def test_tokens_are_issued_only_within_the_maximum_lifetime() -> None:
    with pytest.raises(ValueError, match="30 days"):
        issue_token(SECRET, subject="x", role=Role.USER, now=NOW, expiry_s=31 * 86_400)
    token = issue_token(SECRET, subject="x", role=Role.USER, now=NOW, expiry_s=30 * 86_400)
    assert verify_token(token, SECRET, now=NOW).exp == int(NOW) + 30 * 86_400
