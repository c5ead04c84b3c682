"""The console's static files: which names exist, their media types, and the headers they are
served with. Pure functions over the package's ``static/`` folder; no I/O but reading files.

Only files that ship in the folder are served: a name is looked up in the set of files found
when the app starts (never joined onto a path), so ``..`` or an absolute path cannot reach
anything else.

The page names its files under a release prefix, ``/ui/v/<release>/``, where the release is a
digest of every file but the page: those URLs change whenever any file does, so they are cached
for good, and a browser that opens or reloads the console asks for the page alone (revalidated
by its ETag) instead of revalidating twenty files. The console's relative imports resolve under
the same prefix.
"""

from __future__ import annotations

import hashlib
import re
from importlib import resources
from typing import TYPE_CHECKING

import attrs

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

#: the console's page, served at ``/ui``
PAGE = "index.html"

#: File suffixes the console ships, with their media types (nothing else is served).
MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
}

#: Every page and asset: scripts and styles from this server only, no inline code, no frames,
#: network calls only to this origin (``'self'`` covers ws:/wss: to it in CSP level 3; the
#: ``ws:``/``wss:`` sources are added per request from the Host, see :func:`security_headers`).
_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'; connect-src 'self'{sockets}"
)

#: ``Host`` values that may be echoed into the CSP's connect-src.
_HOST_PATTERN = re.compile(r"^[A-Za-z0-9.\-]+(:[0-9]{1,5})?$|^\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?$")

_MAX_NAME = 200

#: the page's references to its files, rewritten to the release prefix
_PAGE_SOURCES = re.compile(r'(\s(?:src|href)=")/ui/')
#: ``v/<release>/<name>``: a file named under a release prefix
_RELEASED = re.compile(r"v/([0-9a-f]{1,64})/(.+)")


@attrs.frozen(kw_only=True)
class Asset:
    """One static file, read once."""

    name: str
    body: bytes
    media_type: str
    etag: str


def security_headers(host: str | None) -> dict[str, str]:
    """The headers every console response carries (``host``: the request's ``Host``)."""
    sockets = ""
    if host and _HOST_PATTERN.match(host):
        sockets = f" ws://{host} wss://{host}"
    return {
        "Content-Security-Policy": _CSP.format(sockets=sockets),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Cross-Origin-Resource-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }


def _walk(folder: Traversable, prefix: str) -> list[tuple[str, Traversable]]:
    found: list[tuple[str, Traversable]] = []
    for item in folder.iterdir():
        name = f"{prefix}{item.name}"
        if item.is_dir():
            found.extend(_walk(item, f"{name}/"))
        elif any(name.endswith(suffix) for suffix in MEDIA_TYPES):
            found.append((name, item))
    return found


def _asset(name: str, body: bytes) -> Asset:
    return Asset(
        name=name,
        body=body,
        media_type=MEDIA_TYPES[name[name.rfind(".") :]],
        etag=hashlib.blake2b(body, digest_size=12).hexdigest(),
    )


def release(assets: dict[str, Asset]) -> str:
    """A digest of every file but the page (their names and contents): the page's prefix for
    them (module docstring)."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(assets):
        if name != PAGE:
            digest.update(f"{name}\0{assets[name].etag}\0".encode())
    return digest.hexdigest()


def load_assets() -> dict[str, Asset]:
    """Every servable file under ``caxton/http/console/static``, by its name relative to it;
    the page's references to the others carry the :func:`release` prefix."""
    root = resources.files("caxton.http.console").joinpath("static")
    assets = {name: _asset(name, item.read_bytes()) for name, item in _walk(root, "")}
    page = assets.get(PAGE)
    if page is not None:
        prefixed = _PAGE_SOURCES.sub(rf"\1/ui/v/{release(assets)}/", page.body.decode())
        assets[PAGE] = _asset(PAGE, prefixed.encode())
    return assets


def released(name: str) -> tuple[str | None, str]:
    """Split ``v/<release>/<file>`` into the release and the file's name; any other name has
    no release (None) and is the file's name as it is."""
    found = _RELEASED.fullmatch(name)
    if found is None:
        return None, name
    return found.group(1), found.group(2)


def lookup(assets: dict[str, Asset], name: str) -> Asset | None:
    """The asset called ``name`` (``""`` is the page itself), or None."""
    if len(name) > _MAX_NAME:
        return None
    return assets.get(name or PAGE)
