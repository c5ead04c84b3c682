"""Figures read from elsewhere are brought up to date when /metrics is scraped: the refreshers
registered with ``Metrics.refresh_with`` run first, bounded, and a failing one never breaks the
scrape (issue #21: no timer reads them while nobody looks)."""

from __future__ import annotations

import httpx
import pytest
import trio

from caxton import metrics as metrics_module
from caxton.metrics import Metrics, MetricsServer

pytestmark = pytest.mark.trio


async def scrape(url: str) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.get(url)
    assert response.status_code == 200
    return response.text


async def test_a_scrape_runs_the_refreshers_first(nursery: trio.Nursery) -> None:
    metrics = Metrics()
    figures = {"read": 0.0, "refreshes": 0}

    async def refresh() -> None:
        figures["refreshes"] += 1
        await trio.sleep(0.01)  # as a database read would
        figures["read"] = 7.0

    metrics.refresh_with(refresh)
    metrics.gauge("caxton_test_read", "A figure read elsewhere.").set_function(
        lambda: figures["read"]
    )
    url = await nursery.start(MetricsServer(metrics, host="127.0.0.1", port=0).run)
    await trio.sleep(0.2)
    assert figures["refreshes"] == 0  # nothing runs while nobody scrapes
    assert "caxton_test_read 7.0" in await scrape(url)
    assert figures["refreshes"] == 1


async def test_a_failing_or_slow_refresher_still_lets_the_scrape_answer(
    nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(metrics_module, "REFRESH_TIMEOUT_S", 0.2)
    metrics = Metrics()
    later = {"ran": False}

    async def broken() -> None:
        raise RuntimeError("the database went away")

    async def stuck() -> None:
        await trio.sleep_forever()

    async def fine() -> None:
        later["ran"] = True

    for refresher in (broken, stuck, fine):
        metrics.refresh_with(refresher)
    url = await nursery.start(MetricsServer(metrics, host="127.0.0.1", port=0).run)
    with trio.fail_after(5):
        text = await scrape(url)
    assert "caxton_server_uptime_seconds" in text
    assert later["ran"]
    messages = [r.getMessage() for r in caplog.records]
    assert any("refresh before the scrape failed" in m for m in messages)
    assert any("took over" in m for m in messages)
