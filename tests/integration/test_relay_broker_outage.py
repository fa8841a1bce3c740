"""The relay under a broker outage (found by the chaos suite's connection-close scenario): an unreachable broker
charges no publish attempts, so a long outage never marks documents dead, and they go out soon after it ends."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.outbox.record import OutboxRecord
from s2s_daemon.outbox.relay import Relay
from s2s_daemon.settings import OutboxSettings
from tests.outboxdocs import outbox_document
from tests.support import wait_for

pytestmark = pytest.mark.integration


class FlakyBroker:
    def __init__(self) -> None:
        self.down = True
        self.error: Exception = DependencyUnavailable("rabbitmq", "ChannelInvalidStateError: closed")
        self.published: list[str] = []

    async def publish(self, record: OutboxRecord) -> None:
        if self.down:
            raise self.error
        self.published.append(record.key)


@pytest.fixture
async def collection(mongo_server) -> Any:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.uri)
    name = "relay" + uuid.uuid4().hex[:8]
    yield client[name]["outbox"]
    await client.drop_database(name)
    await client.close()


@pytest.mark.timeout(60)
async def test_broker_outage_charges_no_attempts_and_recovers_fast(collection: Any) -> None:
    """20 relay rounds against an unreachable broker: no attempt counted, nothing dead; published within ~2 s
    once the broker is back."""
    await collection.insert_many([outbox_document(f"k{i}") for i in range(30)])
    broker = FlakyBroker()
    settings = OutboxSettings(poll_interval=0.05, max_publish_attempts=3)
    relay = Relay(collection, broker.publish, settings, Metrics(), owner="test")
    relay.start()
    try:
        await asyncio.sleep(2.0)  # several rounds, more than max_publish_attempts
        docs = await collection.find({}).to_list()
        assert {d["status"] for d in docs} <= {"pending", "publishing"}
        assert max(d["attempts"] for d in docs) == 0
        broker.down = False
        await wait_for(lambda: len(set(broker.published)) == 30, timeout=5.0)
    finally:
        await relay.stop()


@pytest.mark.timeout(60)
async def test_other_publish_errors_still_count_attempts(collection: Any) -> None:
    """A failure that is not the broker being unreachable still counts, up to dead after max attempts."""
    await collection.insert_many([outbox_document("poison")])
    broker = FlakyBroker()
    broker.error = ValueError("cannot encode")
    settings = OutboxSettings(poll_interval=0.05, max_publish_attempts=2)
    relay = Relay(collection, broker.publish, settings, Metrics(), owner="test")
    relay.start()
    try:

        async def dead() -> bool:
            doc = await collection.find_one({"key": "cmd:service-a:poison"})
            return doc is not None and doc["status"] == "dead"

        await wait_for(dead, timeout=10.0)
    finally:
        await relay.stop()


@pytest.mark.timeout(60)
async def test_a_document_that_is_not_a_record_goes_dead_and_the_rest_go_out(collection: Any) -> None:
    """A claimed document that does not read as an outbox record (written by hand, damaged) is marked dead
    with the reason instead of failing every round; the records claimed with it are published."""
    junk = {"_id": "junk", "key": "junk", "status": "pending", "next_attempt_at": 0}
    await collection.insert_many([outbox_document("good"), junk])
    broker = FlakyBroker()
    broker.down = False
    relay = Relay(collection, broker.publish, OutboxSettings(), Metrics(), owner="test")
    assert await relay.relay_once() == 1
    stored = await collection.find_one({"_id": "junk"})
    assert stored["status"] == "dead"
    assert stored["last_error"].startswith("not an outbox record")
    assert stored["lease_owner"] is None
    assert broker.published == ["cmd:service-a:good"]
    assert (await collection.find_one({"_id": "cmd:service-a:good"}))["status"] == "sent"
