"""The Beanie declaration of the outbox collection, on nx-27017: the indexes it creates and a record that
goes in through Beanie and comes out through the record's storage boundary unchanged."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from beanie import init_beanie
from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from s2s_daemon.local import EmbeddedMongo
from s2s_daemon.outbox.documents import OutboxDocument
from s2s_daemon.outbox.record import OutboxRecord
from tests.outboxdocs import outbox_record

pytestmark = pytest.mark.integration


@pytest.fixture
async def database(mongo_server: EmbeddedMongo) -> AsyncIterator[AsyncDatabase[dict[str, Any]]]:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_server.uri)
    name = "beanie" + uuid.uuid4().hex[:8]
    await init_beanie(database=client[name], document_models=[OutboxDocument])
    yield client[name]
    await client.drop_database(name)
    await client.close()


async def test_init_beanie_creates_the_declared_indexes(database: AsyncDatabase[dict[str, Any]]) -> None:
    """The indexes on the collection are the declared ones, by keys (nx-27017 names indexes its own way)."""
    info = await database["outbox"].index_information()
    keys = {tuple(index["key"]): bool(index.get("unique")) for name, index in info.items() if name != "_id_"}
    assert keys == {
        (("key", 1),): True,
        (("status", 1),): False,
        (("status", 1), ("next_attempt_at", 1)): False,
        (("status", 1), ("sent_at", 1)): False,
    }


async def test_a_record_inserted_through_beanie_reads_back_as_the_same_record(
    database: AsyncDatabase[dict[str, Any]],
) -> None:
    """Beanie's insert stores what ``to_mongo`` would (the key as _id), Beanie finds it by field, and
    ``from_mongo`` reads the raw document back as an equal record."""
    record = outbox_record("via-beanie", status="sent", reply_to="replies")
    await OutboxDocument.model_validate(record.to_mongo()).insert()
    raw = await database["outbox"].find_one({"_id": record.key})
    assert raw == record.to_mongo()
    assert OutboxRecord.from_mongo(raw) == record
    found = await OutboxDocument.find_one(OutboxDocument.key == record.key)
    assert found is not None
    assert OutboxRecord.from_mongo(found.model_dump(by_alias=True, exclude={"revision_id"})) == record
