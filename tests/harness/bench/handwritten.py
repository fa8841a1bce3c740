"""The second reference: a straightforward hand-written aio-pika pipeline, run as its own process.

What a user might write instead of the daemon: consume a command (prefetch 100) from a quorum queue bound to
its own exchange -> Redis ``SET key NX PX`` on the command's message_id (already set: ack, no call, no reply;
the first delivery answered) -> the same HTTP call to the demo service-a with httpx (same body, same
Idempotency-Key header, same pool size as the FastStream reference) -> pymongo's async ``insert_one`` of a
small document -> a persistent reply to ``reply_to`` with the command's correlation_id, published on a
confirming channel and awaited -> ack (an exception rejects it without requeue). No event, no outbox, no dedupe
beyond ``SET NX``, no schema validation. On stop it logs how many documents it inserted and drops its database.

``python -m tests.harness.bench.handwritten --exchange X --queue Q --service-url URL --redis-url R --key-prefix P
--mongo-uri M --database D --ready-file F``
"""

from __future__ import annotations

import argparse
import logging
from datetime import UTC, datetime
from typing import Any

import aio_pika
import httpx
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage
from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection
from redis.asyncio import Redis

from tests.harness.bench.reference import reference_parser, run, service_client, stop_on_signal

log = logging.getLogger("bench.handwritten")
KEY_TTL_MS = 24 * 3600 * 1000


def build_parser() -> argparse.ArgumentParser:
    parser = reference_parser("python -m tests.harness.bench.handwritten", __doc__)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--key-prefix", required=True, help="prefix of the idempotency keys in Redis")
    parser.add_argument("--mongo-uri", required=True)
    parser.add_argument("--database", required=True, help="its own database; dropped on stop")
    return parser


class Pipeline:
    """One command through every step, in order; the message is acked only after its reply is confirmed."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        redis: Redis,
        collection: AsyncCollection[dict[str, Any]],
        replies: AbstractExchange,
        key_prefix: str,
    ) -> None:
        self.client = client
        self.redis = redis
        self.collection = collection
        self.replies = replies
        self.key_prefix = key_prefix

    async def handle(self, message: AbstractIncomingMessage) -> None:
        # process() acks on leaving the block and rejects (no requeue) on an exception, like FastStream's default
        async with message.process():
            key = message.message_id or ""
            if not await self.redis.set(f"{self.key_prefix}{key}", b"1", nx=True, px=KEY_TTL_MS):
                return
            response = await self.client.post(
                "/resource",
                content=message.body,
                headers={"idempotency-key": key, "content-type": "application/json"},
            )
            await self.collection.insert_one({"key": key, "status_code": response.status_code, "at": datetime.now(UTC)})
            reply = {
                "status": "succeeded" if response.is_success else "failed",
                "status_code": response.status_code,
                "body": response.json(),
            }
            if message.reply_to:
                # the channel confirms publishes, so this returns once the broker has the reply
                await self.replies.publish(
                    aio_pika.Message(
                        orjson.dumps(reply),
                        correlation_id=message.correlation_id,
                        content_type="application/json",
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key=message.reply_to,
                    mandatory=False,
                )


async def serve(args: argparse.Namespace) -> None:
    client = service_client(args)
    redis = Redis.from_url(args.redis_url)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(args.mongo_uri)
    collection = mongo[args.database]["results"]
    connection = await aio_pika.connect(args.url, timeout=10)
    try:
        consume_channel = await connection.channel()
        await consume_channel.set_qos(prefetch_count=args.prefetch)
        reply_channel = await connection.channel(publisher_confirms=True)
        exchange = await consume_channel.declare_exchange(args.exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await consume_channel.declare_queue(args.queue, durable=True, arguments={"x-queue-type": "quorum"})
        await queue.bind(exchange, routing_key="service-a.#")
        pipeline = Pipeline(client, redis, collection, reply_channel.default_exchange, args.key_prefix)

        stop = stop_on_signal()
        tag = await queue.consume(pipeline.handle)
        args.ready_file.write_text("ready\n")
        await stop.wait()
        await queue.cancel(tag)
        log.warning("inserted %d documents into %s", await collection.estimated_document_count(), args.database)
        await mongo.drop_database(args.database)
    finally:
        await connection.close()
        await client.aclose()
        await redis.aclose()
        await mongo.close()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    return run(serve, args)


if __name__ == "__main__":
    raise SystemExit(main())
