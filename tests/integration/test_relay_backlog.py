"""The relay when it is the bottleneck (found by the chaos suite's nx-27017 scenario: 6,700 of 10,000 replies
published twice): writers wait while the inbox is full, so no document outlives its lease waiting in line; a
document whose fast-path lease has (nearly) run out is left to the polling claim and published once."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from s2s_daemon.clock import now_ms
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.outbox.record import OutboxRecord, command_key
from s2s_daemon.outbox.relay import Relay
from s2s_daemon.outbox.writer import OutboxWriter
from s2s_daemon.settings import OutboxSettings
from tests.outboxdocs import outbox_record
from tests.support import wait_for

pytestmark = pytest.mark.integration


class GatedBroker:
    """Publishes block until ``open`` is set; counts publishes per outbox key."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.published: Counter[str] = Counter()

    async def publish(self, record: OutboxRecord) -> None:
        await self.open.wait()
        self.published[record.key] += 1


@pytest.fixture
async def collection(mongo_server: Any) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.uri)
    name = "backlog" + uuid.uuid4().hex[:8]
    yield client[name]["outbox"]
    await client.drop_database(name)
    await client.close()


@pytest.mark.timeout(60)
async def test_writers_wait_while_the_inbox_is_full_and_nothing_goes_out_twice(collection: Any) -> None:
    """With the broker stalled, 8 writers (as consumers: one command after another) stop once 4 batches' worth
    waits in the inbox, besides the (up to 4, maybe partial) batches in flight and one write each already past
    the check; released, every document is published exactly once and no lease ran out."""
    broker = GatedBroker()
    settings = OutboxSettings(batch_size=10, poll_interval=0.05, lease_seconds=3.0)
    metrics = Metrics()
    relay = Relay(collection, broker.publish, settings, metrics, owner="test")
    writer = OutboxWriter(collection, relay)
    written: list[str] = []
    relay.start()
    try:
        workers = _writers(writer, "w", 8, 25, written)
        await asyncio.sleep(1.0)
        stalled_at = len(written)
        assert stalled_at == await collection.count_documents({}), "a write returns once its document is durable"
        assert 40 <= stalled_at <= 40 + 40 + 8, f"writers waited at the inbox limit (written {stalled_at})"
        broker.open.set()
        await _all_published_and_sent(workers, broker.published, 200, collection)
    finally:
        broker.open.set()
        await relay.stop()
    assert set(broker.published.values()) == {1}, "no document published twice"
    assert metrics.outbox_lease_expired._value.get() == 0


@pytest.mark.timeout(60)
async def test_a_document_past_its_fast_lease_is_left_to_the_polling_claim(collection: Any) -> None:
    """Handed over with its lease already out (a slow insert): not published from memory, claimed by the next
    polling round as expired, published once and marked sent."""
    broker = GatedBroker()
    broker.open.set()
    settings = OutboxSettings(batch_size=10, poll_interval=0.05, lease_seconds=3.0)
    metrics = Metrics()
    relay = Relay(collection, broker.publish, settings, metrics, owner="test")
    record = relay.stamp(outbox_record("late"))
    record = record.model_copy(update={"lease_until": now_ms() - 1})
    await collection.insert_one(record.to_mongo())
    relay.submit(record)
    relay.start()
    try:
        await wait_for(lambda: _all_sent(collection), timeout=10)
        await asyncio.sleep(0.3)  # room for a second publish to show up
    finally:
        await relay.stop()
    assert broker.published == Counter({record.key: 1})
    assert metrics.outbox_lease_expired._value.get() == 1


def _writers(writer: OutboxWriter, prefix: str, count: int, each: int, written: list[str]) -> list[asyncio.Task[None]]:
    """``count`` writers as consumers are: one command after another, ``each`` of them; keys into ``written``."""

    async def consumer(n: int) -> None:
        for i in range(each):
            written.append((await writer.write(outbox_record(f"{prefix}{n}-{i:02d}"))).record.key)

    return [asyncio.create_task(consumer(n)) for n in range(count)]


async def _all_published_and_sent(
    workers: list[asyncio.Task[None]], published: Counter[str], total: int, collection: Any
) -> None:
    await asyncio.gather(*workers)
    await wait_for(lambda: len(published) == total, timeout=20)
    await wait_for(lambda: _all_sent(collection), timeout=20)


async def _all_sent(collection: Any) -> bool:
    docs = await collection.find({}, {"status": 1}).to_list()
    return bool(docs) and all(d["status"] == "sent" for d in docs)


class HeldBroker:
    """Publishes of the keys in ``held`` block until ``release`` is set; the others go out at once."""

    def __init__(self, held: set[str]) -> None:
        self.held = held
        self.release = asyncio.Event()
        self.published: list[str] = []

    async def publish(self, record: OutboxRecord) -> None:
        name = record.key.rsplit(":", 1)[-1]  # the command's own key
        if name in self.held:
            await self.release.wait()
        self.published.append(name)


@pytest.mark.timeout(60)
async def test_a_document_arriving_while_a_batch_waits_goes_out_in_a_batch_of_its_own(collection: Any) -> None:
    """A batch waiting on its confirms does not hold back a document written meanwhile: the relay starts a
    second batch for it (below its limit of batches in flight), so it is published and marked sent first."""
    broker = HeldBroker({"slow"})
    settings = OutboxSettings(batch_size=10, poll_interval=5.0, lease_seconds=30.0)
    relay = Relay(collection, broker.publish, settings, Metrics(), owner="test")
    writer = OutboxWriter(collection, relay)
    relay.start()
    try:
        await writer.write(outbox_record("slow"))
        await asyncio.sleep(0.2)  # the first batch is in flight, held
        await writer.write(outbox_record("fast"))
        await wait_for(lambda: broker.published == ["fast"], timeout=5)
        await wait_for(lambda: _status(collection, "fast", "sent"), timeout=5)
        assert await _status(collection, "slow", "publishing")
        broker.release.set()
        await wait_for(lambda: _all_sent(collection), timeout=10)
    finally:
        broker.release.set()
        await relay.stop()
    assert broker.published == ["fast", "slow"]


async def _status(collection: Any, key: str, status: str) -> bool:
    doc = await collection.find_one({"_id": command_key("service-a", key)}, {"status": 1})
    return doc is not None and doc["status"] == status


class HeldMarks:
    """The real collection, except that mark-sent updates wait until ``release`` is set."""

    def __init__(self, collection: Any) -> None:
        self._collection = collection
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    async def update_many(self, *args: Any, **kwargs: Any) -> Any:
        await self.release.wait()
        return await self._collection.update_many(*args, **kwargs)


@pytest.mark.timeout(60)
async def test_publishing_goes_on_while_mark_sent_updates_wait_and_they_hold_the_writers_back(collection: Any) -> None:
    """A confirmed batch frees its place among the batches in flight before its mark-sent update has run: with
    the updates held, more batches go out than may be in flight at once. The confirmed documents not yet marked
    count against the inbox's limit, so the writers stop before any lease could run out; released, every document
    is marked sent, each published once."""
    broker = GatedBroker()
    broker.open.set()
    held = HeldMarks(collection)
    settings = OutboxSettings(batch_size=5, poll_interval=5.0, lease_seconds=30.0)
    relay = Relay(held, broker.publish, settings, Metrics(), owner="test")  # type: ignore[arg-type]
    writer = OutboxWriter(collection, relay)
    written: list[str] = []
    relay.start()
    try:
        workers = _writers(writer, "m", 6, 10, written)
        # more than the four batches that may be in flight: their updates do not hold their places
        await wait_for(lambda: len(broker.published) > 4 * settings.batch_size, timeout=10)
        await asyncio.sleep(0.5)
        assert len(written) < 60, "writers wait while confirmed documents wait for their update"
        # the inbox's limit of unmarked documents, the batches in flight, one write per writer in hand
        assert len(broker.published) <= 4 * settings.batch_size + 4 * settings.batch_size + 6
        assert not await _status(collection, "m0-00", "sent")
        held.release.set()
        await _all_published_and_sent(workers, broker.published, 60, collection)
    finally:
        held.release.set()
        await relay.stop()
    assert set(broker.published.values()) == {1}
