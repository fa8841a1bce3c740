"""The outbox record: its two constructors, the storage boundary, and the Beanie declaration built on it."""

from __future__ import annotations

import hashlib
import uuid
from typing import Any

import bson
import orjson
import pytest
from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from s2s_daemon.messaging import RetryState
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability.correlation import TraceContext
from s2s_daemon.outbox.documents import OutboxDocument
from s2s_daemon.outbox.record import OutboxRecord, OutboxStatus, event_uuid
from s2s_daemon.pipeline.job import Command

# The stored field names, in order, of the documents written before the record existed.
STORED_FIELDS = [
    "_id",
    "key",
    "kind",
    "fingerprint",
    "status",
    "correlation_id",
    "reply_to",
    "reply",
    "event_routing_key",
    "event",
    "headers",
    "attempts",
    "lease_owner",
    "lease_until",
    "next_attempt_at",
    "created_at",
    "sent_at",
    "last_error",
]
TRACE = TraceContext("4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7")


def _command() -> tuple[Command, c.Reply]:
    cmd = Command(
        key="k-1",
        routing_key="billing.charge",
        downstream="billing",
        action="charge",
        body={"amount": 5},
        fingerprint="ab" * 16,
        correlation_id="corr-1",
        reply_to="amq.rabbitmq.reply-to.x",
        trace=None,
        deadline_ms=None,
        retry=RetryState(),
        received_at=1_700_000_000_000,
    )
    reply = c.Reply(
        status="succeeded",
        command_id=cmd.key,
        correlation_id=cmd.correlation_id,
        routing_key=cmd.routing_key,
        downstream=cmd.downstream,
        action=cmd.action,
        attempts=1,
        result=c.DownstreamResult(status_code=201, body={"id": "r1"}),
        received_at=cmd.received_at,
        completed_at=1_700_000_000_250,
    )
    return cmd, reply


def test_a_command_record_stores_what_the_consumer_stored_before() -> None:
    """Field names, order and values of a command's document are the ones documents already stored have."""
    cmd, reply = _command()
    stored = OutboxRecord.for_command(cmd, reply, TRACE, "s2s-daemon").to_mongo()
    assert list(stored) == STORED_FIELDS
    data = reply.model_dump(mode="json")
    event_id = str(uuid.uuid5(uuid.UUID("6f1c1d2e-8a53-4c1e-9d0f-5e2b7a4c9e10"), "cmd:billing:k-1"))
    assert {k: v for k, v in stored.items() if k != "created_at"} == {
        "_id": "cmd:billing:k-1",
        "key": "cmd:billing:k-1",
        "kind": "command",
        "fingerprint": "ab" * 16,
        "status": "pending",
        "correlation_id": "corr-1",
        "reply_to": "amq.rabbitmq.reply-to.x",
        "reply": data,
        "event_routing_key": "billing.charge.succeeded",
        "event": {
            "specversion": "1.0",
            "id": event_id,
            "source": "/s2s-daemon/billing",
            "type": "billing.charge.succeeded",
            "subject": "k-1",
            "time": "2023-11-14T22:13:20.250000Z",
            "datacontenttype": "application/json",
            "data": data,
        },
        "headers": {"traceparent": TRACE.header},
        "attempts": 0,
        "lease_owner": None,
        "lease_until": 0,
        "next_attempt_at": 0,
        "sent_at": None,
        "last_error": None,
    }
    assert type(stored["status"]) is str, "stored as the plain string, not the enum"
    assert isinstance(stored["created_at"], int)


def test_a_webhook_record_carries_the_event_of_the_delivery() -> None:
    """Key, fingerprint of the exact bytes, stable event id, routing key and the signed time as the event time."""
    body = b'{"type": "invoice.paid", "n": 1}'
    record = OutboxRecord.for_webhook(
        "acme",
        delivery_id="msg_1",
        event_type="invoice.paid",
        body=body,
        signed_at=1_700_000_000,
        correlation_id="corr-w",
        trace=TRACE,
        service_name="s2s-daemon",
        received_ms=1_700_000_005_000,
    )
    assert (record.id, record.key, record.kind) == ("wh:acme:msg_1", "wh:acme:msg_1", "webhook")
    assert record.fingerprint == hashlib.blake2b(body, digest_size=16).hexdigest()
    assert (record.reply_to, record.reply) == (None, None)
    assert record.event_routing_key == "webhook.acme.invoice.paid"
    assert record.event_id == str(uuid.uuid5(uuid.UUID("0d6c4f7e-3b8a-4f55-9a5e-7c1d2b9e6f31"), "wh:acme:msg_1"))
    assert record.event["source"] == "/s2s-daemon/webhooks/acme"
    assert record.event["time"] == "2023-11-14T22:13:20Z"
    assert record.event["data"] == orjson.loads(body)
    assert record.created_at == 1_700_000_005_000
    assert list(record.to_mongo()) == STORED_FIELDS


def test_a_webhook_without_a_signed_time_is_timed_when_received() -> None:
    """GitHub signs no timestamp: the event time is the reception time."""
    record = OutboxRecord.for_webhook(
        "gh",
        delivery_id="d",
        event_type="push",
        body=b"{}",
        signed_at=None,
        correlation_id="c",
        trace=TRACE,
        service_name="s",
        received_ms=1_700_000_000_000,
    )
    assert record.event["time"] == "2023-11-14T22:13:20Z"


def test_round_trip_through_bson() -> None:
    """to_mongo, BSON encoding and from_mongo give back an equal record."""
    cmd, reply = _command()
    record = OutboxRecord.for_command(cmd, reply, TRACE, "s2s-daemon").claimed("me:fast", 123)
    assert OutboxRecord.from_mongo(bson.decode(bson.encode(record.to_mongo()))) == record


def test_claimed_is_a_new_record() -> None:
    """Stamping a lease leaves the original record as it was."""
    cmd, reply = _command()
    record = OutboxRecord.for_command(cmd, reply, TRACE, "s2s-daemon")
    claimed = record.claimed("me:fast", 99)
    assert (claimed.status, claimed.lease_owner, claimed.lease_until) == (OutboxStatus.PUBLISHING, "me:fast", 99)
    assert (record.status, record.lease_owner, record.lease_until) == (OutboxStatus.PENDING, None, 0)
    with pytest.raises(ValidationError):
        record.status = OutboxStatus.SENT  # type: ignore[misc]  # frozen: the assignment itself is the test


def test_a_document_with_an_object_id_still_reads() -> None:
    """Documents whose _id is not the key (inserted by other tools) read; the id is kept as it is."""
    cmd, reply = _command()
    stored: dict[str, Any] = OutboxRecord.for_command(cmd, reply, TRACE, "s").to_mongo()
    stored["_id"] = ObjectId()
    stored["status"] = "dead"
    record = OutboxRecord.from_mongo(stored)
    assert record.id == stored["_id"]
    assert record.status is OutboxStatus.DEAD


def test_a_document_that_is_not_a_record_is_refused() -> None:
    """A document missing required fields raises ValidationError at the storage boundary."""
    with pytest.raises(ValidationError):
        OutboxRecord.from_mongo({"_id": "x", "key": "x", "status": "pending", "kind": "command"})


def test_the_beanie_document_declares_the_record_fields_and_the_indexes() -> None:
    """OutboxDocument has exactly the record's fields (besides Beanie's revision id), the collection name and
    the four indexes, each over record fields."""
    assert set(OutboxDocument.model_fields) - {"revision_id"} == set(OutboxRecord.model_fields)
    assert OutboxDocument.model_fields["id"].alias == "_id"
    assert OutboxDocument.Settings.name == "outbox"
    declared = {index.document["name"]: index.document for index in OutboxDocument.Settings.indexes}
    assert {name: list(doc["key"].items()) for name, doc in declared.items()} == {
        "key_unique": [("key", 1)],
        "status": [("status", 1)],
        "status_next_attempt": [("status", 1), ("next_attempt_at", 1)],
        "status_sent_at": [("status", 1), ("sent_at", 1)],
    }
    assert declared["key_unique"].get("unique") is True
    indexed = {field for doc in declared.values() for field in doc["key"]}
    assert indexed <= set(OutboxRecord.model_fields)


@given(st.uuids(), st.text())
def test_event_uuid_is_uuid5(namespace: uuid.UUID, name: str) -> None:
    """The event id is exactly the standard library's uuid5 text, for any namespace and name."""
    try:
        expected = str(uuid.uuid5(namespace, name))
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, refused by both
        with pytest.raises(UnicodeEncodeError):
            event_uuid(namespace, name)
        return
    assert event_uuid(namespace, name) == expected
