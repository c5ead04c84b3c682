"""A real browser (Debian's chromium, driven through its chromedriver by selenium) and a real
``caxton start`` process, for the console's tests (issue #20).

Both are blocking, so the console tests are plain (sync) tests sharing one server and one
browser per module through module-scoped fixtures. Nothing is downloaded: selenium is given
the driver's path, so Selenium Manager never runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from processes import CAXTON_CMD, SYSTEM_PATH, caxton_env, ops_tool
from selenium import webdriver
from selenium.webdriver.chrome.service import Service

if TYPE_CHECKING:
    from collections.abc import Iterator

#: Flags that work here (no GPU, no sandbox as root, nothing fetched in the background).
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
)


def artifacts_dir(fallback: Path) -> Path:
    """Where screenshots go: ``$CAXTON_TEST_ARTIFACTS/console`` or ``fallback`` (printed)."""
    root = os.environ.get("CAXTON_TEST_ARTIFACTS")
    folder = Path(root) / "console" if root else fallback
    folder.mkdir(parents=True, exist_ok=True)
    print(f"console screenshots: {folder}")
    return folder


def open_browser() -> Iterator[webdriver.Chrome]:
    """One headless chromium with a fresh profile; the browser and performance logs on."""
    chromium = shutil.which("chromium", path=SYSTEM_PATH) or ops_tool("chromium")
    driver_path = shutil.which("chromedriver", path=SYSTEM_PATH) or ops_tool("chromedriver")
    profile = tempfile.mkdtemp(prefix="caxton-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL", "performance": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=driver_path), options=options)
    driver.set_page_load_timeout(20)
    set_viewport(driver, 1280, 800)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def set_viewport(
    driver: webdriver.Chrome, width: int, height: int, *, mobile: bool = False
) -> None:
    """Make the page's viewport exactly ``width`` x ``height`` CSS pixels (the window's own
    size includes the browser's frame)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )


def network_requests(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """Every request and WebSocket event the browser logged since the last call."""
    found = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"].startswith("Network."):
            found.append(message)
    return found


@attrs.define
class Server:
    """A ``caxton start`` process; its log (JSON lines) goes to a file, read for the ready
    line (a pipe nobody reads would fill up and stop the server)."""

    process: subprocess.Popen[bytes]
    log: Path
    url: str = ""

    def stop(self) -> int:
        self.process.terminate()
        try:
            return self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(timeout=5)


def start_server(config: Path, log: Path, timeout: float = 60) -> Server:
    """``caxton start --config CONFIG`` until its ready line names the API URL."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [*CAXTON_CMD, "start", "--config", str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=sink,
            env={**caxton_env(), "CAXTON_LOG_FORMAT": "json"},
        )
    server = Server(process=process, log=log)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"caxton exited early:\n{log.read_text()[-4000:]}")
        for line in log.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if "ready on" in str(record.get("message")):
                server.url = record["api"][0]
                return server
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"no ready line within {timeout}s:\n{log.read_text()[-4000:]}")
