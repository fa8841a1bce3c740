"""Group commit of outbox writes on nx-27017: the records written in one loop turn are one unordered
``insert_many``, and every caller gets its own answer (created, or the stored record for a duplicate key)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import BulkWriteError
from pymongo.monitoring import CommandFailedEvent, CommandListener, CommandStartedEvent, CommandSucceededEvent

from s2s_daemon.outbox.record import OutboxRecord
from s2s_daemon.outbox.writer import OutboxWriter
from tests.outboxdocs import outbox_document, outbox_record

pytestmark = pytest.mark.integration


class InsertCounter(CommandListener):
    def __init__(self) -> None:
        self.inserts: list[int] = []  # documents per insert command

    def started(self, event: CommandStartedEvent) -> None:
        if event.command_name == "insert":
            self.inserts.append(len(event.command.get("documents", ())))

    def succeeded(self, event: CommandSucceededEvent) -> None:
        pass

    def failed(self, event: CommandFailedEvent) -> None:
        pass


class Handoff:
    """The relay's side, recorded: what was handed over to be published."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    async def room(self) -> None:
        return None

    def stamp(self, record: OutboxRecord) -> OutboxRecord:
        return record

    def submit(self, record: OutboxRecord) -> None:
        self.submitted.append(record.key)


@pytest.fixture
async def db(mongo_server: Any) -> Any:
    listener = InsertCounter()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.uri, event_listeners=[listener])
    name = "group" + uuid.uuid4().hex[:8]
    yield client[name]["outbox"], listener
    await client.drop_database(name)
    await client.close()


@pytest.mark.timeout(60)
async def test_concurrent_writes_are_one_insert_and_each_caller_gets_its_own_answer(db: Any) -> None:
    """Ten writes in one loop turn, one of them to a key stored before and two to the same new key: one insert
    command; the new keys are created and handed to the relay once each, the stored key and the second copy
    of the repeated key are answered with the stored document, never with the caller's own."""
    collection, listener = db
    await collection.insert_one(outbox_document("stored", reply_to="amq.rabbitmq.reply-to.old"))
    writer = OutboxWriter(collection, handoff := Handoff())
    records = [outbox_record(f"new-{i}") for i in range(7)]
    records += [outbox_record("stored"), outbox_record("twice", reply_to="first"), outbox_record("twice")]
    listener.inserts.clear()

    results = await asyncio.gather(*(writer.write(record) for record in records))

    assert listener.inserts == [10], "one insert command for the ten concurrent writes"
    by_key: dict[str, list[bool]] = {}
    for record, result in zip(records, results, strict=True):
        by_key.setdefault(record.key, []).append(result.created)
        assert result.record.key == record.key
    assert all(by_key[r.key] == [True] for r in records[:7])
    assert by_key[records[7].key] == [False]
    assert sorted(by_key[records[8].key]) == [False, True]
    stored = results[7].record
    assert stored.reply_to == "amq.rabbitmq.reply-to.old", "the stored document answers, not the caller's"
    twice = next(r for r in results[8:] if not r.created).record
    assert twice.reply_to == "first", "the copy that lost the race is answered with the one stored"
    assert sorted(handoff.submitted) == sorted({r.key for r in records} - {records[7].key})
    assert await collection.count_documents({}) == 9


@pytest.mark.timeout(60)
async def test_nx_27017_reports_each_refused_document_of_an_unordered_insert_many(db: Any) -> None:
    """What the writer relies on, on the Mongo-wire server here as on MongoDB: an unordered insert_many with
    duplicate keys inserts the others and raises BulkWriteError naming each refused document by index with
    code 11000."""
    collection, _ = db
    await collection.insert_one({"_id": "a"})
    with pytest.raises(BulkWriteError) as caught:
        await collection.insert_many([{"_id": "x"}, {"_id": "a"}, {"_id": "y"}, {"_id": "x"}], ordered=False)
    errors = caught.value.details["writeErrors"]
    assert [(e["index"], e["code"]) for e in errors] == [(1, 11000), (3, 11000)]
    assert caught.value.details["nInserted"] == 2
    assert sorted(d["_id"] for d in await collection.find({}).to_list()) == ["a", "x", "y"]


@pytest.mark.timeout(60)
async def test_a_lone_write_is_one_insert_and_a_lone_duplicate_gets_the_stored_record(db: Any) -> None:
    """Alone in its loop turn (low load) a write is a single-document insert; a duplicate key then answers with
    the stored record and nothing is handed to the relay."""
    collection, listener = db
    await collection.insert_one(outbox_document("stored", reply_to="amq.rabbitmq.reply-to.old"))
    writer = OutboxWriter(collection, handoff := Handoff())
    listener.inserts.clear()
    created = await writer.write(outbox_record("fresh"))
    duplicate = await writer.write(outbox_record("stored"))
    assert listener.inserts == [1, 1]
    assert created.created
    assert not duplicate.created
    assert duplicate.record.reply_to == "amq.rabbitmq.reply-to.old"
    assert handoff.submitted == [created.record.key]
