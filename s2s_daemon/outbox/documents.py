"""The outbox collection for Beanie: its name and indexes, over the fields of ``OutboxRecord``.

Retention is a sweeper rather than a TTL index: a TTL index needs BSON dates, and nx-27017 neither keeps
datetimes as dates (``$set`` datetimes come back from find_one_and_update as strings) nor expires documents.
"""

from __future__ import annotations

from typing import Any

from beanie import Document
from pydantic import ConfigDict, Field
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection

from s2s_daemon.outbox.record import OutboxRecord, OutboxStatus

__all__ = ["OutboxDocument", "count_in_status", "status_count_pipeline"]


class OutboxDocument(OutboxRecord, Document):
    """The collection, declared from the record's fields. The daemon's reads and writes go through PyMongo
    with ``OutboxRecord.to_mongo``/``from_mongo`` (see OutboxWriter for the measured cost of Beanie's insert);
    Beanie creates the indexes and may be used for anything off the per-command path."""

    # Beanie sets ``id`` after an insert; the record is frozen. (The ignore: mypy takes Beanie's
    # ``model_config`` for an instance variable.)
    model_config = ConfigDict(frozen=False)  # type: ignore[misc]

    # Beanie checks the inserted id against this type (``Any`` fails its isinstance check).
    id: str | None = Field(  # type: ignore[assignment]
        default=None, alias="_id", description="The key again: lookups by key use the primary index."
    )

    class Settings:
        name = "outbox"
        indexes = [
            IndexModel([("key", ASCENDING)], unique=True, name="key_unique"),
            # Redundant on MongoDB (a prefix of the two below) but the only one nx-27017 uses for the relay's
            # claims and the backlog counts: with just the compound indexes it scanned the collection on every
            # poll (53-103 ms at 40,000 documents, against 1.4-7 ms with this one).
            IndexModel([("status", ASCENDING)], name="status"),
            IndexModel([("status", ASCENDING), ("next_attempt_at", ASCENDING)], name="status_next_attempt"),
            IndexModel([("status", ASCENDING), ("sent_at", ASCENDING)], name="status_sent_at"),
        ]


def status_count_pipeline(status: OutboxStatus | str) -> list[dict[str, Any]]:
    """The aggregation that counts documents in ``status``: ``$match`` on the status index, then ``$count``.

    Not ``count_documents``: nx-27017 runs its ``$group`` through a Python fallback that holds the store
    (333 ms over 20,000 documents), long enough to stall every command's outbox write behind it; nor the
    ``count`` command, which scans there (60 ms at 40,000). This pipeline uses the index on both servers (5 ms
    on nx-27017 at 40,000 documents). Sync callers (the chaos harness) run it with their own client.
    """
    return [{"$match": {"status": str(status)}}, {"$count": "n"}]


async def count_in_status(collection: AsyncCollection[dict[str, Any]], status: OutboxStatus | str) -> int:
    """Documents in ``status`` (see ``status_count_pipeline``)."""
    cursor = await collection.aggregate(status_count_pipeline(status))
    rows = await cursor.to_list()
    return int(rows[0]["n"]) if rows else 0
