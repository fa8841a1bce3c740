"""Bad input is dead-lettered with a clear reason and a log line; nothing is lost; the daemon keeps going."""

from __future__ import annotations

import logging
import uuid

import aio_pika
import orjson
import pytest

from s2s_daemon.app import Daemon
from tests.conftest import DemoServices
from tests.support import RABBITMQ_URL, Outgoing, drain, pika_send

pytestmark = pytest.mark.integration


async def _dlq(daemon: Daemon, expect: int) -> list:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(daemon.topology.dlq_name, passive=True)
        return await drain(queue, expect)


@pytest.mark.parametrize(
    ("routing_key", "body", "message_id", "reason", "detail_part"),
    [
        ("service-a.create-resource", b"{not json", "k-json", "invalid-json", "not JSON"),
        ("service-a.create-resource", b'{"name": ""}', "k-schema", "schema-violation", "name"),
        (
            "service-a.create-resource",
            b'{"nom": "x"}',
            "k-schema2",
            "schema-violation",
            "'name' is a required",
        ),
        ("service-a.create-resource", b'{"name": "x"}', None, "missing-idempotency-key", "message_id"),
        (
            "service-a.delete-everything",
            b'{"name": "x"}',
            "k-route",
            "unknown-route",
            "service-a.delete-everything",
        ),
        ("nobody.listens", b'{"name": "x"}', "k-unrouted", "unroutable", "nobody.listens"),
    ],
)
async def test_bad_command_dead_lettered_with_reason(
    daemon: Daemon,
    demo: DemoServices,
    caplog: pytest.LogCaptureFixture,
    routing_key: str,
    body: bytes,
    message_id: str | None,
    reason: str,
    detail_part: str,
) -> None:
    """Each kind of bad command lands in the DLQ unchanged with x-s2s-reason, is logged, and a good one still works."""
    caplog.set_level(logging.WARNING, logger="s2s.consumer")
    bad = Outgoing(routing_key, body, message_id=message_id, correlation_id="corr-bad")
    replies = await pika_send(daemon.topology.commands_exchange_name, [bad], expect_replies=1, timeout=10)

    [dead] = await _dlq(daemon, 1)
    assert dead.body == body
    assert dead.headers["x-s2s-reason"] == reason
    assert detail_part in dead.headers["x-s2s-detail"]
    assert dead.headers["x-s2s-routing-key"] == routing_key
    assert dead.correlation_id == "corr-bad"
    assert demo.a.calls == 0

    assert replies, "the producer asked for a reply and gets a failed one of kind 'invalid'"
    assert replies[0].json()["error"]["kind"] == "invalid"
    assert replies[0].correlation_id == "corr-bad"

    assert any(
        isinstance(r.msg, dict) and r.msg.get("event") == "command.dead_lettered" and r.msg.get("reason") == reason
        for r in caplog.records
    )

    good = Outgoing("service-a.create-resource", b'{"name": "after"}', message_id=uuid.uuid4().hex)
    [reply] = await pika_send(daemon.topology.commands_exchange_name, [good], expect_replies=1)
    assert reply.json()["status"] == "succeeded"


async def test_oversize_command_dead_lettered(make_settings, cleanup_namespace: None, demo: DemoServices) -> None:
    """A body over amqp.max_body_bytes is dead-lettered as too-large without a downstream call."""
    async with Daemon(make_settings(amqp={"max_body_bytes": 1024})) as daemon:
        big = Outgoing(
            "service-a.create-resource",
            orjson.dumps({"name": "x" * 2000}),
            message_id="k-big",
            want_reply=False,
        )
        await pika_send(daemon.topology.commands_exchange_name, [big])
        [dead] = await _dlq(daemon, 1)
    assert dead.headers["x-s2s-reason"] == "too-large"
    assert demo.a.calls == 0


async def test_idempotency_key_header_is_used_when_no_message_id(daemon: Daemon, demo: DemoServices) -> None:
    """The 'idempotency-key' header is the key when message_id is absent; the downstream sees it."""
    command = Outgoing(
        "service-a.create-resource",
        b'{"name": "h"}',
        headers={"idempotency-key": "hdr-key-1"},
        correlation_id="c",
    )
    [reply] = await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
    assert reply.json()["command_id"] == "hdr-key-1"
    assert demo.a.calls_by_key["hdr-key-1"] == 1
