"""One error tree for the daemon.

S2SError
 +-- ConfigError                 a setting or the config file is wrong (start fails, naming the key)
 +-- DependencyUnavailable       RabbitMQ / Redis / MongoDB cannot be reached
 +-- CommandRejected             a command that can never succeed: dead-lettered with ``reason``
 +-- Redeliver                   control flow: hand the message back for a later attempt (``delay`` seconds)
 +-- Duplicate                   control flow: the key was answered before; answer again from the stored record
 +-- KeyConflict                 control flow: the key was used before with another payload; answer ``conflict``
 +-- DeadLetterQueueError        an operator's DLQ command cannot run (queue missing, bad selection)
"""

from __future__ import annotations

from enum import StrEnum


class ErrorKind(StrEnum):
    """What went wrong with a command, as a producer reads it in a failed reply (``error.kind``)."""

    TIMEOUT = "timeout"
    UNAVAILABLE = "unavailable"
    REJECTED = "rejected"
    INVALID = "invalid"
    EXPIRED = "expired"
    CONFLICT = "conflict"


class S2SError(Exception):
    """Base of every error this package raises on purpose."""


class ConfigError(S2SError):
    """Invalid configuration; the message names the bad key."""


class DependencyUnavailable(S2SError):
    """A backing service is unreachable."""

    def __init__(self, dependency: str, detail: str) -> None:
        super().__init__(f"{dependency} unavailable: {detail}")
        self.dependency = dependency
        self.detail = detail


class DeadLetterReason(StrEnum):
    """Why a message went to the dead-letter queue (header ``x-s2s-reason``)."""

    INVALID_JSON = "invalid-json"
    SCHEMA_VIOLATION = "schema-violation"
    MISSING_IDEMPOTENCY_KEY = "missing-idempotency-key"
    UNKNOWN_ROUTE = "unknown-route"
    UNROUTABLE = "unroutable"
    TOO_LARGE = "too-large"
    INVALID_HEADER = "invalid-header"
    RETRIES_EXHAUSTED = "retries-exhausted"
    REJECTED_BY_DOWNSTREAM = "rejected-by-downstream"
    REJECTED_BY_ENDPOINT = "rejected-by-endpoint"  # a webhook endpoint answered 4xx (not 408/410/429)
    ENDPOINT_GONE = "endpoint-gone"  # a webhook endpoint answered 410 Gone: its subscription is disabled


class CommandRejected(S2SError):
    """The command itself is bad: it goes to the dead-letter queue with a reason, never retried."""

    def __init__(self, reason: DeadLetterReason, detail: str) -> None:
        super().__init__(f"{reason.value}: {detail}")
        self.reason = reason
        self.detail = detail


class RedeliverCause(StrEnum):
    """Why a message is parked in a delay queue (metric label ``reason``)."""

    IN_FLIGHT = "in-flight"
    REDIS_UNAVAILABLE = "redis-unavailable"
    MONGODB_UNAVAILABLE = "mongodb-unavailable"
    RETRY = "retry"
    BREAKER_OPEN = "breaker-open"


class Redeliver(S2SError):
    """Ask for the message to come back later through a delay queue (never a hot requeue loop)."""

    def __init__(
        self,
        cause: RedeliverCause,
        detail: str,
        delay: float,
        *,
        calls: int | None = None,
        first_call_at: int | None = None,
    ) -> None:
        super().__init__(f"redeliver in {delay:.1f}s ({cause.value}): {detail}")
        self.cause = cause
        self.detail = detail
        self.delay = delay
        # after downstream calls: how many were made so far and when the first one was (epoch ms), carried
        # on the redelivered copy so retry limits hold across deliveries
        self.calls = calls
        self.first_call_at = first_call_at


class Duplicate(S2SError):
    """The key was answered before: the delivery is acked and the stored reply re-sent, with no call.

    ``state`` says how it was recognised (metric label ``state``: ``done`` from the Redis record, ``backstop``
    from the outbox). The stored record, when the step that found it has it at hand, travels on the job.
    """

    def __init__(self, state: str) -> None:
        super().__init__(f"duplicate ({state})")
        self.state = state


class KeyConflict(S2SError):
    """The key was used before with another payload: a failed reply of kind ``conflict``, no call."""

    detail = "idempotency key reused with a different payload"

    def __init__(self) -> None:
        super().__init__(self.detail)


class DeadLetterQueueError(S2SError):
    """``s2s-daemon dlq ...`` cannot do what was asked; the message says why."""
