"""Authentication edge cases, CORS, rate limits, the audit log and the open probes, over
real loopback sockets against a server in this process."""

from __future__ import annotations

import base64
import contextlib
import json
import time

import attrs
import httpx
import trio
from security_servers import DASHBOARD, Secured, StartSecured, ws_handshake
from servers import read_response_head

from caxton.security.keys import (
    KeyEntry,
    KeyRing,
    generate_key,
    hash_key,
    read_key_file,
    write_key_file,
)
from caxton.security.roles import Role
from caxton.security.tokens import issue_token


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def _error(client: httpx.AsyncClient, headers: dict[str, str]) -> tuple[int, str, str]:
    response = await client.get("/api/v1/agents", headers=headers)
    error = response.json().get("error", {}) if response.status_code >= 400 else {}
    return (
        response.status_code,
        error.get("details", {}).get("reason", ""),
        error.get("message", ""),
    )


async def test_bad_credentials_are_401_with_a_reason(secured: Secured) -> None:
    now = time.time()
    expired = issue_token(secured.secret, subject="x", role=Role.ADMIN, now=now - 7200, expiry_s=60)
    foreign = issue_token(b"f" * 32, subject="x", role=Role.ADMIN, now=now, expiry_s=60)
    claims = {"sub": "x", "role": "admin", "iat": int(now), "exp": int(now) + 60}
    header = _b64(json.dumps({"alg": "none"}).encode())
    alg_none = f"{header}.{_b64(json.dumps(claims).encode())}."
    cases = {
        "missing": {},
        "unknown_key": {"X-API-Key": generate_key()},
        "revoked_key": {"X-API-Key": secured.keys["revoked"]},
        "empty_credential": {"X-API-Key": ""},
        "malformed": {"Authorization": f"Basic {_b64(b'admin:admin')}"},
        "expired_token": {"Authorization": f"Bearer {expired}"},
        "bad_signature": {"Authorization": f"Bearer {foreign}"},
        "wrong_algorithm": {"Authorization": f"Bearer {alg_none}"},
        "malformed_token": {"Authorization": "Bearer a.b.c"},
    }
    async with httpx.AsyncClient(base_url=secured.url) as client:
        for reason, headers in cases.items():
            status, got, message = await _error(client, headers)
            assert (status, got) == (401, reason), (reason, message)
        assert secured.info.metrics_url is not None
        metrics = (await client.get(secured.info.metrics_url)).text
        for reason in cases:
            assert f'caxton_api_authentication_failures_total{{reason="{reason}"}} 1.0' in metrics
        both = {"X-API-Key": secured.keys["admin"], "Authorization": "Bearer x"}
        assert (await _error(client, both))[:2] == (401, "malformed")
        response = await client.get("/api/v1/agents")
        assert response.headers["WWW-Authenticate"] == 'Bearer realm="caxton"'
        assert response.json()["error"]["code"] == "UNAUTHENTICATED"
        assert "X-API-Key" in response.json()["error"]["message"]
        huge = await client.get("/api/v1/agents", headers={"X-API-Key": "k" * 9000})
        assert huge.status_code == 401
        assert (await client.get("/health")).status_code == 200


async def test_probes_and_metrics_need_no_credentials_and_are_never_limited(
    start_secured: StartSecured,
) -> None:
    secured = await start_secured(
        security__rate_limiting__requests_per_minute=1, security__rate_limiting__burst_size=1
    )
    async with httpx.AsyncClient(base_url=secured.url) as client:
        assert (await client.get("/api/v1/agents")).status_code == 401
        assert (await client.get("/api/v1/agents")).status_code == 429  # this address is spent
        for _ in range(5):
            assert (await client.get("/health")).status_code == 200
            assert (await client.get("/ready")).status_code == 200
            report = await client.get("/api/v1/health")
            assert report.status_code == 200
            assert "X-RateLimit-Limit" not in report.headers
    assert report.json()["security"] == {
        "authentication": True,
        "tls": False,
        "rate_limiting": True,
        "cors": True,
        "audit": True,
        "warnings": [],
    }
    assert secured.info.metrics_url is not None
    async with httpx.AsyncClient() as client:
        assert (await client.get(secured.info.metrics_url)).status_code == 200


async def test_rate_limit_per_key_with_headers(start_secured: StartSecured) -> None:
    # 6 a minute: one token every 10 s, so a slow machine cannot refill the bucket mid-test
    secured = await start_secured(
        security__rate_limiting__requests_per_minute=6, security__rate_limiting__burst_size=3
    )
    async with httpx.AsyncClient(base_url=secured.url) as client:
        user = secured.headers("user")
        answers = [await client.get("/api/v1/agents", headers=user) for _ in range(4)]
        assert [a.status_code for a in answers] == [200, 200, 200, 429]
        assert [a.headers["X-RateLimit-Remaining"] for a in answers] == ["2", "1", "0", "0"]
        assert {a.headers["X-RateLimit-Limit"] for a in answers} == {"6"}
        assert "Retry-After" not in answers[0].headers
        refused = answers[3]
        assert 9 <= int(refused.headers["Retry-After"]) <= 10
        assert 29 <= int(refused.headers["X-RateLimit-Reset"]) <= 30
        error = refused.json()["error"]
        assert error["code"] == "RATE_LIMITED"
        assert error["details"]["retry_after_seconds"] == int(refused.headers["Retry-After"])
        # another key has its own bucket, and so do callers without a credential
        assert (await client.get("/api/v1/agents", headers=secured.headers("admin"))).is_success
        anonymous = await client.get("/api/v1/agents")
        assert anonymous.status_code == 401
        assert anonymous.headers["X-RateLimit-Remaining"] == "2"


async def test_cors_preflight_and_response_headers(secured: Secured) -> None:
    async with httpx.AsyncClient(base_url=secured.url) as client:
        preflight = await client.options(
            "/api/v1/agents",
            headers={
                "Origin": DASHBOARD,
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type, x-api-key",
            },
        )
        assert preflight.status_code == 204  # no credential needed for a preflight
        assert preflight.headers["Access-Control-Allow-Origin"] == DASHBOARD
        assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
        assert "X-API-Key" in preflight.headers["Access-Control-Allow-Headers"]
        assert preflight.headers["Access-Control-Max-Age"] == "600"
        evil = await client.options(
            "/api/v1/agents",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
        )
        assert evil.status_code == 403
        assert "Access-Control-Allow-Origin" not in evil.headers
        actual = await client.get(
            "/api/v1/agents", headers={"Origin": DASHBOARD, **secured.headers("readonly")}
        )
        assert actual.status_code == 200
        assert actual.headers["Access-Control-Allow-Origin"] == DASHBOARD
        assert "X-Request-ID" in actual.headers["Access-Control-Expose-Headers"]
        denied = await client.get("/api/v1/agents", headers={"Origin": DASHBOARD})
        assert denied.status_code == 401  # browsers can read the refusal too
        assert denied.headers["Access-Control-Allow-Origin"] == DASHBOARD
        other = await client.get(
            "/api/v1/agents", headers={"Origin": "https://evil.example", **secured.headers("user")}
        )
        assert "Access-Control-Allow-Origin" not in other.headers


async def test_audit_log_records_mutating_calls_only(secured: Secured) -> None:
    entity = {"name": "audited", "entity_type": "note", "observations": ["x"]}
    async with httpx.AsyncClient(base_url=secured.url) as client:
        created = await client.post(
            "/api/v1/memory/entities",
            json=entity,
            headers={**secured.headers("user"), "X-Request-ID": "audit-1"},
        )
        assert created.status_code == 201, created.text
        refused = await client.delete(
            "/api/v1/memory/entities/audited", headers=secured.headers("readonly")
        )
        assert refused.status_code == 403
        anonymous = await client.post("/api/v1/agents", json={})
        assert anonymous.status_code == 401
        assert (await client.get("/api/v1/agents", headers=secured.headers("user"))).is_success
        options = await client.options("/api/v1/agents", headers=secured.headers("readonly"))
        assert options.status_code == 200
        assert "POST" in options.headers["Allow"]
    lines = [json.loads(line) for line in (secured.data_dir / "audit.log").read_text().splitlines()]
    assert [(r["method"], r["route"], r["outcome"]) for r in lines] == [
        ("POST", "/api/v1/memory/entities", "ok"),
        ("DELETE", "/api/v1/memory/entities/<name>", "denied"),
        ("POST", "/api/v1/agents", "denied"),
    ]
    first = lines[0]
    assert (first["identity"], first["role"], first["auth"]) == ("user-key", "user", "api_key")
    assert (first["status"], first["request_id"], first["client"]) == (201, "audit-1", "127.0.0.1")
    assert lines[1]["target"] == "/api/v1/memory/entities/audited"
    assert lines[1]["identity"] == "readonly-key"
    assert (lines[2]["identity"], lines[2]["role"], lines[2]["status"]) == (
        "unauthenticated",
        None,
        401,
    )


async def test_early_401_keeps_the_connection_usable(secured: Secured) -> None:
    """DESIGN §11: a refusal decided before the body arrives must not hang the next request."""
    host, port = secured.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            await stream.send_all(
                b"POST /api/v1/agents HTTP/1.1\r\nHost: t\r\n"
                b"Content-Type: application/json\r\nContent-Length: 10\r\n\r\n"
            )
            await trio.sleep(0.3)  # the 401 is decided before the body arrives
            await stream.send_all(b"0123456789")
            first = await read_response_head(stream)
            assert first.startswith(b"HTTP/1.1 401")
            await stream.send_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n")
            with trio.fail_after(3):
                second = await read_response_head(stream)
            assert second.startswith(b"HTTP/1.1 200")


async def test_huge_headers_are_refused_and_the_server_lives_on(secured: Secured) -> None:
    host, port = secured.url.removeprefix("http://").rsplit(":", 1)
    with trio.fail_after(10):
        stream = await trio.open_tcp_stream(host, int(port))
        async with stream:
            # the server may close on us mid-send: also a refusal
            with contextlib.suppress(trio.BrokenResourceError):
                await stream.send_all(
                    b"GET /api/v1/agents HTTP/1.1\r\nHost: t\r\nX-API-Key: "
                    + b"k" * 200_000
                    + b"\r\n\r\n"
                )
            answer = b""
            try:
                while chunk := await stream.receive_some(65536):
                    answer += chunk
            except trio.BrokenResourceError:
                pass
    assert not answer.startswith(b"HTTP/1.1 2")
    async with httpx.AsyncClient(base_url=secured.url) as client:
        assert (await client.get("/health")).status_code == 200


async def test_websockets_authenticate_at_the_handshake(secured: Secured) -> None:
    with trio.fail_after(20):
        assert await ws_handshake(secured.url, "/ws/events", {}) == 401
        assert await ws_handshake(secured.url, "/ws/events", secured.headers("readonly")) == 101
        token = issue_token(
            secured.secret, subject="b", role=Role.READONLY, now=time.time(), expiry_s=60
        )
        assert await ws_handshake(secured.url, f"/ws/events?token={token}", {}) == 101
        key = secured.keys["user"]
        assert await ws_handshake(secured.url, f"/ws/events?token={key}", {}) == 101
        assert await ws_handshake(secured.url, "/ws/events?token=nope", {}) == 401
        readonly = secured.headers("readonly")
        assert await ws_handshake(secured.url, "/ws/agents/echo", readonly) == 403


async def test_key_file_changes_apply_without_a_restart(secured: Secured) -> None:
    fresh = generate_key()

    async def status(client: httpx.AsyncClient) -> int:
        return (await client.get("/api/v1/agents", headers={"X-API-Key": fresh})).status_code

    async with httpx.AsyncClient(base_url=secured.url) as client:
        assert await status(client) == 401
        ring = read_key_file(secured.key_file)
        added = KeyEntry(name="late", role=Role.READONLY, hash=hash_key(fresh))
        write_key_file(secured.key_file, KeyRing((*ring.entries, added)))
        with trio.fail_after(5):
            while await status(client) != 200:
                await trio.sleep(0.2)
        write_key_file(
            secured.key_file,
            KeyRing((*ring.entries, attrs.evolve(added, revoked=True))),
        )
        with trio.fail_after(5):
            while await status(client) != 401:
                await trio.sleep(0.2)
        refused = await client.get("/api/v1/agents", headers={"X-API-Key": fresh})
        assert "revoked" in refused.json()["error"]["message"]
        secured.key_file.write_text("keys:\n  - name: broken\n")
        await trio.sleep(1.1)
        # a broken file is logged; the keys loaded before stay in force
        admin = secured.headers("admin")
        assert (await client.get("/api/v1/agents", headers=admin)).status_code == 200
