"""The operator console in headless Chromium against a running daemon (real RabbitMQ, Redis and nx-27017).

The page test drives what an operator does during an incident: the charts fill in from the daemon's own history,
a poison command shows up in the dead-letter list, the operator enters the admin token, repairs the body and
replays it, and the repaired command succeeds downstream; the command is then looked up by its new id. Without
the token every write endpoint answers 401 and nothing changes. Screenshots of the three views are saved into
``$S2S_SCREENSHOTS_DIR`` when set (``make screenshots`` sets it to docs/img), else into the test's tmp folder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pymongo import MongoClient
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys

from s2s_daemon.app import Daemon
from s2s_daemon.ops.dlq import edited_key
from s2s_daemon.outbox.record import command_key
from tests.conftest import DemoServices
from tests.outboxdocs import outbox_document
from tests.support import Outgoing, pika_send, queue_depth, wait_for

pytestmark = pytest.mark.integration

ROUTE = "service-a.create-resource"
TOKEN = "console-test-token-0123456789"
WRITES = (
    ("/api/console/dlq/replay", {}),
    ("/api/console/dlq/purge", {"older_than": "0s"}),
    ("/api/console/outbox/retry", {}),
)
# #2563eb, the first series' stroke (calls/s): pixels of it on the canvas are the data drawn, not the axes
DRAWN_PIXELS = """
const canvas = document.querySelector(arguments[0] + ' canvas');
if (!canvas) return 0;
const d = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let n = 0;
for (let i = 0; i < d.length; i += 4) {
  if (Math.abs(d[i] - 37) < 30 && Math.abs(d[i + 1] - 99) < 30 && Math.abs(d[i + 2] - 235) < 30 && d[i + 3] > 0) n++;
}
return n;
"""
UNLABELLED = """
return [...document.querySelectorAll('input, textarea')].filter((e) => e.labels.length === 0).map((e) => e.id)
  .concat([...document.querySelectorAll('button')].filter((b) => !b.textContent.trim()).map((b) => b.id));
"""


def screenshots_dir(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("S2S_SCREENSHOTS_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


async def js(driver: webdriver.Chrome, script: str, *args: Any) -> Any:
    return await asyncio.to_thread(driver.execute_script, script, *args)


async def by_id(driver: webdriver.Chrome, element_id: str) -> Any:
    return await asyncio.to_thread(driver.find_element, By.ID, element_id)


async def click(driver: webdriver.Chrome, element_id: str) -> None:
    """Click by id; found again if the page re-rendered it between finding and clicking."""

    def find_and_click() -> None:
        for _ in range(5):
            try:
                driver.find_element(By.ID, element_id).click()
                return
            except StaleElementReferenceException:
                continue
        raise AssertionError(f"#{element_id} kept being replaced")

    await asyncio.to_thread(find_and_click)


async def text(driver: webdriver.Chrome, element_id: str) -> str:
    found = await asyncio.to_thread(driver.find_elements, By.ID, element_id)
    return str(found[0].text) if found else ""


async def tab_order(driver: webdriver.Chrome, presses: int) -> list[str]:
    """What the Tab key visits from the top of the page: tag and id (or text for a link)."""

    def walk() -> list[str]:
        driver.execute_script("document.activeElement.blur(); window.scrollTo(0, 0)")
        body = driver.find_element(By.TAG_NAME, "body")
        seen = []
        for _ in range(presses):
            body.send_keys(Keys.TAB) if not seen else driver.switch_to.active_element.send_keys(Keys.TAB)
            seen.append(
                driver.execute_script(
                    "const e = document.activeElement;"
                    "return e.tagName + ':' + (e.tagName === 'A' ? e.textContent.trim() : e.id);"
                )
            )
        return seen

    return await asyncio.to_thread(walk)


async def shoot(driver: webdriver.Chrome, element_id: str, path: Path) -> None:
    element = await by_id(driver, element_id)
    await asyncio.to_thread(driver.execute_script, "arguments[0].scrollIntoView()", element)
    await asyncio.to_thread(element.screenshot, str(path))


@pytest.mark.timeout(180)
async def test_console_charts_dead_letter_replay_and_command_lookup(
    make_settings,
    cleanup_namespace: None,
    demo: DemoServices,
    browser: webdriver.Chrome,
    tmp_path: Path,
    mongo_server: Any,
    run_id: str,
) -> None:
    """Charts draw the daemon's history; a poison command is listed; without the token the writes answer 401 and
    are hidden; with it the operator repairs the body and replays it through the page, the DLQ empties and the
    repaired command succeeds under its derived key, which the command lookup then shows with its trace id."""
    shots = screenshots_dir(tmp_path)
    settings = make_settings(
        admin={"token": TOKEN},
        api={"console_sample_seconds": 1, "console_history_seconds": 90},
        downstreams={"service-b": service_b_breaking(demo.url_b)},
    )
    async with Daemon(settings) as daemon:
        assert daemon.sidecar is not None
        base = f"http://127.0.0.1:{daemon.sidecar.port}"
        exchange = daemon.topology.commands_exchange_name
        for wave in range(4):  # a few samples (one a second) with traffic, so the charts have lines
            good = [Outgoing(ROUTE, orjson.dumps({"name": f"g{i}"}), message_id=f"good-{wave}-{i}") for i in range(5)]
            await pika_send(exchange, good, expect_replies=5)
            await asyncio.sleep(1.1)
        dead_key = command_key("service-a", "relay-gave-up")
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri)
        client[run_id]["outbox"].insert_one(outbox_document("relay-gave-up", status="dead", last_error="no route"))
        client.close()
        poison = Outgoing(ROUTE, b'{"nom": "typo"}', message_id="k-poison", want_reply=False)
        await pika_send(exchange, [poison])
        await wait_for(lambda: _depth_is(daemon.topology.dlq_name, 1), timeout=15)

        # without the token: every write is refused and changes nothing
        async with httpx.AsyncClient(base_url=base) as http:
            for path, body in WRITES:
                anonymous = await http.post(path, json=body)
                wrong = await http.post(path, json=body, headers={"Authorization": "Bearer not-the-token-at-all"})
                assert (anonymous.status_code, wrong.status_code) == (401, 401), path
                assert anonymous.headers["www-authenticate"].startswith("Bearer")
            page = await http.get("/console")
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        assert await queue_depth(daemon.topology.dlq_name) == 1

        await asyncio.to_thread(browser.set_window_size, 1280, 1600)
        await asyncio.to_thread(browser.get, f"{base}/console")

        # charts: points arrive every second; the calls/s line is drawn on the canvas
        async def charts_drawn() -> bool:
            calls = await js(
                browser,
                "const c = window.s2sConsole.charts['service-a-rates'];"
                "return c ? c.data[1].filter((v) => v > 0).length : 0;",
            )
            return bool(calls) and await js(browser, DRAWN_PIXELS, "#chart-service-a-rates") > 50

        await wait_for(charts_drawn, timeout=30, interval=0.5)

        # service-b fails: its breaker opens, and the timeline says so in words
        demo.b.faults.status = 503
        async with httpx.AsyncClient(base_url=base) as http:
            for i in range(6):
                assert (await http.get(f"/api/service-b/resource/r{i}")).status_code == 503

        async def shows_open() -> bool:
            return await text(browser, "breaker-now-service-b") == "OPEN"

        await wait_for(shows_open, timeout=15, interval=0.3)
        assert "OPEN" in await text(browser, "timeline-service-b")
        assert "now OPEN since" in await text(browser, "timeline-text-service-b")
        assert "from" in await text(browser, "timeline-text-service-b")  # the CLOSED stretch before it
        points = int(await js(browser, "return document.getElementById('chart-dlq').dataset.points"))
        assert points >= 2
        assert await js(browser, "return window.s2sConsole.charts['dlq'].data[1].at(-1)") == 1
        assert await text(browser, "breaker-now-service-a") == "CLOSED"
        assert "CLOSED" in await text(browser, "timeline-service-a")
        assert await js(browser, UNLABELLED) == []
        assert not [e for e in await asyncio.to_thread(browser.get_log, "browser") if e["level"] == "SEVERE"]
        assert await tab_order(browser, 8) == [
            "A:Skip to content",
            "A:status table",
            "INPUT:operator",
            "INPUT:token",
            "BUTTON:token-save",
            "A:Charts",
            "A:Dead letters",
            "A:Outbox and commands",
        ]
        await shoot(browser, "charts", shots / "console-charts.png")

        # the poison command is listed, with its reason; writes are hidden without the token
        await wait_for(lambda: text(browser, "dl-rows"), timeout=15, interval=0.3)
        row = await asyncio.to_thread(browser.find_element, By.CSS_SELECTOR, "#dl-rows tr[data-id='k-poison']")
        assert "schema-violation" in await asyncio.to_thread(lambda: row.text)
        assert not await asyncio.to_thread((await by_id(browser, "dl-replay-all")).is_displayed)

        # the operator enters name and token (kept in sessionStorage, never a cookie)
        await asyncio.to_thread((await by_id(browser, "operator")).send_keys, "ops-alice")
        await asyncio.to_thread((await by_id(browser, "token")).send_keys, TOKEN)
        await click(browser, "token-save")
        assert await text(browser, "mode") == "writes enabled as ops-alice"
        assert await asyncio.to_thread((await by_id(browser, "dl-replay-all")).is_displayed)
        assert await asyncio.to_thread(browser.get_cookies) == []

        # open the dead letter, repair its body, replay it (confirmed in the dialog)
        await asyncio.to_thread(row.find_element(By.CSS_SELECTOR, "button.dl-open").click)
        await wait_for(lambda: text(browser, "dl-detail-id"), timeout=15, interval=0.2)
        body = await by_id(browser, "dl-body")
        assert '"nom": "typo"' in str(await asyncio.to_thread(body.get_attribute, "value"))
        assert "x-s2s-reason" in await text(browser, "dl-headers")
        await asyncio.to_thread(body.clear)
        await asyncio.to_thread(body.send_keys, '{"name": "typo"}')
        await shoot(browser, "dead-letters", shots / "console-dead-letters.png")
        await click(browser, "dl-replay-edited")
        assert "NEW idempotency key" in await text(browser, "confirm-text")
        assert await js(browser, "return document.activeElement.id") == "confirm-cancel"  # the safe default
        await click(browser, "confirm-ok")

        async def replayed() -> bool:
            return "replayed 1 of 1 scanned" in await text(browser, "job-text")

        await wait_for(replayed, timeout=20, interval=0.3)
        new_key = edited_key("k-poison", b'{"name":"typo"}')
        assert new_key in await text(browser, "job-text")
        await wait_for(lambda: demo.a.calls_by_key.get(new_key) == 1, timeout=15)
        assert await queue_depth(daemon.topology.dlq_name) == 0

        # the repaired command, looked up by its id: succeeded, with attempts and its trace id
        async def succeeded() -> bool:
            record = await daemon.outbox.find(command_key("service-a", new_key))  # type: ignore[union-attr]
            return record is not None and record.status.value == "sent"

        await wait_for(succeeded, timeout=15)

        await asyncio.to_thread((await by_id(browser, "cmd-id")).send_keys, new_key)
        await click(browser, "cmd-lookup")
        await wait_for(lambda: text(browser, "cmd-result"), timeout=10, interval=0.2)
        found = await text(browser, "cmd-result")
        await click(browser, "ob-refresh")
        await wait_for(lambda: _contains(browser, "ob-rows", "no route"), timeout=10, interval=0.2)
        await shoot(browser, "outbox", shots / "console-outbox.png")

        # the dead outbox document, with its reason, retried through the page
        await click(browser, f"ob-retry-{dead_key}")
        await click(browser, "confirm-ok")
        await wait_for(lambda: _contains(browser, "ob-summary", "moved 1 back to pending"), timeout=10, interval=0.2)
        retried = await daemon.outbox.find(dead_key)  # type: ignore[union-attr]

    assert retried is not None
    assert retried.status.value != "dead"
    assert "status\nsucceeded" in found
    assert "attempts\n1" in found
    assert re.search(r"trace id\n[0-9a-f]{32}", found)
    for name in ("console-charts.png", "console-dead-letters.png", "console-outbox.png"):
        assert (shots / name).stat().st_size > 10_000  # a real rendering, not a blank image


async def test_console_api_purge_job_dead_outbox_retry_and_lookup(
    make_settings, cleanup_namespace: None, mongo_server: Any, run_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the API with the token: a purge counts first (dry run) then deletes as a job with progress; dead
    outbox documents are listed with their reason and retried; an unknown command is 404; bad input is 400; every
    write is logged with who and what."""
    caplog.set_level(logging.INFO, logger="s2s.http.console")
    settings = make_settings(admin={"token": TOKEN})
    auth = {"Authorization": f"Bearer {TOKEN}", "X-Operator": "ops-bob"}
    async with Daemon(settings) as daemon:
        assert daemon.sidecar is not None
        exchange = daemon.topology.commands_exchange_name
        bad = [Outgoing(ROUTE, b'{"nom": 1}', message_id=f"bad-{i}", want_reply=False) for i in range(3)]
        await pika_send(exchange, bad)
        await wait_for(lambda: _depth_is(daemon.topology.dlq_name, 3), timeout=15)
        client: MongoClient[dict[str, Any]] = MongoClient(mongo_server.uri)
        dead_key = f"dead-{uuid.uuid4().hex[:6]}"
        client[run_id]["outbox"].insert_one(outbox_document(dead_key, status="dead", last_error="no route"))
        client.close()

        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.sidecar.port}", timeout=20) as http:
            listed = (await http.get("/api/console/dlq", params={"reason": "schema-*", "limit": 2})).json()
            shown = await http.get("/api/console/dlq/messages/bad-1")
            missing = await http.get("/api/console/dlq/messages/nope")
            bad_age = await http.get("/api/console/dlq", params={"older_than": "soon"})
            bad_body = await http.post("/api/console/dlq/purge", json={"filters": {}}, headers=auth)
            unpinned = await http.post("/api/console/dlq/replay", json={"body": {"name": "x"}}, headers=auth)

            async def finished(started: httpx.Response) -> dict[str, Any]:
                assert started.status_code == 202, started.text
                url = started.json()["status_url"]
                job: dict[str, Any] = await wait_for(lambda: _done(http, url), timeout=20, interval=0.2)
                return job

            dry = await finished(
                await http.post("/api/console/dlq/purge", json={"older_than": "0s", "dry_run": True}, headers=auth)
            )
            depth_after_dry = await queue_depth(daemon.topology.dlq_name)
            purge = await finished(
                await http.post(
                    "/api/console/dlq/purge",
                    json={"older_than": "0s", "filters": {"id": ["bad-0", "bad-2"]}},
                    headers=auth,
                )
            )
            dead = (await http.get("/api/console/outbox/dead")).json()
            retried = await http.post(
                "/api/console/outbox/retry", json={"keys": [command_key("service-a", dead_key)]}, headers=auth
            )
            unknown = await http.get("/api/console/commands/no-such-command")
            history = (await http.get("/api/console/history")).json()

    assert listed["depth"] == 3
    assert [m["id"] for m in listed["messages"]] == ["bad-0", "bad-1"]
    assert shown.json()["messages"][0]["body"] == {"nom": 1}
    assert missing.status_code == 404
    assert (bad_age.status_code, bad_age.json()["error"]) == (400, "invalid")
    assert "duration 'soon'" in bad_age.json()["detail"]
    assert (bad_body.status_code, "older_than" in bad_body.json()["detail"]) == (400, True)
    assert (unpinned.status_code, "exactly one message" in unpinned.json()["detail"]) == (400, True)
    assert (dry["state"], dry["report"]["purged"], dry["scanned"], dry["depth"]) == ("succeeded", 3, 3, 3)
    assert depth_after_dry == 3
    assert (purge["report"]["purged"], purge["report"]["kept"]) == (2, 1)
    assert [d["key"] for d in dead["documents"]] == [command_key("service-a", dead_key)]
    assert dead["documents"][0]["last_error"] == "no route"
    assert (retried.status_code, retried.json()) == (200, {"moved": 1})
    assert unknown.status_code == 404
    assert set(history["downstreams"]) == {"service-a", "service-b"}
    assert history["dlq_depth"][-1] is not None
    writes = [r.msg for r in caplog.records if isinstance(r.msg, dict) and r.msg.get("event") == "console.write"]
    assert [(w["action"], w["who"]) for w in writes] == [
        ("dlq.purge", "ops-bob@127.0.0.1"),
        ("dlq.purge", "ops-bob@127.0.0.1"),
        ("outbox.retry", "ops-bob@127.0.0.1"),
    ]
    assert (writes[0]["dry_run"], writes[1]["dry_run"]) == (True, False)
    assert writes[1]["filters"] == {"id": ["bad-0", "bad-2"]}
    assert writes[2]["keys"] == [command_key("service-a", dead_key)]


def service_b_breaking(url: str) -> dict[str, Any]:
    """service-b with a breaker that opens after six failed reads, and no retries."""
    return {
        "base_url": url,
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


async def _contains(driver: webdriver.Chrome, element_id: str, wanted: str) -> bool:
    return wanted in await text(driver, element_id)


async def _depth_is(queue: str, expected: int) -> bool:
    return await queue_depth(queue) == expected


async def _done(http: httpx.AsyncClient, url: str) -> dict[str, Any] | None:
    job: dict[str, Any] = (await http.get(url)).json()
    return job if job["state"] != "running" else None
