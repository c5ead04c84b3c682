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

from typing import TYPE_CHECKING, Any, NoReturn, cast

from quart import Response, g

from caxton.http.state import ROUTES_KEY, current_services
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
)
from caxton.security.ratelimit import client_bucket
from caxton.security.roles import Requirement, Role, denial

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

    from quart import Request, Websocket
    from quart_trio import QuartTrio
    from werkzeug.routing import Rule

    from caxton.http.routes import RouteSpec
    from caxton.services import Services

#: Probes that must answer whatever the credentials or the rate (DESIGN §9).
EXEMPT_RULES = frozenset({"/health", "/ready", "/api/v1/health"})

#: The request headers the edge reads, lowercased (see :func:`edge_headers`).
EDGE_HEADERS = frozenset(
    {
        "host",
        "origin",
        "access-control-request-method",
        "access-control-request-headers",
        "authorization",
        "x-api-key",
        "x-request-id",
        "accept",
    }
)

#: ``Host`` values seen, and whether they are served; bounded (a value is cheap to recompute).
_HOSTS_REMEMBERED = 256


def edge_headers(headers: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The :data:`EDGE_HEADERS` a request carries, by lowercased name (the first of repeats).

    One pass over the headers: looking each name up in werkzeug's ``Headers`` scans them all
    and raises internally when the header is absent, which most of them are.
    """
    found: dict[str, str] = {}
    for name, value in headers:
        key = name.lower()
        if key in EDGE_HEADERS and key not in found:
            found[key] = value
    return found


class Guard:
    """The security gate's per-request checks, called by the app's request hooks.

    ``seen`` is the request's ``g`` namespace (its ``__dict__``): the gate leaves there
    ``security_requirement``, ``security_identity``, ``security_rate``, ``security_rate_key``,
    ``security_client`` and ``security_preflight`` for the after-request step, the WebSocket
    frames and the message routes (:func:`client_sender`).
    """

    def __init__(self, gate: SecurityGate, specs: dict[str, RouteSpec], hosts: HostPolicy) -> None:
        self.gate = gate
        self._specs = specs
        self._hosts = hosts
        self._host_allowed: dict[str | None, bool] = {}
        self._requirements: dict[tuple[str, str, bool], Requirement] = {}

    def requirement(self, rule: Rule | None, options: bool) -> Requirement | None:
        """What the matched ``rule`` asks (its declaration is fixed: worked out once)."""
        if rule is None:
            return None
        key = (str(rule.endpoint), rule.rule, options)
        found = self._requirements.get(key)
        if found is None:
            found = Requirement.of(self._specs.get(key[0]), rule.rule)
            if options:
                # OPTIONS only lists a route's methods: any known caller may ask, nothing changes
                found = found.for_options()
            self._requirements[key] = found
        return found

    def host_allowed(self, host: str | None) -> bool:
        allowed = self._host_allowed.get(host)
        if allowed is None:
            allowed = self._hosts.allows(host)
            if len(self._host_allowed) >= _HOSTS_REMEMBERED:
                self._host_allowed.clear()
            self._host_allowed[host] = allowed
        return allowed

    def check_edge(self, host: str | None, origin: str | None, scheme: str, unsafe: bool) -> None:
        gate = self.gate
        if not gate.required and not self.host_allowed(host):
            raise HostNotAllowed(
                f"this server does not answer to Host {host!r} while authentication is off "
                "(a web page may be pointing its domain here); use http://127.0.0.1, or add "
                "the name to server.allowed_hosts",
                details={"host": host},
            )
        if unsafe and origin is not None:
            refusal = origin_refusal(origin, host, gate.cors, scheme=scheme)
            if refusal is not None:
                raise OriginNotAllowed(refusal, details={"origin": origin})

    async def before_request(
        self, req: Request, seen: dict[str, Any], headers: dict[str, str]
    ) -> Response | None:
        """Check an HTTP request (module docstring); a CORS preflight is answered here."""
        method = req.method
        rule = req.url_rule
        requirement = self.requirement(rule, method == "OPTIONS")
        seen["security_requirement"] = requirement
        seen["security_preflight"] = False
        seen["security_rate"] = None
        seen["security_identity"] = None
        origin = headers.get("origin")
        seen["security_origin"] = origin
        if rule is not None and rule.rule in EXEMPT_RULES:
            return None
        self.check_edge(headers.get("host"), origin, req.scheme, method not in SAFE_METHODS)
        gate = self.gate
        if method == "OPTIONS" and origin and gate.cors.enabled:
            wanted = headers.get("access-control-request-method")
            if wanted:
                answer = gate.cors.preflight(
                    origin, wanted, headers.get("access-control-request-headers")
                )
                if isinstance(answer, str):
                    raise Forbidden(f"CORS preflight refused: {answer}")
                seen["security_preflight"] = True
                return Response("", status=204, headers=answer)
        await _check(
            gate,
            seen,
            requirement,
            method,
            req.remote_addr,
            headers.get("authorization"),
            headers.get("x-api-key"),
            None,
        )
        return None

    async def after_request(self, req: Request, seen: dict[str, Any], response: Response) -> None:
        """Rate and CORS headers on ``response``, and the audit line of a mutating route."""
        decision = seen.get("security_rate")
        if decision is not None:
            response.headers.update(decision.headers())
        if response.status_code == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="caxton"'
        gate = self.gate
        if gate.cors.enabled and not seen.get("security_preflight"):
            # (without CORS enabled there are none to add)
            origin = (
                seen["security_origin"] if "security_origin" in seen else req.headers.get("Origin")
            )
            for name, value in gate.cors.response_headers(origin).items():
                response.headers[name] = value
        requirement: Requirement | None = seen.get("security_requirement")
        if gate.audit is not None and requirement is not None and requirement.mutating:
            identity: Identity | None = seen.get("security_identity")
            await gate.audit.record(
                AuditRecord.now(
                    identity=identity.name if identity else "unauthenticated",
                    role=identity.role_name if identity else None,
                    auth=identity.auth if identity else "none",
                    method=req.method,
                    route=requirement.rule,
                    target=req.path,
                    status=response.status_code,
                    request_id=seen.get("request_id"),
                    client=req.remote_addr,
                )
            )

    async def before_websocket(self, ws: Websocket, seen: dict[str, Any]) -> None:
        """Check a WebSocket handshake: Host, Origin (always), rate, credential, role."""
        headers = edge_headers(ws.headers.items())
        requirement = self.requirement(ws.url_rule, False)
        self.check_edge(
            headers.get("host"),
            headers.get("origin"),
            "https" if ws.scheme in ("wss", "https") else "http",
            True,
        )
        await _check(
            self.gate,
            seen,
            requirement,
            "GET",
            ws.remote_addr,
            headers.get("authorization"),
            headers.get("x-api-key"),
            ws.args.get("token"),
        )


def install(app: QuartTrio, state: Services) -> Guard:
    """The security checks for ``app`` (after every route is registered); the app's request
    hooks call them."""
    specs = {spec.endpoint: spec for spec in cast("list[RouteSpec]", app.config[ROUTES_KEY])}
    return Guard(state.security, specs, HostPolicy.from_config(state.config))


async def _check(
    gate: SecurityGate,
    seen: dict[str, Any],
    requirement: Requirement | None,
    method: str,
    client: str | None,
    authorization: str | None,
    api_key: str | None,
    query_token: str | None,
) -> None:
    """Charge the rate limit, then identify, then authorize; raise the refusal, if any."""
    address = client_bucket(client)
    seen["security_client"] = client
    if not gate.required:
        seen["security_identity"] = OPEN
        seen["security_rate_key"] = address
        _charge(gate, seen, address, client)
        return
    public = requirement is not None and requirement.public
    credential: Credential | None = None
    try:
        credential = None if public else credential_from(authorization, api_key, query_token)
    except Unauthenticated as exc:
        _charge(gate, seen, address, client)
        _fail(gate, exc)
    rate_key = address if credential is None else credential.rate_key
    seen["security_rate_key"] = rate_key
    if credential is not None and gate.address_spent(client):
        # failures from this address spent its bucket: no credential is tried meanwhile
        _charge(gate, seen, address, client)
    _charge(gate, seen, rate_key, client)
    if public:
        seen["security_identity"] = Identity(
            name=client or "unknown", role=Role.PUBLIC, auth="none"
        )
        return
    try:
        identity = await gate.authenticate(credential)
    except Unauthenticated as exc:
        if rate_key != address:  # failures cost the address too
            seen["security_rate"] = gate.rate(address, client) or seen.get("security_rate")
        _fail(gate, exc)
    seen["security_identity"] = identity
    if requirement is None:
        return  # no route matched: the 404 or 405 follows, for an authenticated caller
    reason = denial(identity.role, requirement, method)
    if reason is not None:
        raise Forbidden(reason, details={"role": identity.role_name, "route": requirement.rule})


def _charge(gate: SecurityGate, seen: dict[str, Any], key: str, client: str | None) -> None:
    decision = gate.rate(key, client)
    if decision is not None:
        seen["security_rate"] = decision
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
    gate = current_services().security
    key: str | None = g.get("security_rate_key")
    if gate is None or key is None:
        return
    decision = gate.rate(key, g.get("security_client"))
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
    identity: Identity | None = g.get("security_identity")
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
