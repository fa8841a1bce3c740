"""The sidecar's JSON response bodies as pydantic models: one per body, the source of /openapi.json's schemas.

Handlers that build their bodies from these models cannot drift from the document; the others are checked
against it by schemathesis in the test suite.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, RootModel
from pydantic.json_schema import SkipJsonSchema
from starlette.responses import Response

from s2s_daemon.http.webhooks import RejectReason
from s2s_daemon.messaging.contracts import Reply
from s2s_daemon.observability.probes import Status
from s2s_daemon.resilience.breaker import BreakerState

__all__ = [
    "BreakerForced",
    "BreakerSnapshot",
    "CommandAccepted",
    "CommandConflict",
    "CommandInFlight",
    "CommandLookup",
    "CommandRecordBody",
    "CommandStatusBody",
    "DeadLetterDetail",
    "DeadLetterList",
    "DeadLetterShow",
    "DeadLetterSummary",
    "DeadOutboxDocument",
    "DeadOutboxList",
    "DeliveriesBody",
    "DeliveryAttempt",
    "DeliveryEntry",
    "DownstreamBody",
    "DownstreamStatus",
    "ErrorBody",
    "Health",
    "HealthCheckEntry",
    "HistoryBody",
    "JobAccepted",
    "JobStatus",
    "OutboxCounts",
    "OutboxRetried",
    "StatusSnapshot",
    "SubscriptionState",
    "SubscriptionsBody",
    "WebhookAccepted",
    "WebhookRejected",
    "model_response",
]


class _Body(BaseModel):
    model_config = ConfigDict(frozen=True, populate_by_name=True)


def model_response(body: BaseModel, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(body.model_dump_json(by_alias=True), status_code, headers, media_type="application/json")


class ErrorBody(_Body):
    """Every refusal the sidecar makes itself: a stable machine-readable ``error`` and a readable ``detail``."""

    error: str = Field(description="not_found, invalid, invalid_json, too_large, unavailable, ...")
    detail: str | SkipJsonSchema[None] = None


class CommandAccepted(_Body):
    """202: the command is published; its outcome will be at ``status_url``."""

    command_id: str = Field(description="The Idempotency-Key, or `fp-<fingerprint>` when none was required.")
    status_url: str


class CommandInFlight(_Body):
    """409: a command with this key and payload is accepted and not finished."""

    error: Literal["in_flight"]
    command_id: str
    status_url: str


class CommandConflict(_Body):
    """422: the key was used with another payload."""

    error: Literal["conflict"]
    command_id: str
    detail: str


class CommandStatusBody(_Body):
    """A command's outcome from the outbox, or ``in_flight`` while accepted and not finished."""

    command_id: str
    downstream: str
    status: Literal["in_flight", "succeeded", "failed"]
    outbox_status: Literal["pending", "publishing", "sent", "dead"] | None
    reply: Reply | None
    created_at: int | None = Field(default=None, description="Epoch milliseconds.")
    sent_at: int | None = Field(default=None, description="Epoch milliseconds.")


class DownstreamBody(RootModel[Any]):
    """The downstream's JSON body as it answered (or its last good copy, marked by ``X-Cache: stale``)."""


class HealthCheckEntry(_Body):
    component_type: str | SkipJsonSchema[None] = Field(default=None, alias="componentType")
    status: Status
    time: str | SkipJsonSchema[None] = None
    output: str | SkipJsonSchema[None] = None
    observed_value: float | SkipJsonSchema[None] = Field(default=None, alias="observedValue")
    observed_unit: str | None = Field(default=None, alias="observedUnit")


class Health(_Body):
    """application/health+json (draft-inadarei-api-health-check)."""

    status: Status
    service_id: str | SkipJsonSchema[None] = Field(default=None, alias="serviceId")
    version: str | SkipJsonSchema[None] = None
    output: str | None = None
    checks: dict[str, list[HealthCheckEntry]] | SkipJsonSchema[None] = None


class BreakerSnapshot(_Body):
    state: BreakerState
    calls: int
    failure_rate: float = Field(description="Percent, in the current window.")
    slow_rate: float = Field(description="Percent, in the current window.")
    seconds_until_half_open: float


class DownstreamStatus(_Body):
    name: str
    breaker: BreakerSnapshot | None
    calls_per_second: float
    error_rate: float = Field(ge=0, le=1)
    queue_depth: int | None


class OutboxCounts(_Body):
    pending: int
    publishing: int
    dead: int


class StatusSnapshot(_Body):
    """What the status page shows (computed at most once a second)."""

    service_id: str
    time: str
    window_seconds: float
    downstreams: list[DownstreamStatus]
    outbox: OutboxCounts | None
    dlq_depth: int | None


class BreakerForced(_Body):
    downstream: str
    state: BreakerState
    changed: bool


class WebhookAccepted(_Body):
    service: str
    delivery_id: str
    event_type: str
    event_id: str = Field(description="The CloudEvent id (stable per delivery).")
    duplicate: bool


class WebhookRejected(_Body):
    error: Literal["rejected"]
    reason: RejectReason | Literal["invalid content-length"]


# the operator console (http/console.py) ----------------------------------------------------------------------
class DownstreamSeries(_Body):
    calls_per_second: list[float | None]
    error_rate: list[float | None] = Field(description="Failed share of the attempts, 0..1.")
    p50_seconds: list[float | None]
    p99_seconds: list[float | None]
    breaker: list[Literal["closed", "half_open", "open", "unknown"]]
    queue_depth: list[int | None]


class HistoryBody(_Body):
    """The console's charts: one time axis (epoch seconds) and one column per series; null is a gap."""

    interval_seconds: float
    retention_seconds: float
    times: list[float]
    downstreams: dict[str, DownstreamSeries]
    outbox_backlog: list[int | None] = Field(description="Pending + publishing outbox documents.")
    outbox_dead: list[int | None]
    publish_lag_p50_seconds: list[float | None] = Field(description="Outbox write to confirmed publish.")
    publish_lag_p99_seconds: list[float | None]
    dlq_depth: list[int | None]


class DeadLetterSummary(_Body):
    id: str
    reason: str
    routing_key: str
    attempts: int
    age_seconds: float | None
    correlation_id: str | None
    dead_lettered_at: int | None = Field(description="Epoch milliseconds.")
    replay_count: int


class DeadLetterList(_Body):
    """A pass over the DLQ that keeps every message (it counts as one delivery of each on a quorum queue)."""

    queue: str
    depth: int
    messages: list[DeadLetterSummary]


class DeadLetterDetail(DeadLetterSummary):
    detail: str | None
    idempotency_key: str | None
    properties: dict[str, Any]
    headers: dict[str, Any]
    body_encoding: Literal["json", "text", "base64"]
    body: Any


class DeadLetterShow(_Body):
    id: str
    messages: list[DeadLetterDetail] = Field(description="Usually one; several when copies share the id.")


class JobStatus(_Body):
    id: str
    kind: Literal["replay", "purge"]
    state: Literal["running", "succeeded", "failed"]
    scanned: int
    depth: int | None = Field(description="Ready messages in the DLQ when the pass started.")
    started_at: int
    finished_at: int | None
    report: dict[str, Any] | None = Field(description="What `s2s-daemon dlq replay|purge --json` prints.")
    error: str | None


class JobAccepted(_Body):
    job: JobStatus
    status_url: str


class DeadOutboxDocument(_Body):
    key: str
    kind: Literal["command", "webhook"]
    event_routing_key: str
    correlation_id: str
    attempts: int
    last_error: str | None
    created_at: int = Field(description="Epoch milliseconds.")


class DeadOutboxList(_Body):
    documents: list[DeadOutboxDocument]


class OutboxRetried(_Body):
    moved: int


class CommandRecordBody(_Body):
    downstream: str
    key: str = Field(description="The outbox key, cmd:<downstream>:<command id>.")
    status: Literal["in_flight", "succeeded", "failed"]
    outbox_status: Literal["pending", "publishing", "sent", "dead"]
    attempts: int | None = Field(description="Downstream HTTP attempts (from the reply).")
    relay_attempts: int
    reply: Reply | None
    trace_id: str | None = Field(description="From the stored traceparent.")
    correlation_id: str
    created_at: int
    sent_at: int | None
    last_error: str | None


class CommandLookup(_Body):
    command_id: str
    records: list[CommandRecordBody] = Field(description="One per downstream that has a record of this id.")


class DeliveryAttempt(_Body):
    at: int = Field(description="Epoch milliseconds.")
    status_code: int | None = Field(description="The endpoint's answer; null when it gave none (timeout, refused).")
    error: str | None
    duration_ms: int


class DeliveryEntry(_Body):
    """One subscription's delivery of the event."""

    subscription: str
    event_id: str = Field(description="Also the `webhook-id` the endpoint received.")
    routing_key: str
    status: Literal["delivered", "retrying", "failed", "dead-lettered"]
    attempt_count: int
    attempts: list[DeliveryAttempt] = Field(description="The latest 50 attempts, oldest first.")
    last_status_code: int | SkipJsonSchema[None] = None
    last_error: str | SkipJsonSchema[None] = None
    created_at: str
    updated_at: str
    delivered_at: str | SkipJsonSchema[None] = None


class DeliveriesBody(_Body):
    event_id: str
    deliveries: list[DeliveryEntry]


class SubscriptionState(_Body):
    name: str
    url: str
    events: list[str]
    disabled: bool = Field(description="True after the endpoint answered 410 Gone, until enabled again.")
    reason: str | None
    changed_at: int | None = Field(description="Epoch milliseconds of the last change of `disabled`.")
    queue: str


class SubscriptionsBody(_Body):
    subscriptions: list[SubscriptionState]
