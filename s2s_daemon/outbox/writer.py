"""Writes outbox documents durably and wakes the relay."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from pymongo import WriteConcern
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import DuplicateKeyError, PyMongoError

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.outbox.batching import MicroBatcher
from s2s_daemon.outbox.documents import OutboxDocument


@dataclass(frozen=True, slots=True)
class WriteResult:
    created: bool  # False: a document with this key already existed (the durable dedupe backstop)
    document: dict[str, Any]


class Handoff(Protocol):
    """The relay side of a write: claim the document before insert, publish it from memory after."""

    async def room(self) -> None: ...

    def stamp(self, document: dict[str, Any]) -> None: ...

    def submit(self, document: dict[str, Any]) -> None: ...


class OutboxWriter:
    def __init__(self, collection: AsyncCollection[dict[str, Any]], handoff: Handoff) -> None:
        # Majority + journal: on a replica set the ack waits until the write survives a failover.
        self._collection = collection.with_options(write_concern=WriteConcern(w="majority", j=True))
        self._handoff = handoff
        self._lookups: MicroBatcher[str, dict[str, Any]] = MicroBatcher(self._find_many)

    @classmethod
    def for_beanie(cls, handoff: Handoff) -> OutboxWriter:
        return cls(OutboxDocument.get_pymongo_collection(), handoff)

    async def write(self, document: dict[str, Any]) -> WriteResult:
        """Insert; on a duplicate key return the stored document instead. Raises DependencyUnavailable."""
        # _id is the key itself: lookups by key then use the primary index, which nx-27017 serves in ~1 ms
        # whatever the size; an $in on a secondary index scans the collection there.
        document.setdefault("_id", document["key"])
        await self._handoff.room()  # backpressure: the relay's lease must not run out while it waits in line
        self._handoff.stamp(document)
        try:
            await self._collection.insert_one(document)
        except DuplicateKeyError:
            existing = await self.find(document["key"])
            if existing is None:  # pragma: no cover - removed between the two calls by retention
                raise DependencyUnavailable("mongodb", "duplicate key vanished") from None
            return WriteResult(False, existing)
        except (TimeoutError, PyMongoError, OSError) as exc:
            raise DependencyUnavailable("mongodb", f"{type(exc).__name__}: {exc}") from exc
        self._handoff.submit(document)
        return WriteResult(True, document)

    async def find(self, key: str) -> dict[str, Any] | None:
        """The document with this key, or None. Concurrent lookups share one ``$in`` query."""
        try:
            return await self._lookups.get(key)
        except (PyMongoError, OSError) as exc:
            raise DependencyUnavailable("mongodb", f"{type(exc).__name__}: {exc}") from exc

    async def _find_many(self, keys: list[str]) -> dict[str, dict[str, Any]]:
        documents = await self._collection.find({"_id": {"$in": keys}}).to_list()
        return {doc["key"]: doc for doc in documents}
