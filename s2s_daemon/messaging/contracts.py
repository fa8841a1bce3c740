"""User-facing message contracts: commands in, replies and events out.

Documented in the README ("Message contracts"); change them only with a CHANGELOG entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# AMQP headers we read or write. Integers only for times: pamqp sends floats as 32-bit (FACTS.md).
H_IDEMPOTENCY_KEY = "idempotency-key"
H_CORRELATION_ID = "x-correlation-id"
H_TRACEPARENT = "traceparent"
H_DEADLINE = "x-deadline"
H_ATTEMPT = "x-s2s-attempt"  # deliveries through our delay queues, 1 for the first
H_CALLS = "x-s2s-calls"  # downstream attempts made by earlier deliveries
H_FIRST_CALL_AT = "x-s2s-first-call-at"  # epoch ms of the first downstream attempt
H_ROUTING_KEY = "x-s2s-routing-key"
H_REASON = "x-s2s-reason"
H_DETAIL = "x-s2s-detail"
H_DEAD_AT = "x-s2s-dead-lettered-at"
H_SOURCE_QUEUE = "x-s2s-queue"


class ErrorKind(StrEnum):
    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    INVALID = "invalid"
    EXPIRED = "expired"
    CONFLICT = "conflict"


class ReplyError(BaseModel):
    model_config = ConfigDict(frozen=True)

    kind: ErrorKind
    message: str
    status_code: int | None = None
    body: Any = None


class DownstreamResult(BaseModel):
    model_config = ConfigDict(frozen=True)

    status_code: int
    body: Any = None


class Reply(BaseModel):
    """What a producer receives on ``reply_to`` and what an event carries as ``data``."""

    model_config = ConfigDict(frozen=True)

    status: Literal["succeeded", "failed"]
    command_id: str = Field(description="The idempotency key of the command.")
    correlation_id: str
    routing_key: str
    downstream: str
    action: str
    attempts: int = Field(description="Downstream HTTP attempts made for this command.")
    result: DownstreamResult | None = None
    error: ReplyError | None = None
    received_at: int = Field(description="Epoch milliseconds when the command was first handled.")
    completed_at: int = Field(description="Epoch milliseconds when the outcome was recorded.")


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command, ready for the downstream call."""

    key: str
    routing_key: str
    downstream: str
    action: str
    body: Any
    fingerprint: str
    correlation_id: str
    reply_to: str | None
    traceparent: str | None
    deadline_ms: int | None
    attempt: int
    received_at: int
    previous_calls: int = 0
    first_call_at: int | None = None


def event_routing_key(routing_key: str, status: str) -> str:
    return f"{routing_key}.{status}"


def cloud_event(
    *, event_id: str, source: str, type_: str, subject: str, time_ms: int, data: dict[str, Any]
) -> dict[str, Any]:
    """CloudEvents 1.0 structured-mode envelope (content type application/cloudevents+json)."""
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": type_,
        "subject": subject,
        "time": datetime.fromtimestamp(time_ms / 1000, UTC).isoformat().replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }
