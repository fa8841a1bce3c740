"""Crash consistency: SIGKILL the daemon process at each injection point, over many trials.

Counters (Jepsen-style): sent, replied (distinct keys), lost, duplicated replies, downstream effects vs
distinct keys, outbox documents left unpublished. Trials per point: S2S_CRASH_TRIALS (default 50).
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import random
import time
import uuid
from typing import Any

import aio_pika
import orjson
import pytest
from pymongo import AsyncMongoClient

from tests.conftest import DemoServices
from tests.crashproc import CRASH_POINTS, run_daemon
from tests.support import RABBITMQ_URL, wait_for

pytestmark = pytest.mark.integration

TRIALS = int(os.environ.get("S2S_CRASH_TRIALS", "50"))


def _context() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    # Children fork from a server that already imported the daemon: a restart costs milliseconds, not an import.
    ctx.set_forkserver_preload(["s2s_daemon.app", "tests.crashproc"])
    return ctx


@pytest.mark.timeout(300)
@pytest.mark.parametrize("point", CRASH_POINTS)
async def test_sigkill_at_injection_point_loses_nothing_and_applies_once(
    point: str, make_settings, cleanup_namespace: None, demo: DemoServices, mongo_server, run_id: str
) -> None:
    """SIGKILL at the point, TRIALS times, under load: 0 lost, 0 duplicate effects, nothing left unpublished."""
    settings = make_settings(
        amqp={"prefetch": 10, "delay_ladder": [1, 2, 5]},
        idempotency={"lease_seconds": 1.0},
        outbox={"lease_seconds": 1.0, "poll_interval": 0.2},
    )
    values = settings.model_dump(mode="json", by_alias=True)
    for secret in ("rabbitmq_url", "redis_url", "mongodb_uri"):
        values[secret] = getattr(settings, secret).get_secret_value()
    ctx = _context()
    sent = max(200, TRIALS * 4)
    replies: dict[str, int] = {}

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        reply_queue = await channel.declare_queue(exclusive=True)

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                body = orjson.loads(message.body)
                replies[body["command_id"]] = replies.get(body["command_id"], 0) + 1

        await reply_queue.consume(on_reply)

        # the first daemon declares the topology; start it clean, then publish everything
        first = ctx.Process(target=run_daemon, args=(values, None, 0))
        first.start()
        await wait_for(lambda: _queue_exists(settings.amqp.prefix), timeout=20)
        first.terminate()
        await asyncio.to_thread(first.join, 30)

        keys = [uuid.uuid4().hex for _ in range(sent)]
        exchange = await channel.get_exchange(f"{settings.amqp.prefix}.commands")
        for key in keys:
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps({"name": key[:8]}),
                    message_id=key,
                    correlation_id=key,
                    reply_to=reply_queue.name,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="service-a.create-resource",
            )

        crashes = 0
        trial_seconds: list[float] = []
        for _ in range(TRIALS):
            started = time.monotonic()
            proc = ctx.Process(target=run_daemon, args=(values, point, random.randint(1, 3)))
            proc.start()
            await asyncio.to_thread(proc.join, 30)
            if proc.exitcode is None:  # no traffic left to crash on
                proc.terminate()
                await asyncio.to_thread(proc.join, 30)
                break
            assert proc.exitcode == -9, f"daemon exited with {proc.exitcode}, not by the injected SIGKILL"
            crashes += 1
            trial_seconds.append(time.monotonic() - started)

        final = ctx.Process(target=run_daemon, args=(values, None, 0))
        final.start()
        try:
            with contextlib.suppress(AssertionError):
                await wait_for(lambda: len(replies) >= sent, timeout=90, interval=0.2)
            unpublished = await _wait_outbox_drained(mongo_server.uri, settings.outbox.database)
            dlq = await channel.declare_queue(f"{settings.amqp.prefix}.dlq", passive=True)
            dead_lettered = dlq.declaration_result.message_count
        finally:
            final.terminate()
            await asyncio.to_thread(final.join, 30)

    lost = sent - len(set(replies) & set(keys))
    duplicated_replies = sum(n - 1 for n in replies.values())
    effects, distinct = demo.a.effects, len(demo.a.store.by_key)
    print(
        f"\n[{point}] crashes={crashes} sent={sent} replied={len(replies)} lost={lost} "
        f"duplicated_replies={duplicated_replies} effects={effects} distinct_keys={distinct} "
        f"calls={demo.a.calls} unpublished={unpublished} dead_lettered={dead_lettered} "
        f"mean_trial_s={sum(trial_seconds) / max(1, len(trial_seconds)):.2f}"
    )
    assert crashes >= min(TRIALS, 10)
    assert dead_lettered == 0
    assert lost == 0
    assert effects == distinct == sent, "exactly one downstream effect per key"
    assert unpublished == 0


def _queue_exists(prefix: str) -> Any:
    async def check() -> bool:
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel()
            try:
                await channel.declare_queue(f"{prefix}.service-a.commands", passive=True)
            except aio_pika.exceptions.ChannelClosed:
                return False
            return True

    return check()


async def _wait_outbox_drained(uri: str, database: str) -> int:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    try:
        collection = client[database]["outbox"]

        async def left() -> int:
            return await collection.count_documents({"status": {"$ne": "sent"}})

        with contextlib.suppress(AssertionError):
            await wait_for(lambda: _is_zero(left()), timeout=30, interval=0.2)
        return await left()
    finally:
        await client.close()


async def _is_zero(value: Any) -> bool:
    return (await value) == 0
