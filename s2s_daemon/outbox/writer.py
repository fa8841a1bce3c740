"""Writes outbox records durably and wakes the relay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from s2s_daemon.batching import GroupCommit, MicroBatcher
from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.outbox.documents import OutboxDocument
from s2s_daemon.outbox.record import OutboxRecord


@dataclass(frozen=True, slots=True)
class WriteResult:
    created: bool  # False: a record with this key already existed (the durable dedupe backstop)
    record: OutboxRecord  # the one written, or the one already stored


class Handoff(Protocol):
    """The relay side of a write: claim the record before insert, publish it from memory after."""

    async def room(self) -> None: ...

    def stamp(self, record: OutboxRecord) -> OutboxRecord: ...

    def submit(self, record: OutboxRecord) -> None: ...


class _Duplicate:
    """An insert refused for its key: the caller answers with the stored record."""

    __slots__ = ()


_DUPLICATE = _Duplicate()
_DUPLICATE_KEY = 11000


class OutboxWriter:
    """Plain PyMongo under the Beanie model, on purpose: every command's record goes through here. Measured
    on nx-27017 with 50 writes in flight (2 shared cores, two runs): Beanie's ``Document.insert`` cost
    960-1,120 us of client CPU per record against 630-780 us for ``insert_one(record.to_mongo())`` (+~45%),
    305-427 against 327-600 inserts/s. Beanie's lookups would add its pure-Python decoding to every
    duplicate check the same way; the relay's claims are conditional ``update_many`` calls on ``_id`` lists,
    which Beanie would only wrap.

    Group commit: the records written in one turn of the event loop go out as one
    ``insert_many(ordered=False)``, and each caller still gets its own answer (created, or the stored record
    for a duplicate key) before it acks. Measured on nx-27017 (2 shared cores, 2,000 records of ~1 kB):
    ``insert_one`` with 50 in flight cost ~315 us of client CPU and ~430 us of server CPU per record,
    ``insert_many`` of 50 ~27 us and ~260 us. nx-27017 answers a duplicate in an unordered ``insert_many``
    as MongoDB does: a ``BulkWriteError`` whose ``writeErrors`` carry the index and code 11000 of each refused
    document, the others inserted."""

    def __init__(self, collection: AsyncCollection[dict[str, Any]], handoff: Handoff) -> None:
        # Majority + journal: on a replica set the ack waits until the write survives a failover.
        self._collection = collection.with_options(write_concern=WriteConcern(w="majority", j=True))
        self._handoff = handoff
        self._lookups: MicroBatcher[str, dict[str, Any]] = MicroBatcher(self._find_many)
        self._inserts: GroupCommit[OutboxRecord, _Duplicate | None] = GroupCommit(self._insert_many)

    @property
    def namespace(self) -> tuple[str, str]:
        """(database, collection): what a span of an outbox operation names."""
        return self._collection.database.name, self._collection.name

    @classmethod
    def for_beanie(cls, handoff: Handoff) -> OutboxWriter:
        return cls(OutboxDocument.get_pymongo_collection(), handoff)

    async def write(self, record: OutboxRecord) -> WriteResult:
        """Insert; on a duplicate key return the stored record instead. Raises DependencyUnavailable."""
        await self._handoff.room()  # backpressure: the relay's lease must not run out while it waits in line
        record = self._handoff.stamp(record)
        if await self._inserts.submit(record) is None:
            return WriteResult(True, record)
        existing = await self.find(record.key)
        if existing is None:  # pragma: no cover - removed between the two calls by retention
            raise DependencyUnavailable("mongodb", "duplicate key vanished")
        return WriteResult(False, existing)

    async def _insert_many(self, records: list[OutboxRecord]) -> list[_Duplicate | BaseException | None]:
        """One unordered insert for the batch: per record None (inserted and handed to the relay),
        ``_DUPLICATE``, or the error for that record's caller."""
        answers: list[_Duplicate | BaseException | None] = [None] * len(records)
        try:
            if len(records) == 1:  # alone in its turn (low load): insert_one skips the bulk machinery
                await self._collection.insert_one(records[0].to_mongo())
            else:
                await self._collection.insert_many([record.to_mongo() for record in records], ordered=False)
        except DuplicateKeyError:
            answers[0] = _DUPLICATE
        except BulkWriteError as exc:
            details = exc.details
            for error in details.get("writeErrors", ()):
                code = error.get("code")
                refused = DependencyUnavailable("mongodb", f"write error {code}: {error.get('errmsg')}")
                answers[error["index"]] = _DUPLICATE if code == _DUPLICATE_KEY else refused
            if details.get("writeConcernErrors"):
                # written, but not known to survive a failover: not acked (the lease brings it back, the
                # outbox answers the redelivery)
                unsure = DependencyUnavailable("mongodb", f"write concern: {details['writeConcernErrors'][0]}")
                answers = [answer if answer is _DUPLICATE else unsure for answer in answers]
        except (TimeoutError, PyMongoError, OSError) as exc:
            raise DependencyUnavailable("mongodb", f"{type(exc).__name__}: {exc}") from exc
        for record, answer in zip(records, answers, strict=True):
            if answer is None:
                self._handoff.submit(record)
        return answers

    async def find(self, key: str) -> OutboxRecord | None:
        """The record with this key, or None. Concurrent lookups share one ``$in`` query. A stored document
        that is not a record raises pydantic.ValidationError to its own caller only."""
        try:
            document = await self._lookups.get(key)
        except (PyMongoError, OSError) as exc:
            raise DependencyUnavailable("mongodb", f"{type(exc).__name__}: {exc}") from exc
        return None if document is None else OutboxRecord.from_mongo(document)

    async def _find_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        # _id is the key itself (see OutboxRecord.id): the primary index answers
        documents = await self._collection.find({"_id": {"$in": keys}}).to_list()
        return {doc["_id"]: doc for doc in documents}
