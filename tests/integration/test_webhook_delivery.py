"""Sending webhooks: events on s2s.events delivered to partner endpoints, checked by the receivers' side.

Every endpoint here is a real HTTP server (``tests.webhook_receiver``) that verifies each delivery with the
``standardwebhooks`` library (v1) and ``cryptography`` (v1a) and counts it. Commands go through the real pipeline
(pika -> RabbitMQ -> demo service-a -> outbox -> relay -> s2s.events), so the events are the daemon's own.
Retry schedules and delay queues are shortened to seconds.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat

from s2s_daemon.app import Daemon
from s2s_daemon.local import free_port
from s2s_daemon.ops.dlq import DeadLetterQueue
from s2s_daemon.settings import Settings
from tests.conftest import RABBITMQ_URL, SettingsFactory
from tests.daemonproc import consumer_count
from tests.support import Outgoing, bind_probe_queue, drain, pika_send, queue_depth, wait_for
from tests.webhook_receiver import WebhookReceiver

pytestmark = pytest.mark.integration

OLD = "whsec_" + base64.b64encode(b"partner signing secret, the old").decode()
NEW = "whsec_" + base64.b64encode(b"partner signing secret, the new").decode()
_ED = Ed25519PrivateKey.generate()
ED_SECRET = "whsk_" + base64.b64encode(_ED.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
ED_PUBLIC = "whpk_" + base64.b64encode(_ED.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()
EVENTS = "service-a.*.succeeded"
# seconds: a horizon of ~40 s instead of Svix's ~27 h
SCHEDULE = [1, 1, 2, 2, 2, 3, 3, 3, 5, 5, 5, 5]
BREAKER = {"window_size": 10, "minimum_calls": 5, "wait_in_open": 1.0, "permitted_half_open_calls": 2}
DELIVERY = {"delay_ladder": [1, 2, 5], "state_poll_seconds": 0.5}


def subscription(url: str, secrets: list[str], **more: Any) -> dict[str, Any]:
    return {
        "url": url,
        "events": [EVENTS],
        "secrets": secrets,
        "retry_schedule": SCHEDULE,
        "timeout": 2.0,
        "breaker": BREAKER,
        **more,
    }


@contextlib.asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[Daemon]:
    """A daemon; its subscription queues are deleted afterwards (the namespace fixture knows only downstreams)."""
    async with Daemon(settings) as daemon:
        yield daemon


@pytest.fixture
async def drop_subscription_queues(run_id: str) -> AsyncIterator[list[Settings]]:
    used: list[Settings] = []
    yield used
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        for settings in used:
            names = Daemon(settings).topology.all_queue_names()
            for name in names:
                channel = await connection.channel()
                with contextlib.suppress(Exception):
                    await channel.queue_delete(name)


async def send_commands(run_id: str, count: int) -> list[str]:
    """``count`` service-a commands through the real pipeline; the ids of the events they produce."""
    connection, probe = await bind_probe_queue(f"{run_id}.events", EVENTS)
    async with connection:
        await pika_send(
            f"{run_id}.commands",
            [
                Outgoing(
                    "service-a.create-resource",
                    orjson.dumps({"name": f"r{i}"}),
                    message_id=uuid.uuid4().hex,
                    want_reply=False,
                )
                for i in range(count)
            ],
        )
        events = await drain(probe, count, timeout=30)
    return [e.message_id or "" for e in events]


async def sidecar_json(daemon: Daemon, path: str) -> tuple[int, Any]:
    assert daemon.sidecar is not None
    async with httpx.AsyncClient(timeout=5.0) as http:
        response = await http.get(f"http://127.0.0.1:{daemon.sidecar.port}{path}")
    return response.status_code, response.json()


def metric(daemon: Daemon, name: str, **labels: str) -> float:
    value = daemon.metrics.registry.get_sample_value(name, labels)
    return value or 0.0


async def dead_letters(prefix: str) -> list[Any]:
    async with DeadLetterQueue(RABBITMQ_URL, prefix) as dlq:
        found, _ = await dlq.browse()
    return found


def cli(config: Path | None, prefix: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2S_")}
    env.update({"RABBITMQ_URL": RABBITMQ_URL, "S2S_AMQP__PREFIX": prefix})
    return subprocess.run(
        [sys.executable, "-m", "s2s_daemon", *args, *(["--config", str(config)] if config else [])],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def config_file(tmp_path: Path, settings: Settings) -> Path:
    """The settings as a config file for the CLI (secrets revealed: they are the test's)."""
    values = settings.model_dump(mode="json", by_alias=True, exclude={"rabbitmq_url", "redis_url", "mongodb_uri"})
    values["mongodb_uri"] = settings.mongodb_uri.get_secret_value() if settings.mongodb_uri else None
    for name, sub in settings.subscriptions.items():
        values["subscriptions"][name]["secrets"] = [s.get_secret_value() for s in sub.secrets]
    for name, source in settings.webhooks.items():
        values["webhooks"][name]["secrets"] = [s.get_secret_value() for s in source.secrets]
    values.pop("admin", None)
    path = tmp_path / "s2s.yaml"
    path.write_text(yaml.safe_dump(values))
    return path


async def test_every_event_is_delivered_signed_by_every_key(
    run_id: str, make_settings: SettingsFactory, cleanup_namespace: None, drop_subscription_queues: list[Settings]
) -> None:
    """Each event reaches the partner once, with webhook-id = the event id, signed by the old and new v1 secrets and
    the v1a key at once (a rotation period: each verifies alone); an endpoint that never answers, on the same events,
    delays nothing;
    the daemon's own receiver verifies a v1a-only sender; the delivery log and the metrics say what happened."""
    partner = WebhookReceiver({"old": OLD, "new": NEW}, {"ed25519": ED_PUBLIC})
    await partner.start()
    # an endpoint that accepts connections and never answers: every attempt to it runs into the timeout
    silent = await asyncio.start_server(_never_answer, "127.0.0.1", 0)
    silent_port = silent.sockets[0].getsockname()[1]
    port = free_port()
    settings = make_settings(
        http={"host": "127.0.0.1", "port": port},
        delivery=DELIVERY,
        subscriptions={
            "partner": subscription(partner.url, [OLD, NEW, ED_SECRET]),
            "dead": subscription(f"http://127.0.0.1:{silent_port}/never-answers", [NEW]),
            "self": subscription(f"http://127.0.0.1:{port}/api/webhooks/self", [ED_SECRET]),
        },
        webhooks={"self": {"scheme": "standard-webhooks", "secrets": [ED_PUBLIC]}},
    )
    drop_subscription_queues.append(settings)
    count = 12
    try:
        async with running(settings) as daemon:
            loop_conn, loop_probe = await bind_probe_queue(f"{run_id}.events", "webhook.self.#")
            async with loop_conn:
                ids = await send_commands(run_id, count)
                await wait_for(lambda: len(partner.deliveries) >= count, timeout=30)
                looped = await drain(loop_probe, count, timeout=30)
            assert sorted(partner.ids()) == sorted(ids)
            assert partner.unverified == 0
            assert {d.verified_by for d in partner.deliveries} == {frozenset({"old", "new", "ed25519"})}
            assert all(d.json()["id"] == d.webhook_id for d in partner.deliveries)
            # the daemon's receiver verified the v1a-only sender: every event came back as webhook.self.<type>
            assert len(looped) == count
            # counted and logged after the endpoint answered: a moment after the receiver counted
            await wait_for(lambda: metric(daemon, "s2s_webhooks_total", service="self", result="accepted") == count)
            await wait_for(
                lambda: (
                    metric(daemon, "s2s_webhook_deliveries_total", subscription="partner", outcome="delivered") == count
                )
            )
            assert metric(daemon, "s2s_webhook_delivery_duration_seconds_count", subscription="partner") == count
            await wait_for(lambda: _logged(daemon, ids[0], "partner", "delivered"))
            status, body = await sidecar_json(daemon, f"/api/deliveries/{ids[0]}")
            assert status == 200
            by_name = {d["subscription"]: d for d in body["deliveries"]}
            assert [a["status_code"] for a in by_name["partner"]["attempts"]] == [200]
            await wait_for(
                lambda: metric(daemon, "s2s_webhook_deliveries_total", subscription="dead", outcome="retrying")
            )
            status, body = await sidecar_json(daemon, f"/api/deliveries/{ids[0]}")
            dead = {d["subscription"]: d for d in body["deliveries"]}.get("dead")
            if dead is not None:  # attempted by now unless the breaker refused it first
                assert dead["status"] == "retrying"
                assert dead["last_status_code"] is None
                assert "timed out" in dead["last_error"]
            status, body = await sidecar_json(daemon, "/api/subscriptions")
            assert {s["name"]: s["disabled"] for s in body["subscriptions"]} == {
                "partner": False,
                "dead": False,
                "self": False,
            }
            status, _ = await sidecar_json(daemon, f"/api/deliveries/{uuid.uuid4()}")
            assert status == 404
            _, board = await sidecar_json(daemon, "/api/status")
            rows = {row["name"]: row for row in board["downstreams"]}
            assert rows["subscriptions.partner"]["breaker"]["state"] == "closed"
            assert rows["subscriptions.partner"]["queue_depth"] == 0
    finally:
        await partner.stop()
        silent.close()


async def _never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(Exception):
        await reader.read()  # until the client gives up and closes
    writer.close()


async def test_nothing_is_lost_while_the_receiver_is_down(
    run_id: str, make_settings: SettingsFactory, cleanup_namespace: None, drop_subscription_queues: list[Settings]
) -> None:
    """Events sent while the endpoint is down all arrive once it is back; any repeat is a re-delivery of the same
    webhook-id with the same body."""
    partner = WebhookReceiver({"new": NEW})
    settings = make_settings(delivery=DELIVERY, subscriptions={"partner": subscription(partner.url, [NEW])})
    drop_subscription_queues.append(settings)
    count = 20
    async with running(settings) as daemon:
        ids = await send_commands(run_id, count)
        # down for a while: as many refused attempts (or parks behind the open breaker) as events, then it returns
        await wait_for(
            lambda: metric(daemon, "s2s_webhook_deliveries_total", subscription="partner", outcome="retrying") >= count,
            timeout=30,
        )
        await partner.start()
        try:
            await wait_for(lambda: set(partner.ids()) >= set(ids), timeout=60)
        finally:
            await partner.stop()
        assert set(partner.ids()) == set(ids)
        bodies: dict[str, bytes] = {}
        for delivery in partner.deliveries:
            assert bodies.setdefault(delivery.webhook_id, delivery.body) == delivery.body
        print(f"\n{count} events, {len(partner.deliveries)} deliveries after the outage")
        await wait_for(
            lambda: (
                metric(daemon, "s2s_webhook_deliveries_total", subscription="partner", outcome="delivered")
                == len(partner.deliveries)
            )
        )


async def test_retry_after_is_honoured(
    run_id: str, make_settings: SettingsFactory, cleanup_namespace: None, drop_subscription_queues: list[Settings]
) -> None:
    """A 503 with Retry-After: 4 postpones the next attempt by at least 4 s, though the schedule says 1 s."""
    partner = WebhookReceiver({"new": NEW}, status=503, retry_after="4")
    await partner.start()
    settings = make_settings(delivery=DELIVERY, subscriptions={"partner": subscription(partner.url, [NEW])})
    drop_subscription_queues.append(settings)
    try:
        async with running(settings):
            [event_id] = await send_commands(run_id, 1)
            await wait_for(lambda: len(partner.deliveries) >= 1, timeout=20)
            partner.status = 200
            await wait_for(lambda: partner.accepted(), timeout=30)
        first, second = partner.deliveries[0], partner.deliveries[1]
        assert first.webhook_id == second.webhook_id == event_id
        assert second.at - first.at >= 4.0
        assert second.timestamp >= first.timestamp + 4  # signed afresh for the later attempt
    finally:
        await partner.stop()


async def test_exhausted_retries_dead_letter_with_the_reason(
    run_id: str, make_settings: SettingsFactory, cleanup_namespace: None, drop_subscription_queues: list[Settings]
) -> None:
    """An endpoint that keeps answering 500 gets exactly the schedule's attempts, then the delivery is in the DLQ as
    retries-exhausted, and the delivery log lists every attempt."""
    partner = WebhookReceiver({"new": NEW}, status=500)
    await partner.start()
    sub = subscription(partner.url, [NEW]) | {"retry_schedule": [1, 1]}
    settings = make_settings(delivery=DELIVERY, subscriptions={"partner": sub})
    drop_subscription_queues.append(settings)
    try:
        async with running(settings) as daemon:
            [event_id] = await send_commands(run_id, 1)
            [letter] = await wait_for(lambda: dead_letters(run_id), timeout=30)
            assert (letter.reason, letter.subscription) == ("retries-exhausted", "partner")
            assert partner.ids() == [event_id] * 3
            await wait_for(lambda: _logged(daemon, event_id, "partner", "dead-lettered"))
            _, body = await sidecar_json(daemon, f"/api/deliveries/{event_id}")
            [entry] = body["deliveries"]
            assert entry["status"] == "dead-lettered"
            assert [a["status_code"] for a in entry["attempts"]] == [500, 500, 500]
            await wait_for(
                lambda: metric(daemon, "s2s_webhook_deliveries_total", subscription="partner", outcome="exhausted") == 1
            )
    finally:
        await partner.stop()


async def test_4xx_dead_letters_at_once_and_replays_to_the_endpoint(
    run_id: str,
    make_settings: SettingsFactory,
    cleanup_namespace: None,
    drop_subscription_queues: list[Settings],
    tmp_path: Path,
) -> None:
    """A 400 is not retried: the delivery is in the DLQ with the reason after one attempt; ``dlq replay`` sends it to
    this endpoint again with the same webhook-id."""
    partner = WebhookReceiver({"new": NEW}, status=400)
    await partner.start()
    settings = make_settings(delivery=DELIVERY, subscriptions={"partner": subscription(partner.url, [NEW])})
    drop_subscription_queues.append(settings)
    try:
        async with running(settings) as daemon:
            [event_id] = await send_commands(run_id, 1)
            letters = await wait_for(lambda: dead_letters(run_id), timeout=20)
            [letter] = letters
            assert (letter.reason, letter.subscription, letter.routing_key) == (
                "rejected-by-endpoint",
                "partner",
                "service-a.create-resource.succeeded",
            )
            assert "400" in (letter.detail or "")
            assert partner.ids() == [event_id]  # one attempt, no retry
            await wait_for(lambda: _logged(daemon, event_id, "partner", "dead-lettered"))

            partner.status = 200
            replay = await asyncio.to_thread(
                cli, None, run_id, "dlq", "replay", "--filter", "reason=rejected-by-endpoint", "--json"
            )
            assert replay.returncode == 0, replay.stderr
            await wait_for(lambda: partner.accepted(), timeout=20)
            assert partner.ids() == [event_id, event_id]
            assert await dead_letters(run_id) == []
    finally:
        await partner.stop()


async def test_410_disables_the_subscription_until_enabled(
    run_id: str,
    make_settings: SettingsFactory,
    cleanup_namespace: None,
    drop_subscription_queues: list[Settings],
    tmp_path: Path,
) -> None:
    """After a 410 the endpoint receives nothing more, across a restart; its events wait in its queue and arrive
    once ``s2s-daemon subscriptions enable`` turns it back on."""
    partner = WebhookReceiver({"new": NEW}, status=410)
    await partner.start()
    settings = make_settings(delivery=DELIVERY, subscriptions={"partner": subscription(partner.url, [NEW])})
    drop_subscription_queues.append(settings)
    queue = f"{run_id}.subscription.partner"
    try:
        async with running(settings) as daemon:
            [gone] = await send_commands(run_id, 1)
            [letter] = await wait_for(lambda: dead_letters(run_id), timeout=20)
            assert letter.reason == "endpoint-gone"
            _, body = await sidecar_json(daemon, "/api/subscriptions")
            assert body["subscriptions"][0]["disabled"] is True
            assert metric(daemon, "s2s_webhook_endpoint_disabled", subscription="partner") == 1
            partner.status = 200
            waiting = await send_commands(run_id, 3)
            await wait_for(lambda: _depth_is(queue, 3), timeout=20)
        assert partner.ids() == [gone]

        async with running(settings) as daemon:  # the state survives a restart
            _, body = await sidecar_json(daemon, "/api/subscriptions")
            assert body["subscriptions"][0]["disabled"] is True
            await wait_for(lambda: _no_consumer(queue), timeout=10)
            assert await queue_depth(queue) == 3
            assert partner.ids() == [gone]

            config = config_file(tmp_path, settings)
            listed = await asyncio.to_thread(cli, config, run_id, "subscriptions", "list")
            assert "DISABLED" in listed.stdout, listed.stderr
            enabled = await asyncio.to_thread(cli, config, run_id, "subscriptions", "enable", "partner")
            assert enabled.returncode == 0, enabled.stderr
            await wait_for(lambda: set(partner.ids()) >= set(waiting), timeout=20)
            assert sorted(partner.ids()) == sorted([gone, *waiting])
            assert metric(daemon, "s2s_webhook_endpoint_disabled", subscription="partner") == 0
            disabled = await asyncio.to_thread(cli, config, run_id, "subscriptions", "disable", "partner")
            assert disabled.returncode == 0, disabled.stderr
            await wait_for(lambda: metric(daemon, "s2s_webhook_endpoint_disabled", subscription="partner") == 1)
            await wait_for(lambda: _no_consumer(queue), timeout=10)
    finally:
        await partner.stop()


async def _logged(daemon: Daemon, event_id: str, subscription: str, status: str) -> bool:
    """The delivery log says ``status`` for the event's delivery to ``subscription`` (it is written after the
    answer or the dead-letter publish, so a moment after the receiver or the DLQ saw it)."""
    code, body = await sidecar_json(daemon, f"/api/deliveries/{event_id}")
    return code == 200 and any(d["subscription"] == subscription and d["status"] == status for d in body["deliveries"])


async def _depth_is(queue: str, depth: int) -> bool:
    return await queue_depth(queue) == depth


async def _no_consumer(queue: str) -> bool:
    return await consumer_count(queue) == 0


def test_public_key_command_prints_the_receivers_key(tmp_path: Path) -> None:
    """``s2s-daemon subscriptions public-key`` prints the whpk_ of the subscription's whsk_ key, nothing secret."""
    config = tmp_path / "s2s.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "subscriptions": {
                    "partner": {"url": "https://partner.example/hooks", "events": ["#"], "secrets": [NEW, ED_SECRET]}
                }
            }
        )
    )
    printed = cli(config, "unused", "subscriptions", "public-key", "partner")
    assert (printed.returncode, printed.stdout.split()) == (0, [ED_PUBLIC])
    unknown = cli(config, "unused", "subscriptions", "public-key", "nobody")
    assert unknown.returncode == 1
    assert "unknown subscription 'nobody'" in unknown.stdout
