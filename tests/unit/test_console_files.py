"""The console's pure parts (issue #20): its files, their headers, and the JSON its routes
build (definitions with secrets hidden, the metrics summary, what a role may do)."""

from __future__ import annotations

import re
from pathlib import PurePosixPath

import attrs
import pytest

from caxton.agents.spec import parse_agent_spec
from caxton.http.console.api import REDACTED, is_secret_key, permissions, plain, summarize
from caxton.http.console.assets import (
    MEDIA_TYPES,
    load_assets,
    lookup,
    release,
    released,
    security_headers,
)
from caxton.metrics import Metrics
from caxton.security.roles import Role

ASSETS = load_assets()
IMPORT = re.compile(r"""(?:import|from)\s+(?:[^'"]*?\s+from\s+)?["'](\.{1,2}/[^"']+)["']""")
SOURCES = re.compile(r"""(?:src|href)="(/ui/[^"]+)\"""")


def test_the_page_and_every_script_it_loads_ship_in_the_package() -> None:
    page = lookup(ASSETS, "")
    assert page is not None
    assert page.name == "index.html"
    assert page.media_type.startswith("text/html")
    html = page.body.decode()
    sources = SOURCES.findall(html)
    prefix = f"/ui/v/{release(ASSETS)}/"
    assert len(sources) >= 3
    for source in sources:
        assert source.startswith(prefix), source
        assert source.removeprefix(prefix) in ASSETS, source
    missing = []
    for name, asset in ASSETS.items():
        if not name.endswith(".js"):
            continue
        for target in IMPORT.findall(asset.body.decode()):
            resolved = PurePosixPath(name).parent / target
            parts: list[str] = []
            for part in resolved.parts:
                if part == "..":
                    parts.pop()
                elif part != ".":
                    parts.append(part)
            if "/".join(parts) not in ASSETS:
                missing.append(f"{name} imports {target}")
    assert not missing
    assert {"js/main.js", "js/pages/agents.js", "console.css"} <= set(ASSETS)


def test_no_asset_names_another_origin_or_inline_code() -> None:
    for name, asset in ASSETS.items():
        text = asset.body.decode(errors="replace")
        urls = re.findall(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^\s\"'`)]*", text)
        foreign = [u for u in urls if "www.w3.org/2000/svg" not in u]
        assert not foreign, f"{name}: {foreign}"
        if name.endswith(".html"):
            assert "<script>" not in text, f"{name} has an inline script"
            assert " style=" not in text, f"{name} has an inline style"
            assert not re.search(r"\son[a-z]+=", text), f"{name} has an inline handler"
        assert asset.media_type == MEDIA_TYPES[name[name.rfind(".") :]]


def test_the_release_follows_every_file_but_the_page() -> None:
    """A changed script or style sheet gets new URLs (cached for good, so never stale); the
    page itself is revalidated and carries the release, so it is left out of it."""
    current = release(ASSETS)
    script = dict(ASSETS, **{"js/dom.js": attrs.evolve(ASSETS["js/dom.js"], etag="changed")})
    page = dict(ASSETS, **{"index.html": attrs.evolve(ASSETS["index.html"], etag="changed")})
    assert release(script) != current
    assert release(page) == current
    assert released(f"v/{current}/js/pages/agents.js") == (current, "js/pages/agents.js")
    assert released("js/main.js") == (None, "js/main.js")
    for odd in ("v//js/main.js", "v/XYZ/js/main.js", "v/abc/"):
        assert released(odd) == (None, odd)
        assert lookup(ASSETS, released(odd)[1]) is None


@pytest.mark.parametrize("name", ["../pyproject.toml", "/etc/passwd", "js/../../x.js", "x" * 300])
def test_only_shipped_files_are_found(name: str) -> None:
    assert lookup(ASSETS, name) is None


def test_the_policy_allows_only_this_origin() -> None:
    headers = security_headers("127.0.0.1:8080")
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe" not in policy
    assert policy.endswith("connect-src 'self' ws://127.0.0.1:8080 wss://127.0.0.1:8080")
    assert headers["X-Content-Type-Options"] == "nosniff"
    # a Host header cannot write into the policy
    for hostile in ("evil.example; script-src *", "a b", "x'y"):
        assert security_headers(hostile)["Content-Security-Policy"].endswith("connect-src 'self'")


def test_a_definition_shows_every_key_but_no_secret() -> None:
    spec = parse_agent_spec(
        'name = "helper"\nversion = "1.2.0"\ncapabilities = ["help"]\n'
        'system_prompt = "You help."\nuser_prompt_template = "{{request}}"\n'
        '[llm]\nprovider = "openai"\nmodel = "gpt-x"\napi_key = "sk-live-123"\n'
        'base_url = "https://user:hunter2@llm.internal/v1"\nmax_tokens = 300\n',
        source="helper.toml",
    )
    shown = plain(spec)
    assert shown["name"] == "helper"
    assert shown["capabilities"] == ["help"]
    assert shown["llm"]["api_key"] == REDACTED
    assert shown["llm"]["max_tokens"] == 300
    assert shown["llm"]["base_url"] == f"https://{REDACTED}@llm.internal/v1"
    assert "sk-live-123" not in repr(shown)
    assert "hunter2" not in repr(shown)


def test_secret_keys_are_recognised_by_their_words() -> None:
    assert is_secret_key("api_key")
    assert is_secret_key("client-secret")
    assert is_secret_key("Authorization")
    assert not is_secret_key("max_tokens")
    assert not is_secret_key("keyboard")

    @attrs.frozen
    class Deep:
        headers: dict[str, str]
        inner: object

    value = plain(Deep(headers={"X-Custom": "abc"}, inner={"token": "t", "n": float("inf")}))
    assert value == {"headers": {"X-Custom": REDACTED}, "inner": {"token": REDACTED, "n": "inf"}}


def test_the_summary_adds_up_the_servers_own_figures() -> None:
    metrics = Metrics()
    http = metrics.http_duration
    http.labels(route="/api/v1/agents", method="GET", status="200").observe(0.002)
    http.labels(route="/api/v1/agents", method="GET", status="200").observe(0.004)
    http.labels(route="/api/v1/agents/<name>", method="GET", status="404").observe(0.001)
    http.labels(route="/api/v1/messages", method="POST", status="503").observe(0.5)
    metrics.counter("caxton_agent_reload_success", "ok").inc(3)
    metrics.counter("caxton_agent_reload_failed", "failed").inc()
    routed = metrics.counter("caxton_messages_routed", "routed", ["performative", "outcome"])
    routed.labels(performative="request", outcome="ok").inc(5)
    routed.labels(performative="request", outcome="AGENT_NOT_FOUND").inc(2)
    figures = summarize(metrics.registry)
    assert figures["http"]["requests"] == 4
    assert figures["http"]["client_errors"] == 1
    assert figures["http"]["server_errors"] == 1
    assert figures["http"]["seconds"] == pytest.approx(0.507)
    assert figures["http"]["buckets"][-1] == {"le": "+Inf", "count": 4}
    assert figures["reloads"] == {"ok": 3, "failed": 1}
    assert figures["messages"] == {"ok": 5, "failed": 2}
    assert figures["uptime_seconds"] >= 0


def test_what_each_role_is_offered() -> None:
    assert permissions(Role.READONLY) == {
        "read": True,
        "chat": False,
        "write_memory": False,
        "deploy": False,
        "admin": False,
    }
    assert permissions(Role.USER)["chat"]
    assert not permissions(Role.USER)["deploy"]
    assert permissions(Role.OPERATOR)["deploy"]
    assert permissions(Role.ADMIN)["admin"]


def test_what_a_role_is_offered_matches_what_the_routes_declare() -> None:
    from caxton.http.app import CORE_TABLES

    declared = {spec.endpoint: spec.role for table in CORE_TABLES for spec in table.routes}
    needs = {
        "chat": ["agents.agent_socket", "agents.message_agent"],
        "deploy": [
            "agents.set_canary",
            "agents.promote_agent",
            "agents.rollback_agent",
            "agents.restart_agent",
        ],
        "read": ["agents.list_agents", "console.session", "console.metrics_summary"],
    }
    for action, endpoints in needs.items():
        for endpoint in endpoints:
            role = declared[endpoint]
            for caller in (Role.READONLY, Role.USER, Role.OPERATOR, Role.ADMIN):
                assert permissions(caller)[action] == (caller >= role), (action, endpoint, caller)


def test_the_readme_shows_the_console_with_small_screenshots() -> None:
    from pathlib import Path

    repo = Path(__file__).parents[2]
    readme = (repo / "README.md").read_text()
    shown = re.findall(r"\((tools/screenshots/[^)]+\.png)\)", readme)
    assert len(shown) >= 6
    for name in shown:
        picture = repo / name
        assert picture.is_file(), name
        assert picture.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert picture.stat().st_size < 150_000, name
