"""Helpers shared by integration tests: a pika producer (not our code), DLQ reading, polling."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
import pika

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
# The sidecar's own OpenAPI paths: what /openapi.json lists when the config exposes no route.
OWN_PATHS = {
    "/health",
    "/livez",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/status",
    "/api/status",
    "/api/commands/{command_id}",
    "/api/webhooks/{service}",
    "/api/deliveries/{event_id}",
    "/api/subscriptions",
    "/console",
    "/api/console/history",
    "/api/console/dlq",
    "/api/console/dlq/messages/{id}",
    "/api/console/dlq/replay",
    "/api/console/dlq/purge",
    "/api/console/jobs/{job_id}",
    "/api/console/outbox/dead",
    "/api/console/outbox/retry",
    "/api/console/commands/{command_id}",
}


async def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll until ``predicate()`` is truthy (awaiting it if needed); fail with a clear message otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@dataclass
class Outgoing:
    routing_key: str
    body: bytes
    message_id: str | None = None
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    want_reply: bool = True


@dataclass
class Received:
    body: bytes
    correlation_id: str | None
    message_id: str | None
    headers: dict[str, Any]
    routing_key: str

    def json(self) -> Any:
        return orjson.loads(self.body)


def _pika_exchange_run(exchange: str, messages: list[Outgoing], expect_replies: int, timeout: float) -> list[Received]:
    """Blocking: publish with pika (confirms on), then collect replies on an exclusive queue."""
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        reply_queue = channel.queue_declare(queue="", exclusive=True).method.queue
        for m in messages:
            channel.basic_publish(
                exchange=exchange,
                routing_key=m.routing_key,
                body=m.body,
                properties=pika.BasicProperties(
                    message_id=m.message_id,
                    correlation_id=m.correlation_id,
                    reply_to=reply_queue if m.want_reply else None,
                    content_type="application/json",
                    delivery_mode=2,
                    headers=m.headers or None,
                ),
            )
        replies: list[Received] = []
        deadline = time.monotonic() + timeout
        while len(replies) < expect_replies and time.monotonic() < deadline:
            method, props, body = channel.basic_get(reply_queue, auto_ack=True)
            if method is None:
                connection.sleep(0.02)
                continue
            replies.append(
                Received(body, props.correlation_id, props.message_id, props.headers or {}, method.routing_key)
            )
        return replies
    finally:
        connection.close()


async def pika_send(
    exchange: str, messages: list[Outgoing], expect_replies: int = 0, timeout: float = 15.0
) -> list[Received]:
    return await asyncio.to_thread(_pika_exchange_run, exchange, messages, expect_replies, timeout)


async def bind_probe_queue(exchange: str, routing_key: str) -> tuple[aio_pika.abc.AbstractConnection, Any]:
    """An exclusive queue bound to ``exchange`` (e.g. the events exchange) to observe what is published."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True, auto_delete=True)
    await queue.bind(exchange, routing_key=routing_key)
    return connection, queue


async def drain(queue: Any, expect: int, timeout: float = 15.0) -> list[Received]:
    """Take ``expect`` messages from an aio-pika queue (acking them), or fail after ``timeout``."""
    got: list[Received] = []
    deadline = time.monotonic() + timeout
    while len(got) < expect:
        message = await queue.get(fail=False, no_ack=True)
        if message is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(got)} of {expect} messages within {timeout}s")
            await asyncio.sleep(0.02)
            continue
        got.append(
            Received(
                message.body,
                message.correlation_id,
                message.message_id,
                dict(message.headers),
                message.routing_key,
            )
        )
    return got


async def queue_depth(name: str) -> int:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        queue = await channel.declare_queue(name, passive=True)
        return int(queue.declaration_result.message_count or 0)
