"""JWT bearer tokens: HS256 only, claims ``sub``, ``role``, ``iat``, ``exp`` (DESIGN §11).

The verifier is deliberately narrow: the header must say ``alg: HS256`` (``none`` and every
other algorithm are refused before anything else is read), the signature is checked in
constant time before the claims are parsed, and every claim is required and typed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
from typing import TYPE_CHECKING, Any

import attrs

from caxton.http.routes import Role
from caxton.security.errors import TokenSecretError, Unauthenticated
from caxton.security.roles import parse_role, role_name

if TYPE_CHECKING:
    from pathlib import Path

MAX_TOKEN_BYTES = 8192
MIN_SECRET_BYTES = 32
#: Clock skew tolerated between the issuer and this server.
LEEWAY_S = 30.0
_HEADER = {"alg": "HS256", "typ": "JWT"}


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
    """A signed token for ``subject`` with ``role``, valid from ``now`` for ``expiry_s``."""
    if not subject:
        raise ValueError("a token needs a subject (sub)")
    iat = math.floor(now)
    claims = {"sub": subject, "role": role_name(role), "iat": iat, "exp": iat + int(expiry_s)}
    signing_input = _b64(_json(_HEADER)) + "." + _b64(_json(claims))
    signature = hmac.new(secret, signing_input.encode("ascii"), hashlib.sha256).digest()
    return signing_input + "." + _b64(signature)


def verify_token(token: str, secret: bytes, *, now: float, leeway_s: float = LEEWAY_S) -> Claims:
    """The claims of a valid token; raise :class:`Unauthenticated` saying what is wrong."""
    if len(token) > MAX_TOKEN_BYTES:
        raise _invalid("malformed_token", f"the token is longer than {MAX_TOKEN_BYTES} bytes")
    parts = token.split(".")
    if len(parts) != 3 or not all(parts[:2]):
        raise _invalid("malformed_token", "a token has three base64url parts separated by dots")
    header = _object(parts[0], "header")
    if header.get("alg") != "HS256":
        raise _invalid(
            "wrong_algorithm",
            f"the token's algorithm is {header.get('alg')!r}; only HS256 tokens are accepted",
        )
    if "crit" in header or header.get("typ", "JWT") != "JWT":
        raise _invalid("malformed_token", "the token header has fields this server does not know")
    expected = hmac.new(secret, f"{parts[0]}.{parts[1]}".encode("ascii"), hashlib.sha256).digest()
    if not hmac.compare_digest(expected, _decode(parts[2], "signature")):
        raise _invalid("bad_signature", "the token's signature does not match this server's key")
    payload = _object(parts[1], "claims")
    sub = payload.get("sub")
    if not isinstance(sub, str) or not sub:
        raise _invalid("malformed_token", "the token has no subject (sub)")
    role_text = payload.get("role")
    if not isinstance(role_text, str):
        raise _invalid("malformed_token", "the token has no role claim")
    try:
        role = parse_role(role_text)
    except ValueError as exc:
        raise _invalid("malformed_token", f"the token's {exc}") from None
    iat, exp = _number(payload, "iat"), _number(payload, "exp")
    if exp <= iat:
        raise _invalid("malformed_token", "the token expires before it was issued")
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


def _json(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode("utf-8")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _decode(part: str, what: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    except (binascii.Error, ValueError):
        raise _invalid("malformed_token", f"the token's {what} is not base64url") from None


def _object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_decode(part, what))
    except (ValueError, UnicodeDecodeError):
        raise _invalid("malformed_token", f"the token's {what} is not JSON") from None
    if not isinstance(value, dict):
        raise _invalid("malformed_token", f"the token's {what} is not a JSON object")
    return value


def _number(payload: dict[str, Any], claim: str) -> float:
    value = payload.get(claim)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise _invalid("malformed_token", f"the token's {claim} claim is not a number")
    return float(value)
