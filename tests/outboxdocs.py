"""Outbox documents written straight into the collection, as the consumer would write them."""

from __future__ import annotations

import time
import uuid
from typing import Any

from bson import ObjectId

from s2s_daemon.messaging import contracts as c

EVENT_ROUTING_KEY = "service-a.create-resource.succeeded"


def outbox_document(
    key: str,
    *,
    status: str = "pending",
    created_at: int | None = None,
    reply_to: str | None = None,
    attempts: int = 0,
    last_error: str | None = None,
) -> dict[str, Any]:
    """A command document whose event id is a fresh uuid (the id counts publishes per document)."""
    created = int(time.time() * 1000) if created_at is None else created_at
    reply = {
        "status": "succeeded",
        "command_id": key,
        "correlation_id": key,
        "routing_key": "service-a.create-resource",
        "downstream": "service-a",
        "action": "create-resource",
        "attempts": 1,
        "result": {"status_code": 201, "body": {"id": key}},
        "error": None,
        "received_at": created,
        "completed_at": created,
    }
    return {
        "_id": ObjectId(),
        "key": f"cmd:service-a:{key}",
        "kind": "command",
        "fingerprint": "f" * 32,
        "status": status,
        "correlation_id": key,
        "reply_to": reply_to,
        "reply": reply,
        "event_routing_key": EVENT_ROUTING_KEY,
        "event": c.cloud_event(
            event_id=str(uuid.uuid4()),
            source="/s2s-daemon/service-a",
            type_=EVENT_ROUTING_KEY,
            subject=key,
            time_ms=created,
            data=reply,
        ),
        "headers": {},
        "attempts": attempts,
        "lease_owner": None,
        "lease_until": 0,
        "next_attempt_at": 0,
        "created_at": created,
        "sent_at": created if status == "sent" else None,
        "last_error": last_error,
    }
