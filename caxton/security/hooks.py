"""The security gate as Quart hooks, run for every request after the request id is set.

Order for an HTTP request: CORS preflight (answered here, no credentials needed); exempt
routes (``/health``, ``/ready``, ``/api/v1/health``) pass; then the caller is identified,
their token bucket is charged (per key, or per client address when the credential is
missing or bad, which also slows down key guessing), and only then does a bad credential
become 401 and a too-small role 403. Routes declared ``Role.PUBLIC`` need no credential.
Refusals are raised as :class:`~caxton.errors.CaxtonError`, so they take the normal error path:
the JSON envelope, and the ASGI wrapper that drains the request body first (DESIGN §11).

After the response: ``X-RateLimit-*`` headers, ``WWW-Authenticate`` on 401, CORS headers, and
one audit line for every call to a mutating route, refused calls included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from quart import Response, g, request, websocket

from caxton.http.routes import Role
from caxton.http.state import ROUTES_KEY
from caxton.security.audit import AuditRecord
from caxton.security.errors import Forbidden, RateLimited, Unauthenticated
from caxton.security.gate import OPEN, Identity, SecurityGate, credential_from, load_security
from caxton.security.roles import Requirement, denial

if TYPE_CHECKING:
    from quart_trio import QuartTrio

    from caxton.http.routes import RouteSpec
    from caxton.http.state import ServerState

#: Probes that must answer whatever the credentials or the rate (DESIGN §9).
EXEMPT_RULES = frozenset({"/health", "/ready", "/api/v1/health"})


def install(app: QuartTrio, state: ServerState) -> None:
    """Add the security hooks to ``app`` (after every route is registered)."""
    if state.security is None:
        # an app built outside ``serve`` (tests, tools): no failure counter, as ``serve``
        # registers it on the shared metrics registry
        state.security = load_security(state.config, None)
    gate = state.security
    gate.routes = tuple(cast("list[RouteSpec]", app.config[ROUTES_KEY]))
    specs = {spec.endpoint: spec for spec in gate.routes}

    async def before_request() -> Response | None:
        rule = request.url_rule
        requirement = (
            Requirement.of(specs.get(str(rule.endpoint)), rule.rule) if rule is not None else None
        )
        if requirement is not None and request.method == "OPTIONS":
            # OPTIONS only lists a route's methods: any known caller may ask, nothing changes
            requirement = requirement.for_options()
        g.security_requirement = requirement
        origin = request.headers.get("Origin")
        wanted = request.headers.get("Access-Control-Request-Method")
        if request.method == "OPTIONS" and origin and wanted and gate.cors.enabled:
            answer = gate.cors.preflight(
                origin, wanted, request.headers.get("Access-Control-Request-Headers")
            )
            if isinstance(answer, str):
                raise Forbidden(f"CORS preflight refused: {answer}")
            g.security_preflight = True
            return Response("", status=204, headers=answer)
        if rule is not None and rule.rule in EXEMPT_RULES:
            return None
        await _check(
            gate,
            requirement,
            request.method,
            request.remote_addr,
            request.headers.get("Authorization"),
            request.headers.get("X-API-Key"),
            None,
        )
        return None

    async def after_request(response: Response) -> Response:
        decision = getattr(g, "security_rate", None)
        if decision is not None:
            response.headers.update(decision.headers())
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="caxton"'
        if not getattr(g, "security_preflight", False):
            for name, value in gate.cors.response_headers(request.headers.get("Origin")).items():
                response.headers[name] = value
        requirement: Requirement | None = getattr(g, "security_requirement", None)
        if gate.audit is not None and requirement is not None and requirement.mutating:
            identity: Identity | None = getattr(g, "security_identity", None)
            await gate.audit.record(
                AuditRecord.now(
                    identity=identity.name if identity else "unauthenticated",
                    role=identity.role_name if identity else None,
                    auth=identity.auth if identity else "none",
                    method=request.method,
                    route=requirement.rule,
                    target=request.path,
                    status=response.status_code,
                    request_id=getattr(g, "request_id", None),
                    client=request.remote_addr,
                )
            )
        return response

    async def before_websocket() -> None:
        rule = websocket.url_rule
        requirement = (
            Requirement.of(specs.get(str(rule.endpoint)), rule.rule) if rule is not None else None
        )
        await _check(
            gate,
            requirement,
            "GET",
            websocket.remote_addr,
            websocket.headers.get("Authorization"),
            websocket.headers.get("X-API-Key"),
            websocket.args.get("token"),
        )

    app.before_request(before_request)
    app.after_request(after_request)
    app.before_websocket(before_websocket)


async def _check(
    gate: SecurityGate,
    requirement: Requirement | None,
    method: str,
    client: str | None,
    authorization: str | None,
    api_key: str | None,
    query_token: str | None,
) -> None:
    """Identify, charge the rate limit, then authorize; raise the refusal, if any."""
    if not gate.required:
        g.security_identity = OPEN
        return
    identity: Identity | None = None
    failure: Unauthenticated | None = None
    if requirement is not None and requirement.public:
        identity = Identity(name=client or "unknown", role=Role.PUBLIC, auth="none")
    else:
        try:
            identity = await gate.authenticate(credential_from(authorization, api_key, query_token))
        except Unauthenticated as exc:
            failure = exc
    g.security_identity = identity
    rate_key = identity.rate_key if identity and identity.auth != "none" else f"ip:{client}"
    decision = gate.rate(rate_key)
    g.security_rate = decision
    if decision is not None and not decision.allowed:
        raise RateLimited(
            f"too many requests: the limit is {decision.limit} a minute with bursts of "
            f"{int(gate.limiter.capacity) if gate.limiter else 0}; retry in "
            f"{decision.retry_after_s}s",
            retry_after_s=decision.retry_after_s,
        )
    if failure is not None:
        gate.count_failure(failure)
        raise failure
    if requirement is None or identity is None:
        return  # no route matched: the 404 or 405 follows, for an authenticated caller
    reason = denial(identity.role, requirement, method)
    if reason is not None:
        raise Forbidden(reason, details={"role": identity.role_name, "route": requirement.rule})
