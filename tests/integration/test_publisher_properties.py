"""The relay's reply and event go through aiormq directly (no FastStream publish layer): on a real RabbitMQ they
arrive with the properties FastStream's ``broker.publish`` gave them before, confirmed; a broker that is not
connected is ``DependencyUnavailable`` (the relay then charges the record no attempt)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
import pytest
from faststream.rabbit import RabbitBroker
from faststream.rabbit.schemas import Channel

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.messaging import contracts as c
from s2s_daemon.messaging.publisher import AmqpPublisher
from s2s_daemon.messaging.topology import Topology
from tests.outboxdocs import outbox_record

pytestmark = pytest.mark.integration

URL = "amqp://guest:guest@127.0.0.1:5672/"
APP_ID = "s2s-test"
# what a consumer sees of a message besides its body (the timestamp only as present or not)
FIELDS = ("content_type", "content_encoding", "delivery_mode", "correlation_id", "message_id", "type", "app_id",
          "reply_to", "priority", "expiration", "user_id", "headers")  # fmt: skip


def seen(message: aio_pika.abc.AbstractIncomingMessage) -> dict[str, Any]:
    got = {name: getattr(message, name) for name in FIELDS}
    got["timestamp"] = message.timestamp is not None
    got["body"] = message.body
    got["routing_key"] = message.routing_key
    return got


def broker() -> RabbitBroker:
    return RabbitBroker(URL, default_channel=Channel(publisher_confirms=True), app_id=APP_ID)


@dataclass
class Amqp:
    topology: Topology
    broker: RabbitBroker  # connected, as the daemon's
    channel: aio_pika.abc.AbstractChannel  # another connection's, to declare and consume
    events: aio_pika.abc.AbstractExchange


@pytest.fixture
async def amqp(run_id: str) -> AsyncIterator[Amqp]:
    topology = Topology(run_id, ("service-a",), 5, (1, 5, 30))
    connection = await aio_pika.connect(URL)
    ours = broker()
    async with connection, ours:
        await ours.connect()
        channel = await connection.channel()
        events = await channel.declare_exchange(topology.events_exchange_name, "topic", auto_delete=True)
        yield Amqp(topology, ours, channel, events)


async def test_reply_and_event_carry_what_faststream_gave_them(amqp: Amqp) -> None:
    topology, ours, channel, events = amqp.topology, amqp.broker, amqp.channel, amqp.events
    event_queue = await channel.declare_queue(exclusive=True)
    await event_queue.bind(events, "#")
    reply_queue = await channel.declare_queue(exclusive=True)
    record = outbox_record("k1", reply_to=reply_queue.name)

    await AmqpPublisher(ours, topology, APP_ID).publish_outbox_document(record)
    # the same messages through FastStream's publish, as the relay sent them before
    headers: dict[str, Any] = {c.H_CORRELATION_ID: record.correlation_id, **record.headers}
    await ours.publish(
        orjson.dumps(record.event), exchange=topology.events_exchange_name, routing_key=record.event_routing_key,
        correlation_id=record.correlation_id, message_id=record.event_id, message_type=record.event["type"],
        content_type="application/cloudevents+json", headers=headers, persist=True, mandatory=False,
    )  # fmt: skip
    await ours.publish(
        orjson.dumps(record.reply), exchange="", routing_key=reply_queue.name, correlation_id=record.correlation_id,
        message_id=record.event_id, content_type="application/json", headers=headers, persist=True,
        mandatory=False,
    )  # fmt: skip

    for queue in (event_queue, reply_queue):
        got = []
        async with queue.iterator(timeout=10) as messages:
            async for message in messages:
                got.append(seen(message))
                await message.ack()
                if len(got) == 2:
                    break
        direct, via_faststream = got
        assert direct == via_faststream
        assert direct["delivery_mode"] == aio_pika.DeliveryMode.PERSISTENT
        assert direct["app_id"] == APP_ID
        assert direct["timestamp"]


async def test_publishes_of_a_batch_are_all_confirmed_and_arrive_once(amqp: Amqp) -> None:
    """A relay batch's publishes are handed to aiormq without waiting for their writes: each one still waits
    for its own confirm, and every message arrives exactly once."""
    topology, ours, channel = amqp.topology, amqp.broker, amqp.channel
    reply_queue = await channel.declare_queue(exclusive=True)
    publisher = AmqpPublisher(ours, topology, APP_ID)
    records = [outbox_record(f"b{n}", reply_to=reply_queue.name) for n in range(200)]
    await asyncio.gather(*(publisher.publish_outbox_document(record) for record in records))
    keys = []
    async with reply_queue.iterator(timeout=10) as messages:
        async for message in messages:
            keys.append(str(message.correlation_id))
            await message.ack()
            if len(keys) == len(records):
                break
    assert sorted(keys) == sorted(record.correlation_id for record in records)
    await asyncio.sleep(0.2)
    left = await channel.declare_queue(reply_queue.name, passive=True)
    assert left.declaration_result.message_count == 0  # nothing published twice


async def test_a_broker_not_connected_is_dependency_unavailable(run_id: str) -> None:
    topology = Topology(run_id, ("service-a",), 5, (1, 5, 30))
    with pytest.raises(DependencyUnavailable):
        await AmqpPublisher(broker(), topology, APP_ID).publish_outbox_document(outbox_record("k2"))
