"""The relay when the store dies between a publish and its mark-sent (found by the chaos suite's nx-27017 kill,
which re-sent ~1,000 replies): what was published while the store was away is marked sent once it is back,
before any claim of expired leases, so nothing goes out twice."""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from s2s_daemon.local import EmbeddedMongo
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.outbox import OutboxWriter
from s2s_daemon.outbox.record import OutboxRecord
from s2s_daemon.outbox.relay import Relay
from s2s_daemon.settings import OutboxSettings
from tests.outboxdocs import outbox_record
from tests.support import wait_for

pytestmark = pytest.mark.integration


@pytest.mark.timeout(90)
async def test_published_while_the_store_was_down_goes_out_once(tmp_path: Path) -> None:
    """The store is SIGKILLed while the first batch is being published and comes back after the documents'
    leases ran out: every document is published exactly once and ends `sent`."""
    store = EmbeddedMongo(tmp_path / "nx-27017").start()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        store.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500, socketTimeoutMS=2000
    )
    published: Counter[str] = Counter()
    killed = asyncio.Event()

    async def publish(record: OutboxRecord) -> None:
        if not killed.is_set():
            killed.set()
            await asyncio.to_thread(store.kill)  # the broker took it; the store will not hear of it
        published[record.key] += 1

    settings = OutboxSettings(lease_seconds=1.0, poll_interval=0.1)
    try:
        collection = client["relay"]["outbox"]
        relay = Relay(collection, publish, settings, Metrics(), owner="test")
        writer = OutboxWriter(collection, relay)
        for i in range(20):
            await writer.write(outbox_record(f"k{i}"))
        relay.start()
        try:
            await asyncio.wait_for(killed.wait(), 10)
            await asyncio.sleep(2 * settings.lease_seconds)  # every lease has run out meanwhile
            await asyncio.to_thread(store.start)

            async def all_sent() -> bool:
                docs = await collection.find({}, {"status": 1}).to_list()
                return len(docs) == 20 and {d["status"] for d in docs} == {"sent"}

            await wait_for(all_sent, timeout=30)
            await asyncio.sleep(3 * settings.poll_interval + settings.lease_seconds)  # room for a second publish
        finally:
            await relay.stop()
    finally:
        await client.close()
        store.stop()
    assert set(published) == {f"cmd:service-a:k{i}" for i in range(20)}
    assert max(published.values()) == 1, f"published more than once: {published.most_common(3)}"
