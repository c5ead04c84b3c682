"""Browser-facing checks at the HTTP edge, as pure functions of request headers (issue #13).

A default install has authentication off and listens on loopback, so any web page the
operator opens could otherwise drive the API: a cross-site form post needs no preflight, a
rebound domain reaches 127.0.0.1 with a foreign ``Host``, and WebSockets ignore CORS. Two
checks close that:

- ``Host`` (authentication off only): ``localhost``, ``127.0.0.1``, ``[::1]`` (any port), the
  address ``server.host`` names when it is a specific one, and ``server.allowed_hosts``.
- ``Origin`` (unsafe methods and WebSocket handshakes, always): no ``Origin`` (CLI clients,
  curl) is fine; the server's own origin (``Origin`` host equals ``Host``) is fine; an origin
  in ``security.cors.allowed_origins`` is fine; anything else (``null`` included) is refused.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import attrs

from caxton.config.checks import LOOPBACK_HOSTS, is_loopback_address

if TYPE_CHECKING:
    from caxton.config.model import CaxtonConfig
    from caxton.security.cors import CorsPolicy

_WILDCARDS = frozenset({"", "0.0.0.0", "::"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


def host_name(host: str) -> str:
    """The name part of a ``Host`` value, lowercased: ``[::1]:8080`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    if host.count(":") > 1:  # a bare IPv6 address, no port
        return host
    return host.rsplit(":", 1)[0] if ":" in host else host


@attrs.frozen(kw_only=True)
class HostPolicy:
    """Which ``Host`` names are served while authentication is off."""

    names: frozenset[str]

    @classmethod
    def from_config(cls, config: CaxtonConfig) -> HostPolicy:
        names = set(LOOPBACK_HOSTS)
        names.update(host_name(h) for h in config.server.allowed_hosts if h.strip())
        bound = host_name(config.server.host)
        if bound not in _WILDCARDS:
            names.add(bound)
        return cls(names=frozenset(names))

    def allows(self, host: str | None) -> bool:
        """Whether ``host`` (the header's value; None when absent) may be served."""
        if host is None:
            return True  # HTTP/1.0 clients and tools; browsers always send Host
        name = host_name(host).rstrip(".")
        return name in self.names or is_loopback_address(name)


def origin_refusal(
    origin: str | None, host: str | None, cors: CorsPolicy, *, scheme: str
) -> str | None:
    """Why a request from ``origin`` to this server at ``host`` is refused, or None."""
    if origin is None:
        return None
    if cors.allows_origin(origin):
        return None
    if host is not None and _same_origin(origin, host, scheme):
        return None
    return (
        f"requests from the web origin {origin} are refused: add it to "
        "security.cors.allowed_origins to allow a browser page there to call this API"
    )


def _same_origin(origin: str, host: str, scheme: str) -> bool:
    try:
        parts = urlsplit(origin.strip())
        origin_port = parts.port or _DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:
        return False
    if not parts.hostname or parts.scheme != scheme:
        return False
    host_parts = urlsplit(f"//{host.strip()}")
    try:
        host_port = host_parts.port or _DEFAULT_PORTS.get(scheme, 0)
    except ValueError:
        return False
    return (parts.hostname.lower(), origin_port) == (
        (host_parts.hostname or "").lower(),
        host_port,
    )
