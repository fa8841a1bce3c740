"""The sidecar in the daemon's event loop: /health, probes and /metrics."""

from __future__ import annotations

import uuid

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from s2s_daemon.app import Daemon
from tests.support import Outgoing, pika_send

pytestmark = pytest.mark.integration


async def test_health_passes_with_all_dependencies_up(sidecar_url: str) -> None:
    """GET /health is application/health+json 'pass' with a check per dependency."""
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/health+json")
    body = response.json()
    assert body["status"] == "pass"
    assert {"rabbitmq:connection", "redis:responseTime", "mongodb:responseTime"} <= set(body["checks"])
    assert all(entry[0]["status"] == "pass" for entry in body["checks"].values())


async def test_health_fails_when_redis_unreachable(make_settings, cleanup_namespace: None, unused_port: int) -> None:
    """With Redis on a closed port the daemon still starts, /health and /readyz answer 503 'fail', /livez 200."""
    settings = make_settings(redis_url=f"redis://127.0.0.1:{unused_port}/0")
    async with (
        Daemon(settings) as daemon,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.sidecar.port}") as http,
    ):  # type: ignore[union-attr]
        health = await http.get("/health")
        ready = await http.get("/readyz")
        live = await http.get("/livez")
    assert health.status_code == 503
    assert health.json()["status"] == "fail"
    assert health.json()["checks"]["redis:responseTime"][0]["status"] == "fail"
    assert health.json()["checks"]["rabbitmq:connection"][0]["status"] == "pass"
    assert ready.status_code == 503
    assert live.status_code == 200


async def test_readiness_fails_while_draining(daemon: Daemon, sidecar_url: str) -> None:
    """Once stop begins (draining), readiness answers 503 while liveness stays 200."""
    daemon.draining = True
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        ready = await http.get("/readyz")
        live = await http.get("/livez")
    assert ready.status_code == 503
    assert live.status_code == 200


async def test_metrics_parse_and_count_commands(daemon: Daemon, sidecar_url: str) -> None:
    """/metrics parses with prometheus_client's parser and counts the handled command by outcome."""
    command = Outgoing("service-a.create-resource", orjson.dumps({"name": "m"}), message_id=uuid.uuid4().hex)
    await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        response = await http.get("/metrics")
    assert response.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    # the daemon's own families, and prometheus-client's process, platform and GC collectors
    assert all(name.startswith(("s2s_", "process_", "python_")) for name in families)
    assert {"process_cpu_seconds", "python_info", "python_gc_collections"} <= set(families)
    commands = {
        (s.labels["downstream"], s.labels["outcome"]): s.value
        for s in families["s2s_commands"].samples
        if s.name == "s2s_commands_total"
    }
    assert commands[("service-a", "succeeded")] == 1
    assert "s2s_handler_duration_seconds" in families
    assert "s2s_outbox_backlog" in families


async def test_command_status_endpoint(daemon: Daemon, sidecar_url: str) -> None:
    """GET /api/commands/{id} returns the stored reply; an unknown id is 404."""
    key = uuid.uuid4().hex
    command = Outgoing("service-a.create-resource", orjson.dumps({"name": "s"}), message_id=key)
    await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        found = await http.get(f"/api/commands/{key}", params={"downstream": "service-a"})
        missing = await http.get("/api/commands/nope", params={"downstream": "service-a"})
    assert found.status_code == 200
    assert found.json()["reply"]["status"] == "succeeded"
    assert missing.status_code == 404
