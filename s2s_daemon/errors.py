"""One error tree for the daemon.

S2SError
 +-- ConfigError                 a setting or the config file is wrong (start fails, naming the key)
 +-- DependencyUnavailable       RabbitMQ / Redis / MongoDB cannot be reached
 +-- CommandRejected             a command that can never succeed: dead-lettered with ``reason``
 +-- Redeliver                   control flow: hand the message back for a later attempt (``delay`` seconds)
 +-- DeadLetterQueueError        an operator's DLQ command cannot run (queue missing, bad selection)
"""

from __future__ import annotations

from enum import StrEnum


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

    def __init__(self, cause: RedeliverCause, detail: str, delay: float, headers: dict[str, int] | None = None) -> None:
        super().__init__(f"redeliver in {delay:.1f}s ({cause.value}): {detail}")
        self.cause = cause
        self.detail = detail
        self.delay = delay
        self.headers = headers or {}  # carried on the redelivered copy (e.g. attempts made so far)


class DeadLetterQueueError(S2SError):
    """``s2s-daemon dlq ...`` cannot do what was asked; the message says why."""
