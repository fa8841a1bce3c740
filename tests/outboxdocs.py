"""Outbox records and their stored documents, as the consumer would write them."""

from __future__ import annotations

import uuid
from typing import Any

from s2s_daemon.clock import now_ms
from s2s_daemon.messaging import contracts as c
from s2s_daemon.outbox.record import OutboxRecord, OutboxStatus, command_key

EVENT_ROUTING_KEY = "service-a.create-resource.succeeded"


def outbox_record(
    key: str,
    *,
    status: str = "pending",
    created_at: int | None = None,
    reply_to: str | None = None,
    attempts: int = 0,
    last_error: str | None = None,
) -> OutboxRecord:
    """A command's record whose event id is a fresh uuid (the id counts publishes per record)."""
    created = now_ms() if created_at is None else created_at
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
    return OutboxRecord(
        id=command_key("service-a", key),
        key=command_key("service-a", key),
        kind="command",
        fingerprint="f" * 32,
        status=OutboxStatus(status),
        correlation_id=key,
        reply_to=reply_to,
        reply=reply,
        event_routing_key=EVENT_ROUTING_KEY,
        event=c.cloud_event(
            event_id=str(uuid.uuid4()),
            source="/s2s-daemon/service-a",
            type_=EVENT_ROUTING_KEY,
            subject=key,
            time_ms=created,
            data=reply,
        ),
        attempts=attempts,
        created_at=created,
        sent_at=created if status == "sent" else None,
        last_error=last_error,
    )


def outbox_document(key: str, **fields: Any) -> dict[str, Any]:
    """The stored form of ``outbox_record(key, **fields)``, to insert straight into the collection."""
    return outbox_record(key, **fields).to_mongo()
