"""What happened to each webhook delivery, and which endpoints are disabled: two MongoDB collections.

``webhook_deliveries``: one document per (subscription, event), ``_id`` ``<subscription>/<event id>``: the latest
status, status code and error, the number of attempts. ``webhook_attempts``: one document per HTTP attempt (time,
status code, error, duration), inserted, never updated (an array of sub-documents grown with ``$push`` came back
as strings from nx-27017). Both queryable by event id (the sidecar's ``GET /api/deliveries/{event_id}``) and
removed ``delivery.log_retention_seconds`` after they were last written (TTL indexes).

``webhook_endpoints``: one document per subscription that was ever disabled (a ``410 Gone``), with ``disabled``,
the reason and when. Written by the replica that saw the 410, read by every replica every
``delivery.state_poll_seconds`` (so a disable or an ``s2s-daemon subscriptions enable`` reaches all of them), and
kept across restarts.

Plain PyMongo update queries: the log is written once per attempt, never read on the hot path.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase

from s2s_daemon.clock import now_ms
from s2s_daemon.observability.logging import get_logger

__all__ = [
    "DeliveryLog",
    "EndpointState",
    "EndpointStates",
    "endpoints_collection",
    "read_endpoint_states",
    "set_endpoint_state",
]

log = get_logger("s2s.delivery")
DELIVERIES = "webhook_deliveries"
ATTEMPTS = "webhook_attempts"
ENDPOINTS = "webhook_endpoints"
_MAX_ERROR = 500
_MAX_ATTEMPTS_KEPT = 50


def endpoints_collection(database: AsyncDatabase[dict[str, Any]]) -> AsyncCollection[dict[str, Any]]:
    return database[ENDPOINTS]


class DeliveryLog:
    def __init__(self, database: AsyncDatabase[dict[str, Any]], retention_seconds: int) -> None:
        self._collection = database[DELIVERIES]
        self._attempts = database[ATTEMPTS]
        self._retention = retention_seconds

    async def ensure_indexes(self) -> None:
        for collection in (self._collection, self._attempts):
            await collection.create_index([("event_id", ASCENDING)])
            await collection.create_index([("updated_at", ASCENDING)], expireAfterSeconds=self._retention)

    async def attempt(
        self,
        subscription: str,
        event_id: str,
        routing_key: str,
        *,
        status: str,
        status_code: int | None,
        error: str | None,
        duration_ms: int | None,
    ) -> None:
        """Record one outcome: an HTTP attempt (``duration_ms`` set) or a state change without one."""
        now = datetime.now(UTC)
        update: dict[str, Any] = {
            "$set": {"status": status, "updated_at": now, "routing_key": routing_key},
            "$setOnInsert": {"event_id": event_id, "subscription": subscription, "created_at": now},
        }
        if error is not None:
            update["$set"]["last_error"] = error[:_MAX_ERROR]
        if status == "delivered":
            update["$set"]["delivered_at"] = now
        writes: list[Awaitable[Any]] = []
        if duration_ms is not None:
            writes.append(
                self._attempts.insert_one(
                    {
                        "event_id": event_id,
                        "subscription": subscription,
                        "at": now_ms(),
                        "status_code": status_code,
                        "error": error[:_MAX_ERROR] if error else None,
                        "duration_ms": duration_ms,
                        "updated_at": now,
                    }
                )
            )
            update["$inc"] = {"attempt_count": 1}
            update["$set"]["last_status_code"] = status_code
        writes.append(self._collection.update_one({"_id": f"{subscription}/{event_id}"}, update, upsert=True))
        await asyncio.gather(*writes)  # independent documents: both in flight at once

    async def for_event(self, event_id: str) -> list[dict[str, Any]]:
        """Every subscription's delivery of the event, oldest first, as JSON-ready dicts with their latest attempts."""
        found = [doc async for doc in self._collection.find({"event_id": event_id})]
        attempts: dict[str, list[dict[str, Any]]] = {}
        async for attempt in self._attempts.find({"event_id": event_id}):
            attempts.setdefault(attempt["subscription"], []).append(
                {k: attempt.get(k) for k in ("at", "status_code", "error", "duration_ms")}
            )
        out = []
        for doc in sorted(found, key=lambda d: d.get("created_at") or datetime.min):
            made = sorted(attempts.get(doc["subscription"], []), key=lambda a: a["at"] or 0)
            out.append({**_public(doc), "attempts": made[-_MAX_ATTEMPTS_KEPT:]})
        return out


def _public(doc: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in doc.items() if k != "_id"}
    for key in ("created_at", "updated_at", "delivered_at"):
        if isinstance(out.get(key), datetime):
            out[key] = out[key].replace(tzinfo=out[key].tzinfo or UTC).isoformat()
    out.setdefault("attempt_count", 0)
    return out


@dataclass(frozen=True, slots=True)
class EndpointState:
    name: str
    disabled: bool
    reason: str | None = None
    changed_at: int | None = None  # epoch ms


class EndpointStates:
    """The disabled flag of every subscription, persisted; ``on_change(name, disabled)`` when it flips."""

    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        names: Iterable[str],
        poll_seconds: float,
        on_change: Callable[[str, bool], Any] | None = None,
    ) -> None:
        self._collection = collection
        self._states = {name: EndpointState(name, False) for name in names}
        self._poll_seconds = poll_seconds
        self._on_change = on_change
        self._task: asyncio.Task[None] | None = None

    def disabled(self, name: str) -> bool:
        return self._states[name].disabled

    def all(self) -> list[EndpointState]:
        return list(self._states.values())

    async def load(self) -> None:
        async for doc in self._collection.find({"_id": {"$in": list(self._states)}}):
            await self._apply(EndpointState(doc["_id"], bool(doc.get("disabled")), doc.get("reason"), doc.get("at")))

    async def set(self, name: str, disabled: bool, reason: str | None) -> None:
        """Persist and apply; with MongoDB unreachable it applies here only (a later poll may undo it, and the
        endpoint's next 410 disables it again), rather than fail the delivery that saw the 410."""
        try:
            await set_endpoint_state(self._collection, name, disabled, reason)
        except Exception:
            log.warning("delivery.endpoint_state_not_saved", subscription=name, disabled=disabled, exc_info=True)
        await self._apply(EndpointState(name, disabled, reason, now_ms()))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._poll(), name="s2s-endpoint-states")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._poll_seconds)
            try:
                await self.load()
            except Exception:
                log.warning("delivery.endpoint_states_unreadable", exc_info=True)

    async def _apply(self, state: EndpointState) -> None:
        if state.name not in self._states:
            return
        before = self._states[state.name]
        self._states[state.name] = state
        if before.disabled != state.disabled:
            log.warning(
                "delivery.endpoint_disabled" if state.disabled else "delivery.endpoint_enabled",
                subscription=state.name,
                reason=state.reason,
            )
            if self._on_change is not None:
                result = self._on_change(state.name, state.disabled)
                if asyncio.iscoroutine(result):
                    await result


async def set_endpoint_state(
    collection: AsyncCollection[dict[str, Any]], name: str, disabled: bool, reason: str | None
) -> None:
    """Persist an endpoint's state (the daemon on a 410, ``s2s-daemon subscriptions enable`` by hand)."""
    await collection.update_one(
        {"_id": name}, {"$set": {"disabled": disabled, "reason": reason, "at": now_ms()}}, upsert=True
    )


async def read_endpoint_states(collection: AsyncCollection[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {doc["_id"]: doc async for doc in collection.find({})}
