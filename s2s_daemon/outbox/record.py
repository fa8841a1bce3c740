"""The outbox record: one per command reply or webhook event, also the durable dedupe record.

One typed value for what is stored, relayed and read back; ``to_mongo``/``from_mongo`` are the storage
boundary, attribute access everything else. The Beanie ``OutboxDocument`` (documents.py) subclasses it, so the
collection's fields are declared once. The storage format is unchanged from the dicts this replaced: same
field names, same values, ``_id`` equal to the key.

Times are epoch milliseconds (integers): they compare the same on MongoDB and on nx-27017, which returns
``$set`` datetimes from find_one_and_update as strings.

A frozen pydantic model rather than a frozen slotted dataclass, by measurement (timeit, 2 shared cores):
building a command's record, stamping its lease and dumping it for ``insert_one`` cost ~12 us more than the
plain dict it replaces (~33 against ~15, the reply dump and the CloudEvent included), a dataclass ~9 us more;
reading one back cost ~4 us either way. At several hundred commands/s that is under 1% of one core, and the
model is what lets the Beanie Document reuse the field list and ``from_mongo`` validate what it reads.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Mapping
from enum import StrEnum
from typing import Any, Literal, Protocol

import orjson
from pydantic import BaseModel, ConfigDict, Field

from s2s_daemon.clock import now_ms
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability.correlation import TraceContext

__all__ = [
    "CommandFacts",
    "OutboxRecord",
    "OutboxStatus",
    "command_key",
    "event_uuid",
    "webhook_key",
    "webhook_routing_key",
]

# The CloudEvent id is uuid5(namespace, key): the same command or delivery always gets the same id, so a
# consumer can drop a republished copy. Changing either namespace changes every id.
_COMMAND_EVENT_NS = uuid.UUID("6f1c1d2e-8a53-4c1e-9d0f-5e2b7a4c9e10")
_WEBHOOK_EVENT_NS = uuid.UUID("0d6c4f7e-3b8a-4f55-9a5e-7c1d2b9e6f31")


def event_uuid(namespace: uuid.UUID, name: str) -> str:
    """``str(uuid.uuid5(namespace, name))`` without the ``UUID`` object, whose checks and formatting were ~2% of
    the daemon's CPU under webhook load: SHA-1 of namespace and name, version 5, RFC 4122 variant."""
    digest = bytearray(hashlib.sha1(namespace.bytes + name.encode("utf-8"), usedforsecurity=False).digest()[:16])
    digest[6] = (digest[6] & 0x0F) | 0x50
    digest[8] = (digest[8] & 0x3F) | 0x80
    h = digest.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class OutboxStatus(StrEnum):
    PENDING = "pending"
    PUBLISHING = "publishing"
    SENT = "sent"
    DEAD = "dead"


def command_key(downstream: str, key: str) -> str:
    return f"cmd:{downstream}:{key}"


def webhook_key(service: str, delivery_id: str) -> str:
    return f"wh:{service}:{delivery_id}"


def webhook_routing_key(service: str, event_type: str) -> str:
    return f"webhook.{service}.{event_type}"


class CommandFacts(Protocol):
    """What a command's record needs of the command (the pipeline's ``Command`` has it; outbox sits below it)."""

    @property
    def key(self) -> str: ...
    @property
    def downstream(self) -> str: ...
    @property
    def routing_key(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def correlation_id(self) -> str: ...
    @property
    def reply_to(self) -> str | None: ...


class OutboxRecord(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)

    # Opaque: the key for every record the daemon writes (lookups by key then use the primary index, which
    # nx-27017 serves in ~1 ms whatever the size; an $in on a secondary index scans the collection there).
    id: Any = Field(alias="_id", description="The key again: lookups by key use the primary index.")
    key: str = Field(description="Unique: 'cmd:<downstream>:<idempotency key>' or 'wh:<service>:<delivery id>'.")
    kind: Literal["command", "webhook"]
    fingerprint: str
    status: OutboxStatus = OutboxStatus.PENDING
    correlation_id: str
    reply_to: str | None = None
    reply: dict[str, Any] | None = Field(default=None, description="A command's reply (contracts.Reply as JSON).")
    event_routing_key: str
    event: dict[str, Any] = Field(description="The CloudEvent published on the events exchange.")
    headers: dict[str, str] = Field(default_factory=dict)
    attempts: int = 0
    lease_owner: str | None = None
    lease_until: int = 0
    next_attempt_at: int = 0
    created_at: int
    sent_at: int | None = None
    last_error: str | None = None

    @classmethod
    def for_command(cls, cmd: CommandFacts, reply: c.Reply, trace: TraceContext, service_name: str) -> OutboxRecord:
        """The record of a command's outcome: its reply, and the event ``<routing key>.<status>``."""
        key = command_key(cmd.downstream, cmd.key)
        data = reply.model_dump(mode="json")
        event_type = c.event_routing_key(cmd.routing_key, reply.status)
        return cls(
            id=key,
            key=key,
            kind="command",
            fingerprint=cmd.fingerprint,
            correlation_id=cmd.correlation_id,
            reply_to=cmd.reply_to,
            reply=data,
            event_routing_key=event_type,
            event=c.cloud_event(
                event_id=event_uuid(_COMMAND_EVENT_NS, key),
                source=f"/{service_name}/{cmd.downstream}",
                type_=event_type,
                subject=cmd.key,
                time_ms=reply.completed_at,
                data=data,
            ),
            headers=trace.headers(),
            created_at=now_ms(),
        )

    @classmethod
    def for_webhook(
        cls,
        service: str,
        *,
        delivery_id: str,
        event_type: str,
        body: bytes,
        signed_at: int | None,
        correlation_id: str,
        trace: TraceContext,
        service_name: str,
        received_ms: int,
    ) -> OutboxRecord:
        """The record of a verified webhook delivery (``body``: a JSON object): the event
        ``webhook.<service>.<type>``, timed at ``signed_at`` (unix seconds) when the sender signed one."""
        key = webhook_key(service, delivery_id)
        routing_key = webhook_routing_key(service, event_type)
        return cls(
            id=key,
            key=key,
            kind="webhook",
            fingerprint=hashlib.blake2b(body, digest_size=16).hexdigest(),
            correlation_id=correlation_id,
            event_routing_key=routing_key,
            event=c.cloud_event(
                event_id=event_uuid(_WEBHOOK_EVENT_NS, key),
                source=f"/{service_name}/webhooks/{service}",
                type_=routing_key,
                subject=delivery_id,
                time_ms=signed_at * 1000 if signed_at is not None else received_ms,
                data=orjson.loads(body),
            ),
            headers=trace.headers(),
            created_at=received_ms,
        )

    @property
    def event_id(self) -> str:
        """The CloudEvent id, also the AMQP message_id of the event and of the reply."""
        return str(self.event["id"])

    def claimed(self, owner: str, lease_until: int) -> OutboxRecord:
        """This record in ``publishing``, leased to ``owner`` until ``lease_until`` (epoch ms)."""
        return self.model_copy(
            update={"status": OutboxStatus.PUBLISHING, "lease_owner": owner, "lease_until": lease_until}
        )

    def to_mongo(self) -> dict[str, Any]:
        """The stored document. The status goes in as its plain string value."""
        document = self.model_dump(by_alias=True)
        document["status"] = self.status.value
        return document

    @classmethod
    def from_mongo(cls, document: Mapping[str, Any]) -> OutboxRecord:
        """A stored document; raises pydantic.ValidationError when it is not an outbox record."""
        return cls.model_validate(document)
