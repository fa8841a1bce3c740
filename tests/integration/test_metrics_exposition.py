"""A live ``/metrics`` scrape passes ``promtool check metrics`` (naming, units, help, types), after real traffic.

promtool comes from Debian's prometheus package, unpacked into .tools/ by ``deploy/validate.sh``
(``make lint-deploy``, which ``make test`` runs first).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest

from s2s_daemon.app import Daemon
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.observability.sampler import StateSampler
from tests.conftest import DemoServices
from tests.support import Outgoing, pika_send

pytestmark = pytest.mark.integration

PROMTOOL = Path(os.environ.get("TOOLS", Path(__file__).parents[2] / ".tools")) / "prometheus/usr/bin/promtool"


async def test_live_metrics_scrape_is_promtool_clean(daemon: Daemon, sidecar_url: str, demo: DemoServices) -> None:
    """After a command succeeded, one failed and one was dead-lettered, the scrape has our series and promtool
    reports no problem."""
    assert PROMTOOL.is_file(), f"{PROMTOOL} is missing: run `make lint-deploy` (deploy/validate.sh installs it)"
    demo.a.faults.status = 422  # a permanent failure: a failed reply, no retries
    failing = Outgoing("service-a.create-resource", b'{"name": "f"}', message_id=uuid.uuid4().hex)
    await pika_send(daemon.topology.commands_exchange_name, [failing], expect_replies=1)
    demo.a.faults.status = None
    commands = [
        Outgoing("service-a.create-resource", b'{"name": "m"}', message_id=uuid.uuid4().hex),
        Outgoing("service-a.create-resource", b"{not json", message_id=uuid.uuid4().hex),
    ]
    await pika_send(daemon.topology.commands_exchange_name, commands, expect_replies=2)
    assert daemon.sampler is not None
    await daemon.sampler.sample_once()
    async with httpx.AsyncClient(timeout=5.0) as http:
        scrape = await http.get(f"{sidecar_url}/metrics")
    assert scrape.status_code == 200
    text = scrape.text
    for series in ('s2s_commands_total{downstream="service-a",outcome="succeeded"}', "s2s_dead_lettered_total"):
        assert series in text
    # the sampled gauges behind the alerts: DLQ growth, no consumers, readiness
    assert "s2s_dlq_messages 1.0" in text
    assert f's2s_consumers{{queue="{daemon.topology.command_queue_name("service-a")}"}} 1.0' in text
    assert "s2s_ready 1.0" in text

    result = await asyncio.to_thread(
        subprocess.run, [str(PROMTOOL), "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    print(f"\npromtool check metrics: exit {result.returncode}, {len(text.splitlines())} lines scraped")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "", result.stdout
    assert result.stderr.strip() == "", result.stderr


async def test_ready_gauge_drops_to_0_when_the_drain_starts(make_settings, cleanup_namespace: None) -> None:
    """s2s_ready is 1 while running and 0 as soon as stop() begins (readiness flapping is visible in Prometheus)."""
    daemon = Daemon(make_settings())
    async with daemon:
        assert daemon.sampler is not None
        await daemon.sampler.sample_once()
        assert daemon.metrics.registry.get_sample_value("s2s_ready") == 1.0
    assert daemon.metrics.registry.get_sample_value("s2s_ready") == 0.0


async def test_sampler_reports_readiness_even_when_the_broker_is_unreachable(unused_port: int) -> None:
    """A failed broker sample keeps the last queue figures but still records readiness; stop() leaves 0."""
    metrics = Metrics()

    async def ready() -> bool:
        return True

    topology = Topology("nowhere", ("service-a",), 100, (1,))
    sampler = StateSampler(f"amqp://guest:guest@127.0.0.1:{unused_port}/", topology, metrics, ready)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the client raises for a refused connection
        await sampler.sample_once()
    assert metrics.registry.get_sample_value("s2s_ready") == 1.0
    await sampler.stop()
    assert metrics.registry.get_sample_value("s2s_ready") == 0.0
