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
    "CommandStatusBody",
    "DeliveriesBody",
    "DeliveryAttempt",
    "DeliveryEntry",
    "DownstreamBody",
    "DownstreamStatus",
    "ErrorBody",
    "Health",
    "HealthCheckEntry",
    "OutboxCounts",
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
