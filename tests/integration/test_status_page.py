"""The status page in headless Chromium (Debian's chromium + chromedriver; nothing is downloaded).

The page is opened while service-b is healthy, then service-b starts answering 503 and reads through the
sidecar trip its breaker; the page, which polls /api/status by itself, shows the breaker OPEN and the errors.
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import httpx
import orjson
import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By

from s2s_daemon.app import Daemon
from s2s_daemon.messaging.gateway import CommandGateway
from tests.conftest import DemoServices
from tests.support import RABBITMQ_URL, Outgoing, pika_send, wait_for

pytestmark = pytest.mark.integration


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    found = driver.find_elements(By.ID, element_id)
    return found[0].text if found else ""


def breaker_state(driver: webdriver.Chrome, downstream: str) -> str:
    found = driver.find_elements(By.ID, f"breaker-{downstream}")
    return found[0].get_attribute("data-state") or "" if found else ""


@pytest.mark.timeout(120)
async def test_status_page_shows_breaker_flip_to_open(
    make_settings, cleanup_namespace: None, demo: DemoServices, browser: webdriver.Chrome, tmp_path: Path
) -> None:
    """Opened in Chromium, the page shows service-b's breaker CLOSED, then OPEN with its errors once service-b
    fails, refreshing by itself; queue depth, outbox and DLQ figures are filled in; screenshots are saved."""
    settings = make_settings(
        downstreams={
            "service-b": {
                "base_url": demo.url_b,
                "retry": {"max_attempts": 1},
                "breaker": {"window_size": 6, "minimum_calls": 6, "wait_in_open": 60},
                "routes": {
                    "get-resource": {
                        "method": "GET",
                        "path": "/resource/{id}",
                        "expose": {"path": "/api/service-b/resource/{id}"},
                    }
                },
            }
        },
    )
    async with Daemon(settings) as daemon:
        assert daemon.sidecar is not None
        base = f"http://127.0.0.1:{daemon.sidecar.port}"
        await asyncio.to_thread(browser.get, f"{base}/status")
        await wait_for(lambda: asyncio.to_thread(breaker_state, browser, "service-b"), timeout=15)
        assert await asyncio.to_thread(breaker_state, browser, "service-b") == "closed"
        assert await asyncio.to_thread(breaker_state, browser, "service-a") == "closed"
        await asyncio.to_thread(browser.save_screenshot, str(tmp_path / "status-closed.png"))

        # one command so the page has a real queue/outbox to show, then service-b fails
        command = Outgoing("service-a.create-resource", orjson.dumps({"name": "p"}), message_id=uuid.uuid4().hex)
        await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
        demo.b.faults.status = 503
        async with httpx.AsyncClient(base_url=base) as http:
            for i in range(6):
                response = await http.get(f"/api/service-b/resource/r{i}")
                assert response.status_code == 503

        async def page_shows_open() -> bool:
            return await asyncio.to_thread(breaker_state, browser, "service-b") == "open"

        await wait_for(page_shows_open, timeout=10, interval=0.2)
        errors = await asyncio.to_thread(text_of, browser, "errors-service-b")
        queue = await asyncio.to_thread(text_of, browser, "queue-service-b")
        dlq = await asyncio.to_thread(text_of, browser, "dlq-depth")
        pending = await asyncio.to_thread(text_of, browser, "outbox-pending")
        badge = await asyncio.to_thread(text_of, browser, "breaker-service-b")
        shot = tmp_path / "status-open.png"
        await asyncio.to_thread(browser.save_screenshot, str(shot))
        assert await asyncio.to_thread(breaker_state, browser, "service-a") == "closed"

    assert badge == "OPEN"
    assert float(errors.removesuffix(" %")) > 0
    assert queue.isdigit()
    assert dlq.isdigit()
    assert pending.isdigit()
    assert shot.stat().st_size > 10_000  # a real rendering, not a blank image


async def test_status_api_snapshot(daemon: Daemon, sidecar_url: str) -> None:
    """GET /api/status: per downstream breaker, rates and queue depth; outbox counts and the DLQ depth."""
    command = Outgoing("service-a.create-resource", orjson.dumps({"name": "s"}), message_id=uuid.uuid4().hex)
    await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        first = (await http.get("/api/status")).json()
        await asyncio.sleep(1.1)  # snapshots are cached for a second
        await pika_send(
            daemon.topology.commands_exchange_name,
            [Outgoing(command.routing_key, b'{"name":"t"}', message_id=uuid.uuid4().hex)],
            expect_replies=1,
        )
        second = (await http.get("/api/status")).json()
        page = await http.get("/status")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "/api/status" in page.text
    rows = {d["name"]: d for d in second["downstreams"]}
    assert set(rows) == {"service-a", "service-b"}
    assert rows["service-a"]["breaker"]["state"] == "closed"
    assert rows["service-a"]["queue_depth"] == 0
    assert rows["service-a"]["calls_per_second"] > 0
    assert rows["service-a"]["error_rate"] == 0
    assert second["dlq_depth"] == 0
    assert set(second["outbox"]) == {"pending", "publishing", "dead"}
    assert first["service_id"] == second["service_id"]


async def test_queue_probe_survives_a_missing_queue(daemon: Daemon) -> None:
    """A passive declare of a missing queue gives None (the broker closes that channel) and the next probe
    works on a fresh channel."""
    gateway = CommandGateway(RABBITMQ_URL, daemon.topology, "probe-test", "s2s-test")
    await gateway.start()
    try:
        missing = await gateway.queue_depth(f"{daemon.topology.prefix}.no-such-queue")
        present = await gateway.queue_depth(daemon.topology.dlq_name)
        again = await gateway.queue_depth(daemon.topology.command_queue_name("service-a"))
    finally:
        await gateway.stop()
    assert missing is None
    assert (present, again) == (0, 0)
    assert not gateway.connected
