"""Ack only after the outbox write returned: a MongoDB outage never loses or double-applies a command."""

from __future__ import annotations

import asyncio
import uuid

import orjson
import pytest
from faststream.rabbit.message import RabbitMessage

from s2s_daemon.app import Daemon
from s2s_daemon.local import EmbeddedMongo
from s2s_daemon.outbox.record import OutboxRecord
from tests.conftest import DemoServices
from tests.support import Outgoing, pika_send, wait_for

pytestmark = pytest.mark.integration


async def test_ack_happens_after_outbox_write(
    daemon: Daemon, demo: DemoServices, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per command, the order of effects is: downstream call, outbox write returned, then AMQP ack."""
    order: list[str] = []
    assert daemon.outbox is not None
    real_write = daemon.outbox.write

    async def recording_write(record: OutboxRecord) -> object:
        order.append("write-start")
        result = await real_write(record)
        order.append("write-returned")
        return result

    real_ack = RabbitMessage.ack

    async def recording_ack(self: RabbitMessage, *args: object, **kwargs: object) -> None:
        order.append("ack")
        await real_ack(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(daemon.outbox, "write", recording_write)
    monkeypatch.setattr(RabbitMessage, "ack", recording_ack)
    command = Outgoing("service-a.create-resource", b'{"name": "o"}', message_id=uuid.uuid4().hex)
    await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
    assert order[:3] == ["write-start", "write-returned", "ack"]
    assert demo.a.calls == 1


async def test_mongo_outage_mid_call_loses_nothing_and_applies_once(
    make_settings, cleanup_namespace: None, demo: DemoServices, tmp_path, run_id: str
) -> None:
    """MongoDB dies while the downstream call is in flight: no ack, no reply; after restart exactly one effect."""
    mongo = EmbeddedMongo(tmp_path / "mongo").start()
    try:
        settings = make_settings(mongodb_uri=mongo.uri, idempotency={"lease_seconds": 2.0})
        async with Daemon(settings) as daemon:
            demo.a.faults.latency_ms = 1500
            key = uuid.uuid4().hex
            command = Outgoing("service-a.create-resource", orjson.dumps({"name": "m"}), message_id=key)
            send = asyncio.create_task(
                pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1, timeout=40)
            )
            await wait_for(lambda: demo.a.calls_by_key[key] >= 1)
            mongo.kill()
            await asyncio.sleep(4.5)  # longer than the client's 3 s server selection: the write fails
            demo.a.faults.latency_ms = 0
            mongo = EmbeddedMongo(tmp_path / "mongo", port=mongo.port).start()
            [reply] = await send
        body = reply.json()
        assert body["status"] == "succeeded"
        assert demo.a.effects == 1, "the retried call carried the same Idempotency-Key"
        assert demo.a.calls_by_key[key] >= 2, "the outage forced a second call after the lease expired"
    finally:
        mongo.stop()
