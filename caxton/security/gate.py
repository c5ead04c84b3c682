"""The running security state of one server: keys, token secret, rate limiter, CORS, audit.

:func:`load_security` reads the files ``security:`` names once at start and refuses to start
on anything unusable (a malformed key file names its line). Afterwards the key file is
re-read when it changes (checked at most once a second, in a worker thread), so
``caxton keys create`` and ``caxton keys revoke`` take effect without a restart; a change that
breaks the file is logged and the previous keys stay in force, but a key file that is deleted
(or can no longer be read) fails closed: no key is accepted until it is back.

Rate limits (DESIGN §9, issue #13): every request takes a token from one bucket before any
credential is checked: the bucket of the credential it presents (an API key's hash, a
token's digest), or of its client address (IPv6 by /64) when it presents none. A failed
authentication also takes a token from the client address's bucket, and a credential is not
even looked at while that bucket is empty, so guessing keys is as slow as the limit. With
authentication off every caller is limited by address, except loopback clients unless
``security.rate_limiting.enabled`` is explicitly ``true`` (local tools and benchmarks).
"""

from __future__ import annotations

import hashlib
import logging
import time
from typing import TYPE_CHECKING, Literal

import attrs
import trio

from caxton.config.checks import auth_required, is_loopback
from caxton.errors import StartupError
from caxton.security.audit import AuditLog
from caxton.security.cors import CorsPolicy
from caxton.security.errors import KeyFileError, RateLimited, Unauthenticated
from caxton.security.keys import KeyRing, hash_key, read_key_file, readable_by_others
from caxton.security.ratelimit import (
    RateDecision,
    TokenBucketLimiter,
    client_bucket,
    is_loopback_address,
)
from caxton.security.roles import Role, role_name
from caxton.security.tokens import (
    MAX_TOKEN_BYTES,
    load_secret,
    looks_like_token,
    verify_token,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from prometheus_client import Counter

    from caxton.config.model import CaxtonConfig
    from caxton.metrics import Metrics

LOGGER = logging.getLogger("caxton.security")
KEY_FILE_CHECK_INTERVAL_S = 1.0

AuthKind = Literal["api_key", "jwt", "none"]


@attrs.frozen(kw_only=True)
class Identity:
    """Who is calling: a key's name or a token's subject, with its role."""

    name: str
    role: Role
    auth: AuthKind

    @property
    def role_name(self) -> str | None:
        return role_name(self.role) if self.role is not Role.PUBLIC else None


#: The caller when authentication is off: the API is open (DESIGN §9).
OPEN = Identity(name="anonymous", role=Role.ADMIN, auth="none")


@attrs.frozen(kw_only=True)
class Credential:
    kind: Literal["api_key", "bearer"]
    value: str

    @property
    def rate_key(self) -> str:
        """The bucket of this credential, known before it is checked (never the secret)."""
        if looks_like_token(self.value):
            return "jwt:" + hashlib.sha256(self.value.encode("utf-8", "replace")).hexdigest()
        return "key:" + hash_key(self.value)


def exposure_warning(config: CaxtonConfig) -> str | None:
    """The warning for an API reachable from other machines without authentication."""
    host = config.server.host
    if is_loopback(host) or auth_required(config):
        return None
    return (
        f"the API listens on {host} with authentication disabled; anyone who can reach this "
        "address can deploy agents. Set security.authentication.enabled: true or bind "
        "server.host to 127.0.0.1"
    )


def security_refusals(config: CaxtonConfig) -> list[str]:
    """Settings ``caxton start`` refuses, judged from the file alone (no file is read)."""
    security = config.security
    problems = []
    if (
        auth_required(config)
        and not security.api_keys.key_file
        and not security.authentication.jwt_secret_file
    ):
        problems.append(
            "authentication is on (security.authentication.enabled or "
            "security.api_keys.required), but neither security.api_keys.key_file nor "
            "security.authentication.jwt_secret_file is set, so no caller could ever "
            "authenticate; set key_file and create a key with `caxton keys create`"
        )
    limits = security.rate_limiting
    if limits.enabled is not False and (limits.requests_per_minute < 1 or limits.burst_size < 1):
        problems.append(
            "security.rate_limiting: requests_per_minute and burst_size must be at least 1 "
            "(or set enabled: false)"
        )
    return problems


def credential_from(
    authorization: str | None, api_key: str | None, query_token: str | None = None
) -> Credential | None:
    """The one credential a request carries; raise :class:`Unauthenticated` when malformed."""
    presented = [v for v in (authorization, api_key, query_token) if v is not None]
    if not presented:
        return None
    if len(presented) > 1:
        raise Unauthenticated(
            "send one credential: X-API-Key or Authorization: Bearer (or ?token= on a "
            "WebSocket), not several",
            reason="malformed",
        )
    if any(len(v) > MAX_TOKEN_BYTES for v in presented):
        raise Unauthenticated(
            f"the credential is longer than {MAX_TOKEN_BYTES} bytes", reason="malformed"
        )
    if api_key is not None:
        value = api_key.strip()
        kind: Literal["api_key", "bearer"] = "api_key"
    elif authorization is not None:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthenticated(
                "the Authorization header must be `Bearer <token or API key>`",
                reason="malformed",
            )
        value, kind = value.strip(), "bearer"
    else:
        value, kind = (query_token or "").strip(), "bearer"
    if not value:
        raise Unauthenticated("the credential is empty", reason="empty_credential")
    return Credential(kind=kind, value=value)


class SecurityGate:
    """Authentication, rate limits, CORS and audit for one server.

    Args:
        config: the server configuration.
        keys: the parsed key file (None when no key file is configured or needed).
        keys_path: where ``keys`` came from, re-read when it changes.
        secret: the HS256 secret (None when tokens are not configured).
        failures: the ``caxton_api_authentication_failures_total`` counter (label reason).
        wall: Unix time, for token expiry.
        clock: monotonic time, for rate limits and key file checks.
    """

    def __init__(
        self,
        config: CaxtonConfig,
        *,
        keys: KeyRing | None = None,
        keys_path: Path | None = None,
        secret: bytes | None = None,
        failures: Counter | None = None,
        wall: Callable[[], float] = time.time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        security = config.security
        self.required = auth_required(config)
        self.keys = keys
        self.keys_path = keys_path
        self.secret = secret
        self.failures = failures
        self.wall = wall
        self.clock = clock
        self.cors = CorsPolicy.from_config(security.cors)
        limits = security.rate_limiting
        self.limiter = (
            TokenBucketLimiter(
                requests_per_minute=limits.requests_per_minute,
                burst_size=limits.burst_size,
                clock=clock,
            )
            if limits.enabled is not False
            else None
        )
        #: Loopback clients are limited too: with authentication on, or when the operator
        #: enabled limits explicitly (the default spares local tools and benchmarks).
        self.limit_loopback = self.required or limits.enabled is True
        self.audit = (
            AuditLog(config.resolve_path(security.audit.log_file))
            if security.audit.enabled
            else None
        )
        self.tls = security.tls.enabled
        self.exposure = exposure_warning(config)
        self._keys_stamp = _stamp(keys_path) if keys_path else None
        self._keys_checked = clock()
        self._keys_lock = trio.Lock()

    async def authenticate(self, credential: Credential | None) -> Identity:
        """The identity ``credential`` proves; raise :class:`Unauthenticated` otherwise."""
        if credential is None:
            raise Unauthenticated(
                "this route needs credentials: send `X-API-Key: <key>` or "
                "`Authorization: Bearer <token or key>` (CLI: set CAXTON_API_KEY)",
                reason="missing",
            )
        if credential.kind == "bearer" and looks_like_token(credential.value):
            if self.secret is None:
                raise Unauthenticated(
                    "bearer tokens are not accepted here: security.authentication."
                    "jwt_secret_file is not set; use an API key",
                    reason="tokens_disabled",
                )
            claims = verify_token(credential.value, self.secret, now=self.wall())
            return Identity(name=claims.sub, role=claims.role, auth="jwt")
        await self._refresh_keys()
        entry = self.keys.lookup(credential.value) if self.keys is not None else None
        if entry is None:
            raise Unauthenticated("unknown API key", reason="unknown_key")
        if entry.revoked:
            raise Unauthenticated(
                f"the API key {entry.name!r} has been revoked", reason="revoked_key"
            )
        return Identity(name=entry.name, role=entry.role, auth="api_key")

    def count_failure(self, error: Unauthenticated) -> None:
        if self.failures is not None:
            self.failures.labels(reason=error.reason).inc()

    def limits(self, client: str | None) -> bool:
        """Whether requests from ``client`` (an address) are rate limited at all."""
        if self.limiter is None:
            return False
        return self.limit_loopback or not is_loopback_address(client)

    def rate(self, key: str, client: str | None) -> RateDecision | None:
        """Take a token for ``key`` (a request from ``client``); None when not limited."""
        if self.limiter is None or not self.limits(client):
            return None
        return self.limiter.check(key)

    def address_spent(self, client: str | None) -> bool:
        """Whether ``client``'s address bucket is empty (failures emptied it)."""
        if self.limiter is None or not self.limits(client):
            return False
        return not self.limiter.has_token(client_bucket(client))

    def refused(self, decision: RateDecision) -> RateLimited:
        """The 429 for a refused ``decision``."""
        burst = int(self.limiter.capacity) if self.limiter is not None else 0
        return RateLimited(
            f"too many requests: the limit is {decision.limit} a minute with bursts of "
            f"{burst} (security.rate_limiting); retry in {decision.retry_after_s}s",
            retry_after_s=decision.retry_after_s,
        )

    def summary(self) -> dict[str, object]:
        """The security part of ``/api/v1/health``."""
        return {
            "authentication": self.required,
            "tls": self.tls,
            "rate_limiting": self.limiter is not None,
            "cors": self.cors.enabled,
            "audit": self.audit is not None,
            "warnings": [self.exposure] if self.exposure else [],
        }

    async def _refresh_keys(self) -> None:
        """Re-read the key file if it changed since the last look (at most once a second)."""
        path = self.keys_path
        now = self.clock()
        if path is None or now - self._keys_checked < KEY_FILE_CHECK_INTERVAL_S:
            return
        async with self._keys_lock:
            if self.clock() - self._keys_checked < KEY_FILE_CHECK_INTERVAL_S:
                return
            self._keys_checked = self.clock()
            stamp = await trio.to_thread.run_sync(_stamp, path)
            if stamp == self._keys_stamp:
                return
            if stamp is None:
                # deleted (or moved away): fail closed rather than keep keys nobody can see
                self.keys, self._keys_stamp = KeyRing(()), None
                LOGGER.error(
                    "API key file %s is gone or unreadable: no API key is accepted until it "
                    "is back (caxton keys create writes a new one)",
                    path,
                )
                return
            try:
                keys = await trio.to_thread.run_sync(read_key_file, path)
            except KeyFileError as exc:
                LOGGER.error("%s; keeping the keys loaded before", exc.message)
                self._keys_stamp = stamp
                return
            self.keys, self._keys_stamp = keys, stamp
            LOGGER.info("API key file %s re-read: %d active keys", path, len(keys.active()))


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        info = path.stat()
    except OSError:
        return None
    return (info.st_ino, info.st_mtime_ns, info.st_size)


def load_security(config: CaxtonConfig, metrics: Metrics | None) -> SecurityGate:
    """Read what ``security:`` names and build the gate (blocking: call at start).

    ``metrics`` receives ``caxton_api_authentication_failures_total``; pass None for a second
    app over the same registry (the counter can be registered once only).

    Raises:
        StartupError: a setting no caller could pass, or a named file that is missing,
            unreadable or malformed (:class:`KeyFileError` names the line).
    """
    refusals = security_refusals(config)
    if refusals:
        raise StartupError("; ".join(refusals))
    security = config.security
    failures = None
    if metrics is not None:
        failures = metrics.counter(
            "caxton_api_authentication_failures",
            "API requests refused because their credential was missing or invalid, by reason.",
            ["reason"],
        )
    keys = keys_path = secret = None
    warnings: list[str | None] = []
    if auth_required(config) and security.api_keys.key_file:
        keys_path = config.resolve_path(security.api_keys.key_file)
        keys = read_key_file(keys_path)
        warnings.append(readable_by_others(keys_path))
        if not keys.active():
            warnings.append(f"API key file {keys_path} has no active key yet")
    if auth_required(config) and security.authentication.jwt_secret_file:
        secret_path = config.resolve_path(security.authentication.jwt_secret_file)
        secret = load_secret(secret_path)
        warnings.append(readable_by_others(secret_path))
    tls = security.tls
    if tls.enabled and tls.cert_file and tls.key_file:
        for key, value in (("cert_file", tls.cert_file), ("key_file", tls.key_file)):
            path = config.resolve_path(value)
            if not path.is_file():
                raise StartupError(
                    f"security.tls.{key}: {path} does not exist; the README's Security "
                    "section shows how to make a certificate"
                )
        warnings.append(readable_by_others(config.resolve_path(tls.key_file)))
    for warning in warnings:
        if warning:
            LOGGER.warning("SECURITY: %s", warning)
    return SecurityGate(config, keys=keys, keys_path=keys_path, secret=secret, failures=failures)
