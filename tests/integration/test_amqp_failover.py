"""Failover between broker nodes: the first connect tries every node, a lost connection moves to the next node
and FastStream's consumers are restored there. Two "nodes" here are the shared RabbitMQ reached directly and
through a TCP proxy that the test stops; the 3-node cluster scenario (tests/chaos) stops real nodes."""

from __future__ import annotations

import asyncio
import uuid

import aio_pika
import pytest
from aio_pika.exceptions import AMQPConnectionError
from faststream import AckPolicy
from faststream.rabbit import RabbitQueue
from yarl import URL

from s2s_daemon.cli import preflight
from s2s_daemon.local import free_port
from s2s_daemon.messaging import ClusterRabbitBroker, FailoverConnection, NodeList, connect_failover, connect_first
from s2s_daemon.settings import load_settings
from tests.harness.chaos.proxy import FaultProxy
from tests.support import RABBITMQ_URL, wait_for

pytestmark = pytest.mark.integration

DEAD = f"amqp://guest:guest@127.0.0.1:{free_port()}/"


async def test_first_connect_skips_a_dead_node() -> None:
    """A node that refuses connections is skipped at start by every kind of connection."""
    nodes = NodeList([DEAD, RABBITMQ_URL], shuffle=False)
    robust = await connect_failover(nodes, timeout=2)
    plain = await connect_first(nodes, timeout=2)
    try:
        assert str(robust.url).startswith(RABBITMQ_URL.rstrip("/"))
        assert not plain.is_closed
    finally:
        await robust.close()
        await plain.close()


async def test_no_node_answers_names_every_node() -> None:
    """When every node is down the error names each of them, with the password masked."""
    other = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    with pytest.raises(AMQPConnectionError) as caught:
        await connect_first(NodeList([DEAD, other]), timeout=2)
    text = str(caught.value)
    assert DEAD.replace("guest@", "***@") in text
    assert other.replace("guest@", "***@") in text
    broker = ClusterRabbitBroker(NodeList([DEAD, other]), timeout=2, logger=None)
    with pytest.raises(AMQPConnectionError, match="no RabbitMQ node answered"):
        await broker.connect()


async def test_lost_node_fails_over_and_consumers_come_back() -> None:
    """The node the broker is on goes away: it reconnects to the next node and its consumer receives again."""
    proxy = await FaultProxy("127.0.0.1", 5672).start()
    through_proxy = f"amqp://guest:guest@127.0.0.1:{proxy.port}/"
    queue = f"failover-test-{uuid.uuid4().hex[:8]}"
    received: list[bytes] = []
    broker = ClusterRabbitBroker(
        NodeList([through_proxy, RABBITMQ_URL], shuffle=False), reconnect_interval=0.5, logger=None, apply_types=False
    )

    async def handle(message: aio_pika.IncomingMessage) -> None:
        received.append(message.body)

    # not auto-delete: the lost connection takes its consumer away, which would delete such a queue
    broker.subscriber(RabbitQueue(queue), ack_policy=AckPolicy.ACK, no_reply=True, decoder=lambda m: m)(handle)
    producer = await aio_pika.connect(RABBITMQ_URL)
    try:
        await broker.start()
        assert proxy.stats.connections >= 1  # connected through the first "node"
        channel = await producer.channel()
        await channel.default_exchange.publish(aio_pika.Message(b"before"), routing_key=queue)
        await wait_for(lambda: b"before" in received, 10)
        await proxy.stop()  # the node goes away: its connections close, new ones are refused
        connection = broker._connection
        assert isinstance(connection, FailoverConnection)
        await wait_for(lambda: connection.failovers >= 1 and connection.connected.is_set(), 20)
        assert str(connection.url).startswith(RABBITMQ_URL.rstrip("/"))
        # the consumer was re-created on the other node (no faststream#2758 loss)
        await wait_for(lambda: _consumers(channel, queue), 20)
        await channel.default_exchange.publish(aio_pika.Message(b"after"), routing_key=queue)
        await wait_for(lambda: b"after" in received, 20)
    finally:
        await broker.stop()
        cleanup = await producer.channel()
        await cleanup.queue_delete(queue)
        await producer.close()
        await proxy.stop()


async def _consumers(channel: aio_pika.abc.AbstractChannel, queue: str) -> bool:
    declared = await channel.declare_queue(queue, passive=True)
    await asyncio.sleep(0)
    return bool(declared.declaration_result.consumer_count)


def test_preflight_checks_every_node_and_the_sentinels() -> None:
    """Preflight passes when one broker node answers, names every node when none does, and checks the sentinels
    (not redis_url's host) when Redis is reached through Sentinel."""
    dead = [f"amqp://u:p@127.0.0.1:{free_port()}/" for _ in range(2)]
    sentinel = f"127.0.0.1:{free_port()}"
    settings = load_settings(
        rabbitmq_urls=[*dead, "amqp://guest:guest@127.0.0.1:5672/"],
        redis_sentinel={"addresses": [sentinel], "primary_name": "m"},
    )
    problems = preflight(settings)
    assert len(problems) == 1
    assert f"Redis is not reachable at {sentinel}" in problems[0]
    (rabbit,) = preflight(load_settings(rabbitmq_urls=dead))
    assert all(URL(u).authority.split("@")[1] in rabbit for u in dead)
