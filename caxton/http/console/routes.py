"""``GET /ui`` and ``GET /ui/<asset>``: the console's page and its static files.

The files carry no data and no secret, so the routes are public (a browser fetches scripts and
styles without the credential, which the page keeps in ``sessionStorage`` and sends only to
``/api/v1`` and the WebSockets). Every answer carries the console's Content-Security-Policy
and ``nosniff``; files are revalidated with their ETag (``Cache-Control: no-cache``), so an
upgraded server never leaves a browser on old scripts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from quart import Response, request

from caxton.errors import NotFound
from caxton.http.console.assets import Asset, load_assets, lookup, security_headers
from caxton.http.routes import RouteTable
from caxton.security.roles import Role

if TYPE_CHECKING:
    from collections.abc import Callable

routes = RouteTable("ui")


def _assets_loader() -> Callable[[], dict[str, Asset]]:
    found: dict[str, Asset] = {}

    def assets() -> dict[str, Asset]:
        if not found:  # read on first use, not at import (STYLE 21)
            found.update(load_assets())
        return found

    return assets


_assets = _assets_loader()


def _serve(name: str) -> Response:
    asset = lookup(_assets(), name)
    if asset is None:
        raise NotFound(
            f"the console has no file {name!r}; open /ui for the console",
            details={"path": f"/ui/{name}"[:220]},
        )
    headers = security_headers(request.headers.get("Host"))
    headers["ETag"] = f'"{asset.etag}"'
    headers["Cache-Control"] = "no-cache"
    if asset.etag in request.headers.get("If-None-Match", ""):
        return Response(b"", status=304, headers=headers)
    return Response(asset.body, status=200, headers=headers, content_type=asset.media_type)


@routes.route("/ui", role=Role.PUBLIC, summary="The operator console (HTML page).", in_api=False)
async def console_page() -> Response:
    return _serve("")


@routes.route("/ui/", role=Role.PUBLIC, summary="The operator console (HTML page).", in_api=False)
async def console_page_slash() -> Response:
    return _serve("")


@routes.route(
    "/ui/<path:name>",
    role=Role.PUBLIC,
    summary="A static file of the console (script, style sheet, icon).",
    responses=(200, 304, 404),
    in_api=False,
)
async def console_asset(name: str) -> Response:
    return _serve(name)
