"""User-facing message contracts: commands in, replies and events out.

Documented in docs/contracts.md; change them only with a CHANGELOG entry.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from s2s_daemon.errors import ErrorKind
from s2s_daemon.observability.correlation import H_TRACEPARENT, H_TRACESTATE

__all__ = [
    "H_ATTEMPT",
    "H_CALLS",
    "H_CORRELATION_ID",
    "H_DEADLINE",
    "H_DEAD_AT",
    "H_DETAIL",
    "H_FIRST_CALL_AT",
    "H_IDEMPOTENCY_KEY",
    "H_NOT_BEFORE",
    "H_REASON",
    "H_ROUTING_KEY",
    "H_SOURCE_QUEUE",
    "H_SUBSCRIPTION",
    "H_TRACEPARENT",
    "H_TRACESTATE",
    "DownstreamResult",
    "ErrorKind",  # a reply's ``error.kind``; defined with the error tree
    "Reply",
    "ReplyError",
    "cloud_event",
    "event_routing_key",
]

# AMQP headers we read or write. Integers only for times: pamqp sends Python floats as 32-bit floats.
H_IDEMPOTENCY_KEY = "idempotency-key"
H_CORRELATION_ID = "x-correlation-id"
# H_TRACEPARENT, H_TRACESTATE: the W3C trace context headers, defined with the parser
H_DEADLINE = "x-deadline"
H_ATTEMPT = "x-s2s-attempt"  # deliveries through our delay queues, 1 for the first
H_CALLS = "x-s2s-calls"  # downstream attempts made by earlier deliveries
H_FIRST_CALL_AT = "x-s2s-first-call-at"  # epoch ms of the first downstream attempt
H_ROUTING_KEY = "x-s2s-routing-key"
H_REASON = "x-s2s-reason"
H_DETAIL = "x-s2s-detail"
H_DEAD_AT = "x-s2s-dead-lettered-at"
H_SOURCE_QUEUE = "x-s2s-queue"
H_SUBSCRIPTION = "x-s2s-subscription"  # a webhook delivery's subscription (dead letters replay to its queue)
H_NOT_BEFORE = "x-s2s-not-before"  # epoch ms before which a parked webhook delivery is parked again


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
