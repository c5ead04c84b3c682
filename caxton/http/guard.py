"""The security gate (:mod:`caxton.security.gate`) as Quart hooks, run for every request after
the request id is set.

Order for an HTTP request: exempt routes (``/health``, ``/ready``, ``/api/v1/health``) pass;
with authentication off a foreign ``Host`` is 421 (:mod:`caxton.security.edge`); a CORS
preflight is answered (no credentials needed); an unsafe method or a WebSocket handshake
from a foreign ``Origin`` is 403; then the request's token bucket is charged BEFORE any
credential is checked (the bucket of the credential it presents, or of its client address;
see :mod:`caxton.security.gate`), every failed authentication is counted (metric, and a token
of the client address's bucket), and only then does a bad credential become 401 and a
too-small role 403. Routes declared ``Role.PUBLIC`` need no credential. WebSocket handlers
charge the same bucket for every frame they receive (:func:`charge_frame`).
Refusals are raised as :class:`~caxton.errors.CaxtonError`, so they take the normal error path:
the JSON envelope, and the ASGI wrapper that drains the request body first (DESIGN §11).

After the response: ``X-RateLimit-*`` headers, ``WWW-Authenticate`` on 401, CORS headers, and
one audit line for every call to a mutating route, refused calls included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, cast

from quart import Response, g, request, websocket

from caxton.http.state import ROUTES_KEY, server_state
from caxton.security.audit import AuditRecord
from caxton.security.edge import SAFE_METHODS, HostPolicy, origin_refusal
from caxton.security.errors import (
    Forbidden,
    HostNotAllowed,
    OriginNotAllowed,
    Unauthenticated,
)
from caxton.security.gate import (
    OPEN,
    Credential,
    Identity,
    SecurityGate,
    credential_from,
    load_security,
)
from caxton.security.ratelimit import client_bucket
from caxton.security.roles import Requirement, Role, denial

if TYPE_CHECKING:
    from collections.abc import Callable

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
    specs = {spec.endpoint: spec for spec in cast("list[RouteSpec]", app.config[ROUTES_KEY])}
    hosts = HostPolicy.from_config(state.config)

    def check_edge(host: str | None, origin: str | None, scheme: str, unsafe: bool) -> None:
        if not gate.required and not hosts.allows(host):
            raise HostNotAllowed(
                f"this server does not answer to Host {host!r} while authentication is off "
                "(a web page may be pointing its domain here); use http://127.0.0.1, or add "
                "the name to server.allowed_hosts",
                details={"host": host},
            )
        if unsafe:
            refusal = origin_refusal(origin, host, gate.cors, scheme=scheme)
            if refusal is not None:
                raise OriginNotAllowed(refusal, details={"origin": origin})

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
        if rule is not None and rule.rule in EXEMPT_RULES:
            return None
        check_edge(
            request.headers.get("Host"),
            origin,
            request.scheme,
            request.method not in SAFE_METHODS,
        )
        if request.method == "OPTIONS" and origin and wanted and gate.cors.enabled:
            answer = gate.cors.preflight(
                origin, wanted, request.headers.get("Access-Control-Request-Headers")
            )
            if isinstance(answer, str):
                raise Forbidden(f"CORS preflight refused: {answer}")
            g.security_preflight = True
            return Response("", status=204, headers=answer)
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
        check_edge(
            websocket.headers.get("Host"),
            websocket.headers.get("Origin"),
            "https" if websocket.scheme in ("wss", "https") else "http",
            True,
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
    """Charge the rate limit, then identify, then authorize; raise the refusal, if any."""
    address = client_bucket(client)
    g.security_client = client
    if not gate.required:
        g.security_identity = OPEN
        g.security_rate_key = address
        _charge(gate, address, client)
        return
    public = requirement is not None and requirement.public
    credential: Credential | None = None
    try:
        credential = None if public else credential_from(authorization, api_key, query_token)
    except Unauthenticated as exc:
        _charge(gate, address, client)
        _fail(gate, exc)
    rate_key = address if credential is None else credential.rate_key
    g.security_rate_key = rate_key
    if credential is not None and gate.address_spent(client):
        # failures from this address spent its bucket: no credential is tried meanwhile
        _charge(gate, address, client)
    _charge(gate, rate_key, client)
    if public:
        g.security_identity = Identity(name=client or "unknown", role=Role.PUBLIC, auth="none")
        return
    try:
        identity = await gate.authenticate(credential)
    except Unauthenticated as exc:
        if rate_key != address:  # failures cost the address too
            g.security_rate = gate.rate(address, client) or g.get("security_rate")
        _fail(gate, exc)
    g.security_identity = identity
    if requirement is None:
        return  # no route matched: the 404 or 405 follows, for an authenticated caller
    reason = denial(identity.role, requirement, method)
    if reason is not None:
        raise Forbidden(reason, details={"role": identity.role_name, "route": requirement.rule})


def _charge(gate: SecurityGate, key: str, client: str | None) -> None:
    decision = gate.rate(key, client)
    if decision is not None:
        g.security_rate = decision
        if not decision.allowed:
            raise gate.refused(decision)


def _fail(gate: SecurityGate, error: Unauthenticated) -> NoReturn:
    gate.count_failure(error)
    raise error


def charge_frame() -> None:
    """Take a token for one WebSocket frame from the bucket its handshake was charged to.

    Raises:
        RateLimited: the bucket is empty; the handler answers with an error frame.
    """
    gate = server_state().security
    key: str | None = getattr(g, "security_rate_key", None)
    if gate is None or key is None:
        return
    decision = gate.rate(key, getattr(g, "security_client", None))
    if decision is not None and not decision.allowed:
        raise gate.refused(decision)


#: The sender of messages from callers while authentication is off.
CLIENT_SENDER = "client"


def client_sender(is_agent: Callable[[str], bool]) -> str:
    """The sender stamped on a message a caller sends (issue #13: callers could pose as agents).

    With authentication off it is ``client``; with it on, ``client:<key name or token
    subject>``. Agent names cannot hold ``:``, so the stamp can never be an agent's name; if an
    agent is named ``client``, anonymous callers become ``client:anonymous``.
    """
    identity: Identity | None = getattr(g, "security_identity", None)
    if identity is not None and identity.auth != "none":
        return f"{CLIENT_SENDER}:{identity.name}"
    return f"{CLIENT_SENDER}:anonymous" if is_agent(CLIENT_SENDER) else CLIENT_SENDER


def check_claimed_sender(claimed: object, stamped: str, is_agent: Callable[[str], bool]) -> None:
    """Refuse a ``sender`` a caller wrote that names an agent (403).

    Any other value is replaced by ``stamped``: the sender is who the caller is.
    """
    if isinstance(claimed, str) and claimed != stamped and is_agent(claimed):
        raise Forbidden(
            f"a client cannot send as the agent {claimed!r}: the sender of a message from the "
            f'API is set from your credential ({stamped!r}); leave "sender" out',
            details={"sender": claimed, "stamped": stamped},
        )
