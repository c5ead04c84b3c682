"""What request handlers reach: the :class:`~caxton.services.Services` of their server."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from quart import current_app

if TYPE_CHECKING:
    from caxton.http.routes import RouteSpec
    from caxton.services import Services

SERVICES_KEY = "CAXTON_SERVICES"
ROUTES_KEY = "CAXTON_ROUTES"


def current_services() -> Services:
    """The services of the app handling the current request."""
    return cast("Services", current_app.config[SERVICES_KEY])


def declared_routes() -> list[RouteSpec]:
    """Every route declared on the app handling the current request."""
    return cast("list[RouteSpec]", current_app.config[ROUTES_KEY])
