"""A token bucket per caller: ``burst_size`` tokens, refilled at ``requests_per_minute``.

Pure and synchronous: the clock is injected, so tests step time by hand. Each request takes
one token; an empty bucket refuses until a token has dripped back in. Buckets of callers that
went quiet are dropped once there are more than ``max_buckets`` of them (a full bucket is the
same as no bucket), so spraying source addresses cannot grow memory without bound.
"""

from __future__ import annotations

import functools
import ipaddress
import math
import time
from typing import TYPE_CHECKING

import attrs

from caxton.config.checks import is_loopback_address as loopback_address

if TYPE_CHECKING:
    from collections.abc import Callable


#: IPv6 addresses are bucketed by this prefix: one host usually holds a whole /64, so a
#: per-address bucket would give it 2**64 buckets (issue #13).
IPV6_BUCKET_PREFIX = 64

#: Client addresses whose bucket key and loopback verdict are remembered (parsing an address
#: costs a few microseconds per request; a server sees few distinct ones at a time).
_ADDRESSES_REMEMBERED = 4096


@functools.lru_cache(maxsize=_ADDRESSES_REMEMBERED)
def client_bucket(address: str | None) -> str:
    """The bucket key of a client address: ``ip:`` and the IPv4 address or the IPv6 /64.

    IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``) count as their IPv4 address; a value
    that is not an address (a Unix socket, none at all) is kept as it is.
    """
    if not address:
        return "ip:unknown"
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"ip:{address}"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return f"ip:{ip.ipv4_mapped}"
        network = ipaddress.IPv6Network((ip, IPV6_BUCKET_PREFIX), strict=False)
        return f"ip:{network}"
    return f"ip:{ip}"


#: Whether a client address is this machine, remembered per address.
is_loopback_address = functools.lru_cache(maxsize=_ADDRESSES_REMEMBERED)(loopback_address)


@attrs.frozen(kw_only=True)
class RateDecision:
    """The answer for one request, and the values of its ``X-RateLimit-*`` headers."""

    allowed: bool
    limit: int
    remaining: int
    #: Seconds until the bucket is full again.
    reset_s: int
    #: Seconds until the next request would be allowed (0 when this one was).
    retry_after_s: int

    def headers(self) -> dict[str, str]:
        headers = {
            "X-RateLimit-Limit": str(self.limit),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(self.reset_s),
        }
        if not self.allowed:
            headers["Retry-After"] = str(self.retry_after_s)
        return headers


class TokenBucketLimiter:
    """Token buckets keyed by caller (``key:NAME``, ``sub:NAME`` or ``ip:ADDRESS``).

    Args:
        requests_per_minute: the sustained rate; also the ``X-RateLimit-Limit`` value.
        burst_size: bucket capacity, the requests allowed back to back.
        clock: seconds from any fixed origin (default ``time.monotonic``).
        max_buckets: callers tracked at once before idle ones are dropped.
    """

    def __init__(
        self,
        *,
        requests_per_minute: int,
        burst_size: int,
        clock: Callable[[], float] = time.monotonic,
        max_buckets: int = 10_000,
    ) -> None:
        if requests_per_minute < 1 or burst_size < 1:
            raise ValueError("requests_per_minute and burst_size must be at least 1")
        self.limit = requests_per_minute
        self.capacity = float(burst_size)
        self.rate_per_s = requests_per_minute / 60.0
        self.clock = clock
        self.max_buckets = max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}

    def check(self, key: str) -> RateDecision:
        """Take one token from ``key``'s bucket if there is one."""
        now = self.clock()
        tokens = self._tokens(key, now)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets.pop(key, None)  # re-insert: dict order is least recently used first
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > self.max_buckets:
            self._prune(now)
        return RateDecision(
            allowed=allowed,
            limit=self.limit,
            remaining=math.floor(tokens),
            reset_s=math.ceil((self.capacity - tokens) / self.rate_per_s),
            retry_after_s=0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate_per_s)),
        )

    def has_token(self, key: str) -> bool:
        """Whether ``key``'s bucket holds a token now (nothing is taken)."""
        return self._tokens(key, self.clock()) >= 1.0

    def tracked(self) -> int:
        return len(self._buckets)

    def _tokens(self, key: str, now: float) -> float:
        state = self._buckets.get(key)
        if state is None:
            return self.capacity
        tokens, updated = state
        return min(self.capacity, tokens + max(0.0, now - updated) * self.rate_per_s)

    def _prune(self, now: float) -> None:
        for key in [k for k in self._buckets if self._tokens(k, now) >= self.capacity]:
            del self._buckets[key]
        while len(self._buckets) > self.max_buckets:
            del self._buckets[next(iter(self._buckets))]
