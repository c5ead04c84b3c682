"""What ``http_client`` may reach: host, port and address rules, and the headers it sends (pure).

An ``allowed_hosts`` entry names a host and, optionally, a port:

- ``api.example.com``: that host on the default port of the URL's scheme (443, or 80);
- ``api.example.com:8443``: that host on port 8443 only;
- ``*.example.com`` (``:port`` too): any subdomain of example.com;
- ``127.0.0.1:8080``, ``[::1]:8080``, ``localhost:8080``: a loopback or private address may be
  reached only through an entry that names it (an IP address, or ``localhost``);
- ``private:intranet.example.com``: a name that resolves to a private address, allowed so.

A name is resolved once, every address it resolves to must be public (unless its entry allows
private ones), and the request is sent to the checked address, so a DNS answer that changes in
between cannot redirect it (issue #13). Headers a model may not set (``Host``, hop-by-hop
headers, credentials and cookies) are dropped.
"""

from __future__ import annotations

import ipaddress
from typing import Final
from urllib.parse import SplitResult, urlsplit

import attrs

DEFAULT_PORTS: Final = {"http": 80, "https": 443}
PRIVATE_PREFIX: Final = "private:"
#: Request headers the model's ``headers`` argument may not set.
DROPPED_HEADERS: Final = frozenset(
    {
        "host",
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "authorization",
        "cookie",
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-real-ip",
    }
)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@attrs.frozen(kw_only=True)
class HostRule:
    """One parsed ``allowed_hosts`` entry.

    Attributes:
        host: lower-case host name or IP address (no brackets); ``*.domain`` for subdomains.
        port: the one port allowed; ``None`` means the scheme's default port.
        private_ok: loopback, private and link-local addresses may be reached.
    """

    host: str
    port: int | None
    private_ok: bool

    def matches(self, host: str, port: int, scheme: str) -> bool:
        wanted = self.port if self.port is not None else DEFAULT_PORTS[scheme]
        if port != wanted:
            return False
        if self.host.startswith("*."):
            return host.endswith(self.host[1:]) and len(host) > len(self.host) - 1
        return host == self.host


@attrs.frozen(kw_only=True)
class Target:
    """A checked URL: where to connect, and what to tell the server."""

    scheme: str
    host: str
    port: int
    rule: HostRule
    parts: SplitResult

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        return shown if self.port == DEFAULT_PORTS[self.scheme] else f"{shown}:{self.port}"

    def url_for(self, address: IPAddress) -> str:
        """The URL with its host replaced by ``address`` (the one that was checked)."""
        shown = f"[{address}]" if address.version == 6 else str(address)
        path = self.parts.path or "/"
        query = f"?{self.parts.query}" if self.parts.query else ""
        return f"{self.scheme}://{shown}:{self.port}{path}{query}"


def ip_literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def parse_rule(entry: str) -> HostRule | None:
    """Parse one ``allowed_hosts`` entry; ``None`` when it cannot be one."""
    text = entry.strip().lower()
    private = text.startswith(PRIVATE_PREFIX)
    text = text.removeprefix(PRIVATE_PREFIX)
    port: int | None = None
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            if not rest.startswith(":") or not rest[1:].isdigit():
                return None
            port = int(rest[1:])
    elif text.count(":") == 1:
        host, _, number = text.partition(":")
        if not number.isdigit():
            return None
        port = int(number)
    else:
        host = text
    if not host or (port is not None and not 0 < port < 65536):
        return None
    literal = ip_literal(host)
    return HostRule(
        host=str(literal) if literal else host,
        port=port,
        private_ok=private or literal is not None or host == "localhost",
    )


class UrlRefused(ValueError):
    """The URL may not be fetched; the message says why and what would allow it."""


def check_url(url: str, entries: tuple[str, ...]) -> Target:
    """Return where ``url`` may be fetched, or raise :class:`UrlRefused`."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise UrlRefused(f"{url!r} is not a URL") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise UrlRefused(f"{url!r} is not an http(s) URL")
    if parts.username is not None or parts.password is not None:
        raise UrlRefused("URLs with user:password@ are not fetched; credentials stay out of URLs")
    host = parts.hostname.lower()
    literal = ip_literal(host)
    host = str(literal) if literal else host
    port = port if port is not None else DEFAULT_PORTS[parts.scheme]
    for entry in entries:
        rule = parse_rule(entry)
        if rule is not None and rule.matches(host, port, parts.scheme):
            return Target(scheme=parts.scheme, host=host, port=port, rule=rule, parts=parts)
    shown = ", ".join(entries) if entries else "none"
    raise UrlRefused(
        f"{host}:{port} is not an allowed host and port (allowed: {shown}); the operator adds "
        "it to [tool_config.http_client] allowed_hosts (a port other than the scheme's "
        "default is written host:port)"
    )


def refused_address(target: Target, addresses: list[IPAddress]) -> str | None:
    """Why ``target`` may not be reached at ``addresses`` (``None`` when it may)."""
    if not addresses:
        return f"{target.host} did not resolve to any address"
    if target.rule.private_ok:
        return None
    for address in addresses:
        mapped = getattr(address, "ipv4_mapped", None) or address
        if not mapped.is_global or mapped.is_multicast:
            return (
                f"{target.host} resolves to {address}, a loopback, private or link-local "
                "address; only an allowed_hosts entry that names that address (or "
                f"private:{target.host}) may reach it"
            )
    return None


def request_headers(given: object, target: Target) -> dict[str, str]:
    """The model's headers without the ones it may not set, and the real ``Host``."""
    headers: dict[str, str] = {}
    if isinstance(given, dict):
        for key, value in given.items():
            name = str(key).strip()
            if name.lower() not in DROPPED_HEADERS:
                headers[name] = str(value)
    headers["Host"] = target.host_header
    return headers
