"""JWT bearer tokens: HS256 only, claims ``sub``, ``role``, ``iat``, ``exp`` (DESIGN §11).

Decoding is PyJWT's (issue #13: a hand-written verifier answered 500 to a non-ASCII token),
held strict: only ``HS256`` is accepted (``none`` and every other algorithm are refused before
the signature is looked at), the signature is checked before any claim is trusted, the four
claims are required and typed, and a token may live at most :data:`MAX_TOKEN_LIFETIME_S`.
Expiry is judged against an injected clock, so tests step time by hand. Every way a token
can be bad is an :class:`~caxton.security.errors.Unauthenticated` (401), never anything else.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import attrs
import jwt

from caxton.security.errors import TokenSecretError, Unauthenticated
from caxton.security.roles import Role, parse_role, role_name

if TYPE_CHECKING:
    from pathlib import Path

MAX_TOKEN_BYTES = 8192
MIN_SECRET_BYTES = 32
#: Clock skew tolerated between the issuer and this server.
LEEWAY_S = 30.0
#: The longest a token may be valid (``exp - iat``); longer tokens are refused when issued
#: and when presented, so a leaked token cannot outlive a month.
MAX_TOKEN_LIFETIME_S = 30 * 86_400
ALGORITHM = "HS256"
_CLAIMS = ("sub", "role", "iat", "exp")


@attrs.frozen(kw_only=True)
class Claims:
    sub: str
    role: Role
    iat: int
    exp: int


def looks_like_token(value: str) -> bool:
    """JWTs have three dot-separated parts; API keys have none."""
    return value.count(".") == 2


def issue_token(secret: bytes, *, subject: str, role: Role, now: float, expiry_s: float) -> str:
    """A signed token for ``subject`` with ``role``, valid from ``now`` for ``expiry_s``.

    Raises:
        ValueError: no subject, or a lifetime that is not from 1 s to
            :data:`MAX_TOKEN_LIFETIME_S`.
    """
    if not subject:
        raise ValueError("a token needs a subject (sub)")
    if not 1 <= expiry_s <= MAX_TOKEN_LIFETIME_S:
        raise ValueError(
            f"a token's lifetime must be from 1s to {MAX_TOKEN_LIFETIME_S // 86_400} days, "
            f"got {expiry_s:g}s"
        )
    iat = math.floor(now)
    claims = {"sub": subject, "role": role_name(role), "iat": iat, "exp": iat + int(expiry_s)}
    return jwt.encode(claims, secret, algorithm=ALGORITHM, headers={"typ": "JWT"})


def verify_token(token: str, secret: bytes, *, now: float, leeway_s: float = LEEWAY_S) -> Claims:
    """The claims of a valid token; raise :class:`Unauthenticated` saying what is wrong."""
    if len(token) > MAX_TOKEN_BYTES:
        raise _invalid("malformed_token", f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    if not token.isascii():
        raise _invalid("malformed_token", "a token is ASCII base64url text")
    try:
        decoded = jwt.api_jwt.decode_complete(
            token,
            secret,
            algorithms=[ALGORITHM],
            # time is judged below against ``now``; PyJWT checks presence, we check types
            options={
                "require": list(_CLAIMS),
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
                "verify_sub": False,
            },
        )
    except jwt.InvalidAlgorithmError:
        raise _invalid(
            "wrong_algorithm", f"only {ALGORITHM} tokens are accepted (the header's alg)"
        ) from None
    except jwt.InvalidSignatureError:
        raise _invalid(
            "bad_signature", "the token's signature does not match this server's key"
        ) from None
    except jwt.MissingRequiredClaimError as exc:
        raise _invalid("malformed_token", f"the token has no {exc.claim!r} claim") from None
    except jwt.PyJWTError as exc:
        raise _invalid("malformed_token", f"the token cannot be decoded ({exc})") from None
    header: dict[str, Any] = decoded["header"]
    if "crit" in header or header.get("typ", "JWT") != "JWT":
        raise _invalid("malformed_token", "the token header has fields this server does not know")
    return _claims(decoded["payload"], now=now, leeway_s=leeway_s)


def _claims(payload: dict[str, Any], *, now: float, leeway_s: float) -> Claims:
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _invalid("malformed_token", "the token's subject (sub) is not a non-empty string")
    role_text = payload.get("role")
    if not isinstance(role_text, str):
        raise _invalid("malformed_token", "the token's role claim is not a string")
    try:
        role = parse_role(role_text)
    except ValueError as exc:
        raise _invalid("malformed_token", f"the token's {exc}") from None
    iat, exp = _number(payload, "iat"), _number(payload, "exp")
    if exp <= iat:
        raise _invalid("malformed_token", "the token expires before it was issued")
    if exp - iat > MAX_TOKEN_LIFETIME_S:
        raise _invalid(
            "malformed_token",
            f"the token is valid for longer than {MAX_TOKEN_LIFETIME_S // 86_400} days; "
            "issue a shorter one",
        )
    if now >= exp + leeway_s:
        raise _invalid("expired_token", "the token has expired; issue a new one")
    if iat > now + leeway_s:
        raise _invalid("malformed_token", "the token was issued in the future; check the clocks")
    return Claims(sub=sub, role=role, iat=int(iat), exp=int(exp))


def load_secret(path: Path) -> bytes:
    """The stripped contents of ``jwt_secret_file`` (blocking), at least 32 bytes."""
    try:
        secret = path.read_bytes().strip()
    except OSError as exc:
        raise TokenSecretError(
            f"security.authentication.jwt_secret_file {path} cannot be read ({exc.strerror}); "
            f"create it with `openssl rand -hex 32 > {path}`"
        ) from None
    if len(secret) < MIN_SECRET_BYTES:
        raise TokenSecretError(
            f"security.authentication.jwt_secret_file {path} holds {len(secret)} bytes; an "
            f"HS256 secret needs at least {MIN_SECRET_BYTES}: `openssl rand -hex 32 > {path}`"
        )
    return secret


def _invalid(reason: str, message: str) -> Unauthenticated:
    return Unauthenticated(f"invalid bearer token: {message}", reason=reason)


def _number(payload: dict[str, Any], claim: str) -> float:
    value = payload.get(claim)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _invalid("malformed_token", f"the token's {claim} claim is not a number")
    try:
        number = float(value)
    except OverflowError:  # an integer with hundreds of digits
        number = math.inf
    if not math.isfinite(number):
        raise _invalid("malformed_token", f"the token's {claim} claim is not a finite number")
    return number
