"""The console at /ui in a real browser against a real server (issue #20).

One ``caxton start`` (authentication on, an admin and a readonly key) and one headless
chromium serve every test of this module. Screenshots of each page go to the folder printed
at the start (``$CAXTON_TEST_ARTIFACTS/console`` when set).
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import time
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from browser import artifacts_dir, network_requests, open_browser, set_viewport, start_server
from processes import REPO, probe
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from caxton.security.keys import hash_key

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

    from selenium.webdriver import Chrome

pytestmark = pytest.mark.slow

ADMIN_KEY = "cx-admin-" + secrets.token_hex(16)
READONLY_KEY = "cx-readonly-" + secrets.token_hex(16)
BROKEN_TOML = (
    'name = "broken"\nversion = "1.0.0"\ncapabilitis = ["x"]\n[wasm]\nmodule = "echo.wat"\n'
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The server (with echo, a probe agent in two versions and a seeded memory entity)."""
    root = tmp_path_factory.mktemp("console")
    agents, data = root / "agents", root / "data"
    agents.mkdir()
    data.mkdir()
    for name in ("echo.toml", "echo.wat"):
        shutil.copy(REPO / "agents" / name, agents / name)
    keys = root / "keys.yaml"
    keys.write_text(
        "keys:\n"
        f"  - {{name: ops, role: admin, hash: '{hash_key(ADMIN_KEY)}'}}\n"
        f"  - {{name: watcher, role: readonly, hash: '{hash_key(READONLY_KEY)}'}}\n"
    )
    config = root / "caxton.yaml"
    config.write_text(
        "server:\n  host: 127.0.0.1\n  port: 0\n"
        f"  data_dir: {data}\n  agents_dir: {agents}\n  shutdown_timeout: 5s\n"
        "observability:\n  metrics_port: 0\n"
        f"security:\n  authentication:\n    enabled: true\n  api_keys:\n    key_file: {keys}\n"
    )
    server = start_server(config, root / "server.log")
    try:
        with httpx.Client(base_url=server.url, headers={"X-API-Key": ADMIN_KEY}, timeout=30) as api:
            wait_until(lambda: api.get("/ready").status_code == 200, 60)
            assert api.post("/api/v1/agents", json=probe("1.0.0")).status_code == 201
            assert api.put("/api/v1/agents/probe", json=probe("1.1.0")).status_code == 200
            seeded = api.post(
                "/api/v1/memory/entities",
                json={
                    "name": "Whiskers",
                    "entity_type": "pet",
                    "observations": ["a small grey cat that sleeps on the mat"],
                },
            )
            assert seeded.status_code == 201, seeded.text
            for other, kind in (
                ("NASDAQ", "market"),
                ("Lighthouse", "place"),
                ("Harbour", "place"),
                ("Ada", "person"),
            ):
                api.post(
                    "/api/v1/memory/entities",
                    json={"name": other, "entity_type": kind, "observations": [f"the {kind}"]},
                )
            for source, target, kind in (
                ("Whiskers", "Lighthouse", "sleeps_near"),
                ("Ada", "Whiskers", "feeds"),
                ("Lighthouse", "Harbour", "stands_in"),
            ):
                related = api.post(
                    "/api/v1/memory/relations",
                    json={"from": source, "to": target, "relation_type": kind},
                )
                assert related.status_code in (200, 201), related.text
            yield {"server": server, "agents": agents, "api": api, "root": root}
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser() -> Iterator[Chrome]:
    yield from open_browser()


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return artifacts_dir(tmp_path_factory.mktemp("console-screenshots"))


def wait_until(check: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"not true within {timeout}s"
        time.sleep(0.05)


def wait(driver: Chrome, timeout: float = 10) -> WebDriverWait[Chrome]:
    return WebDriverWait(driver, timeout, poll_frequency=0.05)


def sign_in(driver: Chrome, site: dict[str, Any], key: str, page: str = "agents") -> None:
    driver.get(f"{site['server'].url}/ui#/{page}")
    driver.execute_script("sessionStorage.clear()")
    driver.refresh()  # a new document: signed out
    field = wait(driver).until(ec.visibility_of_element_located((By.ID, "credential")))
    field.send_keys(key, Keys.ENTER)
    wait(driver).until(ec.visibility_of_element_located((By.ID, "nav")))


def shoot(driver: Chrome, folder: Path, name: str) -> None:
    driver.save_screenshot(str(folder / f"{name}.png"))


def test_sign_in_refuses_a_wrong_key_then_signs_in(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    browser.get(f"{site['server'].url}/ui")
    browser.execute_script("sessionStorage.clear()")
    browser.refresh()
    field = wait(browser).until(ec.visibility_of_element_located((By.ID, "credential")))
    shoot(browser, shots, "signin")
    field.send_keys("not-a-key", Keys.ENTER)
    error = wait(browser).until(ec.visibility_of_element_located((By.ID, "signin-error")))
    wait(browser).until(lambda d: "Not signed in" in error.text)
    assert not browser.find_element(By.ID, "nav").is_displayed()

    sign_in(browser, site, ADMIN_KEY)
    assert browser.find_element(By.ID, "who-role").text == "admin"
    assert browser.find_element(By.ID, "who-name").text == "ops"
    # the credential lives in this tab's sessionStorage only
    assert browser.execute_script("return sessionStorage.getItem('caxton.credential')") == ADMIN_KEY
    assert browser.execute_script("return localStorage.length") == 0
    assert "caxton" not in json.dumps(browser.get_cookies())


def test_a_dropped_file_appears_within_2s_and_a_failed_file_shows_its_line(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    sign_in(browser, site, ADMIN_KEY)
    wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-agent="echo"]')))
    wait(browser).until(
        lambda d: "live" in d.find_element(By.ID, "live-state").get_attribute("class")
    )
    text = (REPO / "agents" / "echo.toml").read_text().replace('name = "echo"', 'name = "dropped"')
    (site["agents"] / "dropped.toml").write_text(text)
    started = time.monotonic()
    wait(browser, 2).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-agent="dropped"]'))
    )
    row = browser.find_element(By.CSS_SELECTOR, 'tr[data-agent="dropped"]')
    wait(browser, 2).until(lambda d: "running" in row.text)
    print(f"dropped file shown running after {time.monotonic() - started:.2f}s")

    (site["agents"] / "broken.toml").write_text(BROKEN_TOML)
    failed = wait(browser, 5).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-agent="broken"] .reload-error'))
    )
    assert failed.get_attribute("data-error-line") == "3", failed.text
    assert "line 3" in failed.text
    assert "failed" in browser.find_element(By.CSS_SELECTOR, 'tr[data-agent="broken"]').text
    shoot(browser, shots, "agents")


def test_chat_with_echo_streams_the_reply(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    sign_in(browser, site, ADMIN_KEY, "chat/echo")
    wait(browser).until(
        lambda d: d.find_element(By.ID, "chat-agent").get_attribute("value") == "echo"
    )
    network_requests(browser)  # forget what came before
    box = browser.find_element(By.ID, "chat-input")
    box.send_keys("hello from the console", Keys.ENTER)
    reply = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#chat-log .msg.agent[data-done]"))
    )
    assert "hello from the console" in reply.text
    frames = [
        json.loads(m["params"]["response"]["payloadData"])
        for m in network_requests(browser)
        if m["method"] == "Network.webSocketFrameReceived"
        and m["params"]["response"]["payloadData"].startswith("{")
    ]
    chunks = [f for f in frames if f.get("type") == "chunk"]
    assert chunks, frames  # the reply came as it was produced, before the done frame
    assert frames.index(chunks[0]) < next(i for i, f in enumerate(frames) if f["type"] == "done")
    wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#chat-history li button"))
    )
    shoot(browser, shots, "chat")


def test_canary_share_set_in_the_page_changes_the_agent(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    sign_in(browser, site, ADMIN_KEY, "agent/probe")
    version = wait(browser).until(ec.presence_of_element_located((By.ID, "canary-version")))
    assert version.get_attribute("value") == "1.0.0"
    share = browser.find_element(By.ID, "canary-share")
    share.clear()
    share.send_keys("35")
    browser.find_element(By.ID, "canary-set").click()

    def changed() -> bool:
        view = site["api"].get("/api/v1/agents/probe").json()
        return bool(view["canary"] == {"version": "1.0.0", "traffic_percentage": 35.0})

    wait_until(changed, 10)
    assert site["api"].get("/api/v1/agents/probe").json()["version"] == "1.1.0"
    wait(browser).until(ec.text_to_be_present_in_element((By.ID, "versions"), "canary 35"))
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#agent-logs div"))
    shoot(browser, shots, "agent")
    assert site["api"].post("/api/v1/agents/probe/rollback", json={}).status_code == 200


def test_a_memory_search_shows_the_seeded_entity_and_its_graph(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    sign_in(browser, site, ADMIN_KEY, "memory")
    query = wait(browser).until(ec.visibility_of_element_located((By.ID, "memory-q")))
    query.send_keys("a kitten napping on a rug", Keys.ENTER)
    first = wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#memory-results li[data-entity]"))
    )
    assert first.get_attribute("data-entity") == "Whiskers"
    score = float(first.find_element(By.CSS_SELECTOR, ".score").text)
    assert 0.2 < score <= 1.0
    first.find_element(By.TAG_NAME, "button").click()
    wait(browser).until(
        ec.text_to_be_present_in_element((By.ID, "memory-observations"), "grey cat")
    )
    wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, '#memory-graph [data-entity="Harbour"]'))
    )
    shoot(browser, shots, "memory")
    browser.execute_script("document.getElementById('graph-h').scrollIntoView()")
    shoot(browser, shots, "memory-graph")


def test_a_readonly_key_sees_no_deploy_or_rollback_controls(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    sign_in(browser, site, READONLY_KEY, "agent/probe")
    assert browser.find_element(By.ID, "who-role").text == "readonly"
    wait(browser).until(ec.presence_of_element_located((By.ID, "versions")))
    wait(browser).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#agent-definition"))
    for control in ("deploy-controls", "canary-form", "canary-set", "promote", "rollback"):
        assert not browser.find_elements(By.ID, control), control
    shoot(browser, shots, "agent-readonly")
    browser.get(f"{site['server'].url}/ui#/chat/echo")
    wait(browser).until(ec.presence_of_element_located((By.ID, "chat-refused")))
    assert not browser.find_elements(By.ID, "chat-send")
    # and the server refuses it anyway
    refused = httpx.post(
        f"{site['server'].url}/api/v1/agents/probe/rollback",
        headers={"X-API-Key": READONLY_KEY},
        json={},
    )
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "FORBIDDEN"


def test_every_page_loads_only_from_this_server_under_the_policy(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    sign_in(browser, site, ADMIN_KEY, "agents")
    browser.get_log("browser")
    url = site["server"].url
    for page in ("agents", "conversations", "health", "cluster", "usage", "agent/echo"):
        browser.get(f"{url}/ui#/{page}")
        wait(browser).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#view h1")))
    # the health page draws its charts from two reads of the server's figures
    browser.get(f"{url}/ui#/health")
    try:
        wait(browser, 10).until(
            lambda d: len(d.find_elements(By.CSS_SELECTOR, "#health-charts svg path.line")) >= 3
        )
    finally:
        shoot(browser, shots, "health")
    logged = network_requests(browser)
    requests = [
        m["params"]["request"]["url"] for m in logged if m["method"] == "Network.requestWillBeSent"
    ]
    sockets = [m["params"]["url"] for m in logged if m["method"] == "Network.webSocketCreated"]
    # the style sheet under this server's release prefix (cached for good)
    assert any(re.search(r"/ui/v/[0-9a-f]+/console\.css$", u) for u in requests), requests
    outside = [
        u
        for u in requests + sockets
        if not u.startswith((url, url.replace("http", "ws", 1), "data:"))
    ]
    assert not outside, outside
    violations = [
        e["message"]
        for e in browser.get_log("browser")
        if "Content Security Policy" in e["message"]
    ]
    assert not violations, violations
    headers = httpx.get(f"{url}/ui").headers
    policy = headers["Content-Security-Policy"]
    assert "default-src 'self'" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_the_conversation_is_drawn_as_a_sequence_at_phone_width(
    site: dict[str, Any], browser: Chrome, shots: Path
) -> None:
    api = site["api"]
    reply = api.post("/api/v1/agents/echo/messages", json={"content": "ping"}).json()
    conversation = reply["conversation_id"]
    sign_in(browser, site, ADMIN_KEY, f"conversations/{conversation}")
    wait(browser).until(
        ec.presence_of_element_located((By.CSS_SELECTOR, "#conversation-detail .seq svg g.hop"))
    )
    labels = browser.find_elements(By.CSS_SELECTOR, "#conversation-detail .seq svg g.hop text")
    assert [label.text.split(" ·")[0] for label in labels] == ["request", "inform"]
    assert " ms" in labels[1].text or " s" in labels[1].text
    shoot(browser, shots, "conversations")
    set_viewport(browser, 390, 844, mobile=True)
    try:
        browser.get(f"{site['server'].url}/ui#/agents")
        wait(browser).until(
            ec.presence_of_element_located((By.CSS_SELECTOR, 'tr[data-agent="echo"]'))
        )
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= 400, f"the agents page is {width}px wide at a phone's 390px"
        shoot(browser, shots, "agents-phone")
    finally:
        set_viewport(browser, 1280, 800)


def test_keyboard_reaches_every_page(site: dict[str, Any], browser: Chrome) -> None:
    sign_in(browser, site, ADMIN_KEY, "agents")
    body = browser.find_element(By.TAG_NAME, "body")
    reached = []
    for _ in range(14):
        body.send_keys(Keys.TAB)
        active = browser.switch_to.active_element
        page = active.get_attribute("data-page")
        if page:
            reached.append(page)
        if page == "memory":
            active.send_keys(Keys.ENTER)
            break
    assert reached[:4] == ["agents", "chat", "conversations", "memory"], reached
    wait(browser).until(lambda d: d.execute_script("return location.hash") == "#/memory")
    # the page's fields are labelled for screen readers
    query = wait(browser).until(ec.presence_of_element_located((By.ID, "memory-q")))
    label = browser.find_element(By.CSS_SELECTOR, 'label[for="memory-q"]')
    assert query.is_displayed()
    assert label.text == "Search memory"
