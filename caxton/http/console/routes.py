"""``GET /ui`` and ``GET /ui/<asset>``: the console's page and its static files.

The files carry no data and no secret, so the routes are public (a browser fetches scripts and
styles without the credential, which the page keeps in ``sessionStorage`` and sends only to
``/api/v1`` and the WebSockets). Every answer carries the console's Content-Security-Policy
and ``nosniff``. The page is revalidated with its ETag (``Cache-Control: no-cache``), so an
upgraded server never leaves a browser on old scripts; the files it names carry the release
prefix of this server's files (:mod:`caxton.http.console.assets`) and are cached for good. A
file asked for without the prefix, or under another release's (a page from before an upgrade),
is served as it is now and revalidated like the page.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response, request

from caxton.errors import NotFound
from caxton.http.console.assets import (
    PAGE,
    Asset,
    load_assets,
    lookup,
    release,
    released,
    security_headers,
)
from caxton.http.routes import RouteTable
from caxton.security.roles import Role

if TYPE_CHECKING:
    from collections.abc import Callable

routes = RouteTable("ui")


#: files named under this server's release prefix never change
FOR_GOOD = "public, max-age=31536000, immutable"


def _assets_loader() -> Callable[[], tuple[dict[str, Asset], str]]:
    found: dict[str, Asset] = {}
    releases: list[str] = []

    def assets() -> tuple[dict[str, Asset], str]:
        if not found:  # read on first use, not at import (STYLE 21)
            found.update(load_assets())
            releases.append(release(found))
        return found, releases[0]

    return assets


_assets = _assets_loader()


def _serve(path: str) -> Response:
    assets, current = _assets()
    prefix, name = released(path)
    asset = lookup(assets, name)
    if asset is None or (prefix is not None and asset.name == PAGE):
        raise NotFound(
            f"the console has no file {path[:200]!r}; open /ui for the console",
            details={"path": f"/ui/{path}"[:220]},
        )
    headers = security_headers(request.headers.get("Host"))
    headers["ETag"] = f'"{asset.etag}"'
    headers["Cache-Control"] = FOR_GOOD if prefix == current else "no-cache"
    if asset.etag in request.headers.get("If-None-Match", ""):
        return Response(b"", status=304, headers=headers)
    return Response(asset.body, status=200, headers=headers, content_type=asset.media_type)


@routes.route("/ui", role=Role.PUBLIC, summary="The operator console (HTML page).", in_api=False)
async def console_page() -> Response:
    return _serve(PAGE)


@routes.route("/ui/", role=Role.PUBLIC, summary="The operator console (HTML page).", in_api=False)
async def console_page_slash() -> Response:
    return _serve(PAGE)


@routes.route(
    "/ui/<path:name>",
    role=Role.PUBLIC,
    summary="A static file of the console (script, style sheet, icon).",
    responses=(200, 304, 404),
    in_api=False,
)
async def console_asset(name: str) -> Response:
    return _serve(name)
