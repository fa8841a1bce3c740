"""The outbox collection: one document per command reply or webhook event, also the durable dedupe record.

Times are epoch milliseconds (integers): they compare the same on MongoDB and on nx-27017, which returns
``$set`` datetimes from find_one_and_update as strings. Retention is a sweeper rather than a TTL index
for the same reason (a TTL index needs BSON dates and nx-27017 does not expire documents).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Literal

from beanie import Document
from pydantic import Field
from pymongo import ASCENDING, IndexModel
from pymongo.asynchronous.collection import AsyncCollection


class OutboxStatus(StrEnum):
    PENDING = "pending"
    PUBLISHING = "publishing"
    SENT = "sent"
    DEAD = "dead"


class OutboxDocument(Document):
    id: str | None = Field(default=None, description="The key again: lookups by key use the primary index.")  # type: ignore[assignment]
    key: str = Field(description="Unique: 'cmd:<downstream>:<idempotency key>' or 'wh:<service>:<delivery id>'.")
    kind: Literal["command", "webhook"]
    fingerprint: str
    status: OutboxStatus = OutboxStatus.PENDING
    correlation_id: str
    reply_to: str | None = None
    reply: dict[str, Any] | None = None
    event_routing_key: str
    event: dict[str, Any]
    headers: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: int = 0
    next_attempt_at: int = 0
    created_at: int
    sent_at: int | None = None
    last_error: str | None = None

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


def command_key(downstream: str, key: str) -> str:
    return f"cmd:{downstream}:{key}"


def webhook_key(service: str, delivery_id: str) -> str:
    return f"wh:{service}:{delivery_id}"


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
