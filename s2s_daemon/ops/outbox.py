"""``s2s-daemon outbox status | retry-dead``: the operator's view of the outbox.

Plain synchronous PyMongo against the collection the relay uses; standard MongoDB operations only
(``aggregate`` with ``$group``, ``find_one`` with a sort, ``update_many``); what it reads comes back as
``OutboxRecord``. Not Beanie: it is async only, and it binds the model class to one database for the
whole process, where these functions take the collection they work on (the tests hand each its own). A
running daemon's relay picks up documents moved back to ``pending`` on its next poll.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
from pymongo import MongoClient, WriteConcern
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.observability.logging import redact_url
from s2s_daemon.ops._argtypes import positive_int
from s2s_daemon.outbox.documents import OutboxDocument
from s2s_daemon.outbox.record import OutboxRecord, OutboxStatus
from s2s_daemon.settings import Settings, load_settings

__all__ = [
    "OutboxStatusReport",
    "add_outbox_parser",
    "cmd_outbox",
    "dead_documents",
    "mongo_client",
    "outbox_collection",
    "outbox_status",
    "retry_dead",
]

_UNSENT = (OutboxStatus.PENDING.value, OutboxStatus.PUBLISHING.value)


@dataclass(frozen=True, slots=True)
class OutboxStatusReport:
    database: str
    counts: dict[str, int]  # every OutboxStatus, zero when absent
    oldest_pending_age_s: float | None  # oldest document not yet sent (pending or publishing)
    oldest_pending_key: str | None

    @property
    def dead(self) -> int:
        return self.counts[OutboxStatus.DEAD.value]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def as_json(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "counts": self.counts,
            "total": self.total,
            "dead": self.dead,
            "oldest_pending_age_seconds": self.oldest_pending_age_s,
            "oldest_pending_key": self.oldest_pending_key,
        }

    def as_text(self) -> str:
        lines = [f"outbox in database {self.database!r}: {self.total} documents"]
        lines += [f"  {status:<11}{count:>9}" for status, count in self.counts.items()]
        if self.oldest_pending_age_s is None:
            lines.append("oldest pending: none")
        else:
            lines.append(f"oldest pending: {self.oldest_pending_age_s:.1f} s ({self.oldest_pending_key})")
        return "\n".join(lines)


def outbox_status(collection: Collection[dict[str, Any]], at_ms: int | None = None) -> OutboxStatusReport:
    """Counts by status in one round trip, and the age of the oldest unsent document."""
    at_ms = now_ms() if at_ms is None else at_ms
    counts = {status.value: 0 for status in OutboxStatus}
    for row in collection.aggregate([{"$group": {"_id": "$status", "n": {"$sum": 1}}}]):
        counts[str(row["_id"])] = int(row["n"])
    found = collection.find_one({"status": {"$in": list(_UNSENT)}}, sort=[("created_at", 1)])
    if found is None:
        return OutboxStatusReport(collection.database.name, counts, None, None)
    oldest = OutboxRecord.from_mongo(found)
    age = round(max(0, at_ms - oldest.created_at) / 1000, 3)
    return OutboxStatusReport(collection.database.name, counts, age, oldest.key)


def dead_documents(collection: Collection[dict[str, Any]], limit: int = 100) -> list[OutboxRecord]:
    """Dead documents, oldest first (their ``last_error`` says why the relay gave up)."""
    found = collection.find({"status": OutboxStatus.DEAD.value}).sort("created_at", 1).limit(limit)
    return [OutboxRecord.from_mongo(d) for d in found]


def retry_dead(collection: Collection[dict[str, Any]], limit: int | None = None, keys: list[str] | None = None) -> int:
    """``dead`` -> ``pending`` with attempts reset, oldest first (only ``keys`` when given); returns how many moved.

    ``last_error`` is kept as history; the relay overwrites it if publishing fails again.
    """
    dead: dict[str, Any] = {"status": OutboxStatus.DEAD.value}
    if keys is not None:
        dead["_id"] = {"$in": keys}  # _id is the key (OutboxRecord.id)
    query: dict[str, Any] = dead
    if limit is not None:
        ids = [d["_id"] for d in collection.find(dead, {"_id": 1}).sort("created_at", 1).limit(limit)]
        if not ids:
            return 0
        query = {**dead, "_id": {"$in": ids}}  # still dead: a concurrent retry-dead does not double count
    result = collection.update_many(
        query,
        {
            "$set": {
                "status": OutboxStatus.PENDING.value,
                "attempts": 0,
                "next_attempt_at": 0,
                "lease_owner": None,
                "lease_until": 0,
            }
        },
    )
    return int(result.modified_count)


# command line --------------------------------------------------------------------------------------
def add_outbox_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    config_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    """Register ``outbox status`` and ``outbox retry-dead`` (``config_arg`` adds the shared --config option)."""
    outbox = sub.add_parser("outbox", help="inspect the outbox; move dead documents back to pending")
    actions = outbox.add_subparsers(dest="outbox_command", required=True)
    status = actions.add_parser("status", help="counts by status, oldest pending age, dead count")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    config_arg(status)
    retry = actions.add_parser("retry-dead", help="dead -> pending with attempts reset; prints how many")
    retry.add_argument("--limit", type=positive_int, default=None, help="move at most N, oldest first")
    config_arg(retry)


def cmd_outbox(args: argparse.Namespace) -> int:
    settings = load_settings(args.config)
    with mongo_client(settings) as client:
        collection = outbox_collection(client, settings)
        try:
            if args.outbox_command == "status":
                report = outbox_status(collection)
                out = orjson.dumps(report.as_json()).decode() if args.json else report.as_text()
                print(out)
                return 0
            moved = retry_dead(collection, args.limit)
        except PyMongoError as exc:
            raise DependencyUnavailable("mongodb", f"{type(exc).__name__}: {exc}") from exc
    print(f"moved {moved} dead outbox document{'' if moved == 1 else 's'} back to pending")
    return 0


def outbox_collection(client: MongoClient[dict[str, Any]], settings: Settings) -> Collection[dict[str, Any]]:
    return client[settings.outbox.database].get_collection(
        OutboxDocument.Settings.name, write_concern=WriteConcern(w="majority", j=True)
    )


def mongo_client(settings: Settings) -> MongoClient[dict[str, Any]]:
    """A synchronous client of the configured MongoDB, pinged (DependencyUnavailable when it does not answer)."""
    from s2s_daemon.settings import DEFAULT_MONGODB_URI

    uri = settings.mongodb_uri.get_secret_value() if settings.mongodb_uri else DEFAULT_MONGODB_URI
    client: MongoClient[dict[str, Any]] = MongoClient(uri, serverSelectionTimeoutMS=3000, connectTimeoutMS=3000)
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        raise DependencyUnavailable("mongodb", f"{redact_url(uri)}: {type(exc).__name__}: {exc}") from exc
    return client
