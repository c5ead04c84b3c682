"""Route declarations: every route states, in one place, its methods, role and summary.

Handlers are declared on a :class:`RouteTable` instead of directly on the Quart app, so the
same declarations drive three things: registration on the app, the OpenAPI document, and (in
the security layer) the role a caller must hold. A test checks that the app has no route the
table does not know.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import attrs

from caxton.security.roles import Role

Handler = Callable[..., Awaitable[Any]]
H = TypeVar("H", bound=Handler)


@attrs.frozen(kw_only=True)
class QueryParam:
    name: str
    description: str
    type: str = "string"
    required: bool = False


@attrs.frozen(kw_only=True)
class RouteSpec:
    """One route: ``rule`` uses Quart syntax (``/api/v1/agents/<name>``)."""

    rule: str
    methods: tuple[str, ...]
    role: Role
    summary: str
    handler: Handler
    tag: str
    websocket: bool = False
    query: tuple[QueryParam, ...] = ()
    request_body: str | None = None
    responses: tuple[int, ...] = (200,)
    #: Whether the route belongs to the JSON API and its OpenAPI document (the console's page
    #: and files at /ui do not).
    in_api: bool = True
    #: Whether a call changes server state: audited, and refused while in safe mode.
    #: Defaults to "any method but GET"; routes that only compute (validate, talk to an
    #: agent) declare ``mutating=False``.
    mutating: bool = attrs.field()
    #: The handler checks the role of each operation the body asks for (``/mcp``, issue #19);
    #: ``role`` is then the least role of any operation.
    roles_per_call: bool = False

    @mutating.default
    def _mutating_default(self) -> bool:
        return any(method not in {"GET", "HEAD", "OPTIONS"} for method in self.methods)

    @property
    def endpoint(self) -> str:
        return f"{self.tag}.{self.handler.__name__}"

    @property
    def openapi_path(self) -> str:
        """``/api/v1/agents/<name>`` -> ``/api/v1/agents/{name}``."""
        return re.sub(r"<(?:[a-z]+:)?([A-Za-z_]+)>", r"{\1}", self.rule)

    @property
    def path_params(self) -> list[str]:
        return re.findall(r"<(?:[a-z]+:)?([A-Za-z_]+)>", self.rule)


class RouteTable:
    """A group of routes declared by one module (``tag`` names it in the OpenAPI document)."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.routes: list[RouteSpec] = []

    def route(
        self,
        rule: str,
        *,
        methods: tuple[str, ...] = ("GET",),
        role: Role,
        summary: str,
        query: tuple[QueryParam, ...] = (),
        request_body: str | None = None,
        responses: tuple[int, ...] = (200,),
        mutating: bool | None = None,
        roles_per_call: bool = False,
        in_api: bool = True,
    ) -> Callable[[H], H]:
        """Declare an HTTP route (``mutating`` overrides the method-based default)."""

        def register(handler: H) -> H:
            spec = RouteSpec(
                rule=rule,
                methods=methods,
                role=role,
                summary=summary,
                handler=handler,
                tag=self.tag,
                query=query,
                request_body=request_body,
                responses=responses,
                roles_per_call=roles_per_call,
                in_api=in_api,
            )
            if mutating is not None:
                spec = attrs.evolve(spec, mutating=mutating)
            self.routes.append(spec)
            return handler

        return register

    def websocket(self, rule: str, *, role: Role, summary: str) -> Callable[[H], H]:
        """Declare a WebSocket route."""

        def register(handler: H) -> H:
            self.routes.append(
                RouteSpec(
                    rule=rule,
                    methods=("GET",),
                    role=role,
                    summary=summary,
                    handler=handler,
                    tag=self.tag,
                    websocket=True,
                    responses=(101,),
                )
            )
            return handler

        return register
