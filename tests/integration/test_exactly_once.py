"""Exactly-once effects across processes: duplicate deliveries to competing daemons, competing relays.

Daemons run as separate processes (forkserver children, ``tests.daemonproc``); the demo downstreams run in
the test's event loop and count calls and effects per Idempotency-Key. Every test prints its figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections import Counter, defaultdict
from typing import Any

import aio_pika
import orjson
import pytest
from pymongo import AsyncMongoClient

from s2s_daemon.local import EmbeddedMongo
from tests.conftest import DemoServices
from tests.daemonproc import (
    consumer_count,
    forkserver,
    running_daemons,
    settings_values,
    start_daemon,
    stop_daemons,
    wait_ready,
)
from tests.outboxdocs import EVENT_ROUTING_KEY, outbox_document
from tests.support import RABBITMQ_URL, wait_for

pytestmark = pytest.mark.integration

ROUTING_KEY = "service-a.create-resource"


class Collector:
    """Replies on one exclusive queue and events on another, kept as they arrive."""

    def __init__(self) -> None:
        self.replies: list[tuple[str | None, str | None, dict[str, Any]]] = []  # correlation id, message id, body
        self.events: list[tuple[str | None, dict[str, Any]]] = []  # message id, envelope

    async def on_reply(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.replies.append((message.correlation_id, message.message_id, orjson.loads(message.body)))

    async def on_event(self, message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            self.events.append((message.message_id, orjson.loads(message.body)))


@pytest.mark.timeout(120)
async def test_three_copies_to_three_daemons_one_effect_one_event_one_answer_per_copy(
    make_settings, cleanup_namespace: None, demo: DemoServices
) -> None:
    """Each key published 3x at once (same message_id, same payload, each copy with its own reply_to answer
    wanted) while 3 daemon processes compete: per key exactly 1 downstream call and effect, exactly 1 event,
    and exactly 1 answer per copy, all 3 with the same result and the same message_id."""
    keys_n, copies = 200, 3
    settings = make_settings(amqp={"prefetch": 20, "delay_ladder": [1, 2, 5]}, idempotency={"lease_seconds": 10.0})
    values = settings_values(settings)
    prefix = settings.amqp.prefix
    demo.a.faults.latency_ms = 20  # widen the in-flight window so copies really overlap
    collector = Collector()

    async with running_daemons(forkserver(), values, 3) as daemons:
        for d in daemons:
            await wait_ready(d)
        await wait_for(lambda: _has_consumers(f"{prefix}.service-a.commands", 3), timeout=20)

        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            reply_queue = await channel.declare_queue(exclusive=True)
            await reply_queue.consume(collector.on_reply)
            event_queue = await channel.declare_queue(exclusive=True)
            await event_queue.bind(f"{prefix}.events", routing_key="service-a.#")
            await event_queue.consume(collector.on_event)
            exchange = await channel.get_exchange(f"{prefix}.commands")

            keys = [uuid.uuid4().hex for _ in range(keys_n)]
            started = time.monotonic()
            # copies of one key back to back: the broker hands them to different consumers round robin
            await asyncio.gather(
                *(
                    exchange.publish(
                        aio_pika.Message(
                            orjson.dumps({"name": key[:8]}),
                            message_id=key,
                            correlation_id=f"{key}-{copy}",
                            reply_to=reply_queue.name,
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=ROUTING_KEY,
                    )
                    for key in keys
                    for copy in range(copies)
                )
            )
            with contextlib.suppress(AssertionError):  # the figures and assertions below say what is missing
                await wait_for(lambda: len(collector.replies) >= keys_n * copies, timeout=60, interval=0.1)
            all_answered = time.monotonic() - started
            await asyncio.sleep(3.0)  # anything extra (a second answer, a second event) would arrive by now

        in_flight = sum([await d.metric("s2s_dedupe_hits_total", state="in-flight") for d in daemons])
        done = sum([await d.metric("s2s_dedupe_hits_total", state="done") for d in daemons])
        backstop = sum([await d.metric("s2s_dedupe_hits_total", state="backstop") for d in daemons])
        calls_per_process = [await d.metric("s2s_downstream_calls_total") for d in daemons]

    answers_per_copy = Counter(corr for corr, _, _ in collector.replies)
    by_key: dict[str, list[tuple[str | None, dict[str, Any]]]] = defaultdict(list)
    for _, message_id, body in collector.replies:
        by_key[body["command_id"]].append((message_id, body))
    events_per_key = Counter(envelope["subject"] for _, envelope in collector.events)
    event_ids = {envelope["subject"]: message_id for message_id, envelope in collector.events}

    print(
        f"\n[duplicates] keys={keys_n} copies={keys_n * copies} answers={len(collector.replies)} "
        f"events={len(collector.events)} calls={demo.a.calls} effects={demo.a.effects} "
        f"dedupe in-flight={in_flight:.0f} done={done:.0f} backstop={backstop:.0f} "
        f"calls_per_process={[int(c) for c in calls_per_process]} all_answered_s={all_answered:.1f}"
    )
    assert set(demo.a.calls_by_key) == set(keys)
    assert set(demo.a.calls_by_key.values()) == {1}, "never a second (or parallel) call for a key"
    assert demo.a.effects == keys_n
    assert len(answers_per_copy) == keys_n * copies
    assert set(answers_per_copy.values()) == {1}, "every copy that asked got exactly one answer"
    assert set(by_key) == set(keys)
    for key, answers in by_key.items():
        assert len(answers) == copies
        assert len({orjson.dumps(body) for _, body in answers}) == 1, "every answer carries the stored reply"
        assert answers[0][1]["status"] == "succeeded"
        assert {message_id for message_id, _ in answers} == {event_ids[key]}, "one message_id per key"
    assert events_per_key == dict.fromkeys(keys, 1), "exactly one event per key"
    assert in_flight + done + backstop >= keys_n * (copies - 1)
    assert sum(1 for c in calls_per_process if c > 0) >= 2, "the calls were spread over the processes"


async def _has_consumers(queue: str, n: int) -> bool:
    return await consumer_count(queue) >= n


# two relays on one outbox -----------------------------------------------------------------------------------
RELAY_DOCS = 2000


async def _insert_outbox(mongo_uri: str, database: str, n: int) -> list[dict[str, Any]]:
    docs = [outbox_document(f"doc{i:05d}", created_at=int(time.time() * 1000)) for i in range(n)]
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        for start in range(0, n, 500):
            await client[database]["outbox"].insert_many(docs[start : start + 500])
    finally:
        await client.close()
    return docs


async def _outbox_docs(mongo_uri: str, database: str, query: dict[str, Any]) -> list[dict[str, Any]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    try:
        return await client[database]["outbox"].find(query).to_list()
    finally:
        await client.close()


async def _relay_events(prefix: str) -> tuple[aio_pika.abc.AbstractConnection, list[tuple[str, str]]]:
    """Bind a probe queue to the events exchange; (message_id, app_id) of every event lands in the list."""
    seen: list[tuple[str, str]] = []
    connection = await aio_pika.connect(RABBITMQ_URL)
    channel = await connection.channel()
    queue = await channel.declare_queue(exclusive=True)
    await queue.bind(f"{prefix}.events", routing_key=EVENT_ROUTING_KEY)

    async def on_event(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        async with message.process():
            seen.append((message.message_id or "", message.app_id or ""))

    await queue.consume(on_event)
    return connection, seen


@pytest.mark.timeout(120)
async def test_two_relay_processes_publish_each_document_once(
    make_settings, cleanup_namespace: None, mongo_server: EmbeddedMongo
) -> None:
    """Two relays (two processes) claim batches from one outbox: every document is published exactly once,
    both relays take part, and none is left unsent."""
    settings = make_settings(outbox={"batch_size": 100, "poll_interval": 0.1, "lease_seconds": 5.0})
    values, prefix, database = settings_values(settings), settings.amqp.prefix, settings.outbox.database
    ctx = forkserver()
    daemons = [
        start_daemon(ctx, values, service_name="relay-1"),
        start_daemon(ctx, values, service_name="relay-2"),
    ]
    try:
        for d in daemons:
            await wait_ready(d)
        connection, seen = await _relay_events(prefix)
        async with connection:
            started = time.monotonic()
            docs = await _insert_outbox(mongo_server.uri, database, RELAY_DOCS)
            await wait_for(lambda: len(seen) >= RELAY_DOCS, timeout=60, interval=0.1)
            drained = time.monotonic() - started
            await asyncio.sleep(1.5)  # room for a double publish to show up
        unsent = await _outbox_docs(mongo_server.uri, database, {"status": {"$ne": "sent"}})
    finally:
        await stop_daemons(daemons)

    per_doc = Counter(message_id for message_id, _ in seen)
    per_relay = Counter(app_id for _, app_id in seen)
    print(
        f"\n[two relays] documents={RELAY_DOCS} publishes={len(seen)} max_per_doc={max(per_doc.values())} "
        f"per_relay={dict(per_relay)} unsent={len(unsent)} drained_s={drained:.1f}"
    )
    assert set(per_doc) == {d["event"]["id"] for d in docs}
    assert set(per_doc.values()) == {1}, "no document published twice"
    assert set(per_relay) == {"relay-1", "relay-2"}, "both relays claimed batches"
    assert unsent == []


@pytest.mark.timeout(120)
async def test_claims_of_a_relay_killed_mid_batch_are_taken_over_after_the_lease(
    make_settings, cleanup_namespace: None, mongo_server: EmbeddedMongo
) -> None:
    """SIGKILL one relay right after a publish inside a batch: its claimed documents stay `publishing` until
    their lease expires, then the other relay publishes them; all end `sent`, and only the killed claims are
    published twice (once per claim)."""
    lease_s = 3.0
    settings = make_settings(outbox={"batch_size": 100, "poll_interval": 0.1, "lease_seconds": lease_s})
    values, prefix, database = settings_values(settings), settings.amqp.prefix, settings.outbox.database
    ctx = forkserver()
    survivor = start_daemon(ctx, values, service_name="relay-2")
    victim = start_daemon(ctx, values, "after-publish", 30, service_name="relay-1")
    try:
        for d in (survivor, victim):
            await wait_ready(d)
        connection, seen = await _relay_events(prefix)
        async with connection:
            docs = await _insert_outbox(mongo_server.uri, database, RELAY_DOCS)
            await asyncio.to_thread(victim.process.join, 30)
            killed_at = int(time.time() * 1000)
            assert victim.process.exitcode == -9, "the relay died by the injected SIGKILL"
            marker = f"-{victim.process.pid}-"
            orphans = [
                d
                for d in await _outbox_docs(mongo_server.uri, database, {"status": "publishing"})
                if marker in (d.get("lease_owner") or "")
            ]
            orphan_ids = {d["_id"] for d in orphans}
            await wait_for(lambda: _none_unsent(mongo_server.uri, database), timeout=lease_s + 30, interval=0.1)
            await asyncio.sleep(1.5)  # room for a third publish to show up
        final = {d["_id"]: d for d in await _outbox_docs(mongo_server.uri, database, {})}
        reclaimed = await survivor.metric("s2s_outbox_lease_expired_total")
    finally:
        await stop_daemons([survivor, victim])

    per_doc = Counter(message_id for message_id, _ in seen)
    event_id = {d["_id"]: d["event"]["id"] for d in docs}
    twice = {i for i, e in event_id.items() if per_doc[e] == 2}
    # the lease runs from the claim, not from the kill
    after_expiry = max((final[d["_id"]]["sent_at"] - d["lease_until"] for d in orphans), default=0)
    after_kill = max((final[i]["sent_at"] for i in orphan_ids), default=killed_at) - killed_at
    print(
        f"\n[relay killed] documents={RELAY_DOCS} orphaned_claims={len(orphans)} published_twice={len(twice)} "
        f"publishes={len(seen)} lease_s={lease_s} all_sent_after_kill_ms={after_kill} "
        f"all_sent_after_lease_expiry_ms={after_expiry}"
    )
    assert orphans, "the victim died holding claims"
    assert all(per_doc[event_id[i]] >= 1 for i in event_id), "every document was published"
    assert max(per_doc.values()) <= 2
    assert twice <= orphan_ids, "only the killed relay's claims were published a second time"
    assert reclaimed == len(orphans), "the survivor counted the claims it took over after their lease"
    assert all(d["status"] == "sent" for d in final.values())
    for doc in orphans:
        assert final[doc["_id"]]["sent_at"] >= doc["lease_until"], "no takeover before the lease expired"


async def _none_unsent(mongo_uri: str, database: str) -> bool:
    return not await _outbox_docs(mongo_uri, database, {"status": {"$ne": "sent"}})
