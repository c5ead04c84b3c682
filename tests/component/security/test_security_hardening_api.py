"""Authentication on: malformed tokens, the rate bucket charged before authentication, a
deleted key file, message senders, browser origins and WebSocket frames."""

from __future__ import annotations

import base64
import json
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import trio
from security_servers import DASHBOARD, Secured, StartSecured, copy_echo
from wsclient import open_ws

from caxton.security.roles import Role
from caxton.security.tokens import issue_token

if TYPE_CHECKING:
    from pathlib import Path


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _token(header: object, claims: object) -> str:
    return f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}.{_b64(b's')}"


def _malformed_tokens() -> dict[str, bytes]:
    now = int(time.time())
    claims = {"sub": "x", "role": "admin", "iat": now, "exp": now + 60}
    return {
        "non-ASCII": "é.é.é".encode(),
        "non-ASCII payload": ("eyJhbGciOiJIUzI1NiJ9." + "ü" * 20 + ".c2ln").encode(),
        "bad base64": b"%%%.###.$$$",
        "bad JSON": f"{_b64(b'{not json')}.{_b64(b'{}')}.{_b64(b's')}".encode(),
        "wrong alg": _token({"alg": "HS512", "typ": "JWT"}, claims).encode(),
        "alg none": (_token({"alg": "none"}, claims).rsplit(".", 1)[0] + ".").encode(),
        "array claims": _token({"alg": "HS256"}, [1, 2]).encode(),
    }


async def test_malformed_tokens_are_401_with_the_standard_body(secured: Secured) -> None:
    tokens = _malformed_tokens()
    async with httpx.AsyncClient(base_url=secured.url) as client:
        for kind, token in tokens.items():
            response = await client.get(
                "/api/v1/agents", headers={"Authorization": b"Bearer " + token}
            )
            assert response.status_code == 401, (kind, response.text)
            error = response.json()["error"]
            assert error["code"] == "UNAUTHENTICATED", kind
            assert error["details"]["reason"] in {
                "malformed_token",
                "wrong_algorithm",
                "bad_signature",
            }, kind
            assert error["request_id"]
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="caxton"'
        assert secured.info.metrics_url is not None
        metrics = (await client.get(secured.info.metrics_url)).text
    counted = sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("caxton_api_authentication_failures_total{")
    )
    assert counted == len(tokens)


async def test_failures_are_charged_before_any_credential_is_checked(
    start_secured: StartSecured,
) -> None:
    # 6 a minute: one token every 10 s, so a slow machine cannot refill the bucket mid-test
    secured = await start_secured(
        security__rate_limiting__requests_per_minute=6, security__rate_limiting__burst_size=3
    )
    tokens = list(_malformed_tokens().values())
    async with httpx.AsyncClient(base_url=secured.url) as client:
        statuses = [
            (
                await client.get("/api/v1/agents", headers={"Authorization": b"Bearer " + token})
            ).status_code
            for token in tokens[:4]
        ]
        # every guess is a fresh credential, yet each failure costs this address a token
        assert statuses == [401, 401, 401, 429]
        guessed = await client.get("/api/v1/agents", headers={"X-API-Key": "cxk_guess"})
        assert guessed.status_code == 429
        assert guessed.json()["error"]["code"] == "RATE_LIMITED"
        assert int(guessed.headers["Retry-After"]) >= 1
        assert (await client.get("/health")).status_code == 200
        assert secured.info.metrics_url is not None
        metrics = (await client.get(secured.info.metrics_url)).text
    # refused before authentication: the guesses after the bucket ran dry were never tried
    failures = [
        line for line in metrics.splitlines() if line.startswith("caxton_api_authentication_fail")
    ]
    assert sum(float(line.rsplit(" ", 1)[1]) for line in failures) == 3


async def test_a_deleted_key_file_accepts_no_key(
    secured: Secured, caplog: pytest.LogCaptureFixture
) -> None:
    admin = secured.headers("admin")
    saved = secured.key_file.read_bytes()
    async with httpx.AsyncClient(base_url=secured.url) as client:
        assert (await client.get("/api/v1/agents", headers=admin)).status_code == 200
        with caplog.at_level(logging.ERROR, logger="caxton.security"):
            secured.key_file.unlink()
            with trio.fail_after(10):
                while (await client.get("/api/v1/agents", headers=admin)).status_code != 401:
                    await trio.sleep(0.2)
        assert any("no API key is accepted" in r.getMessage() for r in caplog.records)
        for role in ("readonly", "user", "operator"):
            response = await client.get("/api/v1/agents", headers=secured.headers(role))
            assert response.status_code == 401
        secured.key_file.write_bytes(saved)
        with trio.fail_after(10):
            while (await client.get("/api/v1/agents", headers=admin)).status_code != 200:
                await trio.sleep(0.2)


@pytest.fixture
async def with_echo(start_secured: StartSecured, tmp_path: Path) -> Secured:
    copy_echo(tmp_path / "echo-agents")
    return await start_secured(
        server__agents_dir=str(tmp_path / "echo-agents"),
        security__rate_limiting__requests_per_minute=6,
        security__rate_limiting__burst_size=10,
    )


async def test_the_sender_is_the_callers_identity(with_echo: Secured) -> None:
    user = with_echo.headers("user")
    token = issue_token(
        with_echo.secret, subject="dash", role=Role.USER, now=time.time(), expiry_s=60
    )
    async with httpx.AsyncClient(base_url=with_echo.url) as client:
        posing = await client.post(
            "/api/v1/messages",
            json={"receiver": "echo", "content": "hi", "sender": "echo"},
            headers=user,
        )
        assert posing.status_code == 403
        sent = await client.post(
            "/api/v1/messages", json={"receiver": "echo", "content": "hi"}, headers=user
        )
        assert sent.status_code == 200, sent.text
        cid = sent.json()["conversation_id"]
        again = await client.post(
            "/api/v1/agents/echo/messages",
            json={"content": "again", "conversation_id": cid, "sender": "someone-else"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert again.status_code == 200, again.text
        shown = (await client.get(f"/api/v1/conversations/{cid}", headers=user)).json()
    assert [m["sender"] for m in shown["messages"]] == [
        "client:user-key",
        "echo",
        "client:dash",
        "echo",
    ]


async def test_foreign_origins_are_refused_and_any_host_is_served(secured: Secured) -> None:
    entity = {"name": "n", "entity_type": "t", "observations": ["o"]}
    user = secured.headers("user")
    async with httpx.AsyncClient(base_url=secured.url) as client:
        evil = await client.post(
            "/api/v1/memory/entities",
            json=entity,
            headers={**user, "Origin": "https://evil.example"},
        )
        assert evil.status_code == 403
        assert evil.json()["error"]["code"] == "ORIGIN_NOT_ALLOWED"
        allowed = await client.post(
            "/api/v1/memory/entities", json=entity, headers={**user, "Origin": DASHBOARD}
        )
        assert allowed.status_code == 201
        # with authentication on, a credential proves the caller: any Host is served
        named = await client.get("/api/v1/agents", headers={**user, "Host": "caxton.example.com"})
        assert named.status_code == 200


async def _answer(ws: Any) -> dict[str, Any]:
    frame: dict[str, Any] = json.loads(await ws.get_message())
    while frame["type"] == "chunk":
        frame = json.loads(await ws.get_message())
    return frame


async def test_every_websocket_frame_takes_a_token(
    start_secured: StartSecured, tmp_path: Path
) -> None:
    copy_echo(tmp_path / "echo-agents")
    secured = await start_secured(
        server__agents_dir=str(tmp_path / "echo-agents"),
        security__rate_limiting__requests_per_minute=6,
        security__rate_limiting__burst_size=3,
    )
    url = secured.url.replace("http://", "ws://") + "/ws/agents/echo"
    answers = []
    with trio.fail_after(30):
        async with open_ws(url, secured.headers("user")) as ws:  # handshake: one token
            for _ in range(4):
                await ws.send_message(json.dumps({"content": "hi"}))
                answers.append(await _answer(ws))
    assert [a["type"] for a in answers] == ["done", "done", "error", "error"]
    assert answers[2]["error"]["code"] == "RATE_LIMITED"
    assert answers[2]["error"]["details"]["retry_after_seconds"] >= 1
