"""The server's secrets stay the server's: keys go only where they were configured for,
API-deployed agents read only allow-listed variables, and no view shows a secret (issue #13)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import httpx
import trio
from config_agent_servers import openai_url

from caxton.security.keys import KeyEntry, KeyRing, generate_key, hash_key, write_key_file
from caxton.security.roles import Role

if TYPE_CHECKING:
    from pathlib import Path

    import pytest

SERVER_KEY = "sk-server-9c8b7a6d5e4f3a2b"
PRIVATE_VALUE = "private-env-value-4b3a2c1d"
URL_PASSWORD = "hunter2-url-password"


def llm_agent(name: str, llm: str) -> str:
    return (
        f'name = "{name}"\nversion = "1.0.0"\nsystem_prompt = "terse"\n'
        f'[llm]\nprovider = "openai"\nmodel = "scripted-1"\nmax_retries = 0\n'
        f'timeout = "5s"\n{llm}'
    )


def auth_settings(base: Path) -> tuple[dict[str, object], dict[str, str]]:
    keys = {"readonly": generate_key(), "user": generate_key(), "operator": generate_key()}
    roles = {"readonly": Role.READONLY, "user": Role.USER, "operator": Role.OPERATOR}
    write_key_file(
        base / "keys.yaml",
        KeyRing(
            tuple(
                KeyEntry(name=name, role=roles[name], hash=hash_key(key))
                for name, key in keys.items()
            )
        ),
    )
    (base / "jwt").write_bytes(b"j" * 64)
    (base / "jwt").chmod(0o600)
    settings: dict[str, object] = {
        "security__authentication__enabled": True,
        "security__authentication__jwt_secret_file": str(base / "jwt"),
        "security__api_keys__required": True,
        "security__api_keys__key_file": str(base / "keys.yaml"),
        "security__rate_limiting__requests_per_minute": 100_000,
        "security__rate_limiting__burst_size": 100_000,
    }
    return settings, keys


async def test_keys_and_environment_stay_with_the_server(
    start_llm: Any,
    start_caxton: Any,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    home = await start_llm({"api_key": SERVER_KEY})
    foreign = await start_llm({"api_key": SERVER_KEY})
    monkeypatch.setenv("CAXTON_TEST_PRIVATE", PRIVATE_VALUE)
    monkeypatch.setenv("CAXTON_TEST_SHARED_URL", openai_url(home))
    settings, keys = auth_settings(tmp_path)
    info = await start_caxton(
        {
            # operator-written files: the server's key where it was meant to go, full ${VAR}
            "inherits.toml": llm_agent("inherits", ""),
            "operator-env.toml": llm_agent(
                "operator-env", 'base_url = "${CAXTON_TEST_SHARED_URL}"\n'
            ),
        },
        llm__provider="openai",
        llm__model="scripted-1",
        llm__base_url=openai_url(home),
        llm__api_key=SERVER_KEY,
        security__agent_env_allowlist=["CAXTON_TEST_SHARED_URL"],
        **settings,
    )
    events: list[str] = []

    async def record_events() -> None:
        async with info.services.events.subscribe() as stream:
            async for event in stream:
                events.append(json.dumps(event.data, default=str))

    def as_role(role: str) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=info.api_urls[0], headers={"X-API-Key": keys[role]}, timeout=20
        )

    deployed = {
        # only base_url set: the server's key must not follow it to another host
        "foreign": llm_agent("foreign", f'base_url = "{openai_url(foreign)}"\n'),
        "with-credentials": llm_agent(
            "with-credentials",
            f'base_url = "http://alice:{URL_PASSWORD}@127.0.0.1:9/v1"\n',
        ),
        # the server's whole environment is not the API caller's to read ...
        "env-thief": llm_agent(
            "env-thief", 'base_url = "http://127.0.0.1:9/${CAXTON_TEST_PRIVATE}"\n'
        ),
        # ... only what the admin allow-listed
        "allowed-env": llm_agent("allowed-env", 'base_url = "${CAXTON_TEST_SHARED_URL}"\n'),
    }
    replies: list[str] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(record_events)
        with trio.fail_after(30):
            async with as_role("operator") as operator, as_role("user") as user:
                for content in deployed.values():
                    response = await operator.post("/api/v1/agents", json={"content": content})
                    assert response.status_code == 201, response.text
                for name in ("inherits", "operator-env", "allowed-env", "foreign"):
                    response = await user.post(
                        f"/api/v1/agents/{name}/messages", json={"content": "hello"}
                    )
                    replies.append(response.text)
                    assert (response.status_code == 200) == (name != "foreign"), response.text
                views = []
                async with as_role("readonly") as readonly:
                    for path in ("/api/v1/agents", "/api/v1/health", "/api/v1/agents/performance"):
                        views.append((await readonly.get(path)).text)
                    for name in (*deployed, "inherits", "operator-env"):
                        for suffix in ("", "/versions", "/logs"):
                            response = await readonly.get(f"/api/v1/agents/{name}{suffix}")
                            assert response.status_code == 200, response.text
                            views.append(response.text)
        nursery.cancel_scope.cancel()

    # the server's key went to the server's endpoint only
    assert home.requests, "the agents that inherit the key did call"
    assert all(r.authorized for r in home.requests)
    assert foreign.requests, "the foreign agent did call its own URL"
    assert not any(r.authorized for r in foreign.requests)
    env_thief = json.loads(views[3 + 3 * list(deployed).index("env-thief")])
    assert "security.agent_env_allowlist" in env_thief["llm"]["error"]
    credentials = json.loads(views[3 + 3 * list(deployed).index("with-credentials")])
    assert credentials["llm"]["url"] == "http://***@127.0.0.1:9/v1/chat/completions"
    seen = "\n".join([*views, *replies, *events])
    for secret in (SERVER_KEY, PRIVATE_VALUE, URL_PASSWORD):
        assert secret not in seen
