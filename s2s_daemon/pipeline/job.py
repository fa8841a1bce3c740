"""What travels through the steps: the parsed ``Command`` and the ``Job`` each step adds its findings to."""

from __future__ import annotations

import contextvars
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from faststream.rabbit.message import RabbitMessage

from s2s_daemon.idempotency import Claim
from s2s_daemon.messaging import RetryState
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability import TraceContext, get_logger
from s2s_daemon.outbox import OutboxRecord, WriteResult
from s2s_daemon.resilience import CallOutcome
from s2s_daemon.schemas import BodySchema
from s2s_daemon.settings import RouteSettings

__all__ = ["Command", "Job", "Route", "Step", "log"]

# The pipeline's lines keep the logger name they always had: dashboards and alerts select on it.
log = get_logger("s2s.consumer")


@dataclass(frozen=True, slots=True)
class Route:
    """A declared route (``<downstream>.<action>``) with its compiled body schema."""

    downstream: str
    action: str
    settings: RouteSettings
    validator: BodySchema | None


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command, ready for the downstream call; it carries its correlation id and trace context."""

    key: str
    routing_key: str
    downstream: str
    action: str
    body: Any
    fingerprint: str
    correlation_id: str
    reply_to: str | None
    trace: TraceContext | None  # the producer's traceparent and tracestate, None when it sent none (or an invalid one)
    deadline_ms: int | None
    retry: RetryState
    received_at: int

    @property
    def attempt(self) -> int:
        return self.retry.attempt

    def trace_headers(self) -> dict[str, str]:
        """Headers of a reply sent straight back (not through the outbox): the producer's trace context."""
        return self.trace.headers() if self.trace is not None else {}


class Job:
    """One delivery on its way through the steps. Each step reads what the steps before it set."""

    __slots__ = (
        "call_trace",
        "claim",
        "command",
        "local_key",
        "log_tokens",
        "msg",
        "outcome",
        "reply",
        "result",
        "route",
        "routing_key",
        "status",
        "stored",
    )

    def __init__(self, msg: RabbitMessage, routing_key: str) -> None:
        self.msg = msg
        self.routing_key = routing_key
        self.command: Command | None = None  # parse
        self.route: Route | None = None  # parse
        self.log_tokens: Mapping[str, contextvars.Token[Any]] | None = None  # parse: the log context it bound
        self.local_key: tuple[str, str] | None = None  # local dedupe: the key this task holds in the process
        self.claim: Claim | None = None  # claim: our Redis lease
        self.call_trace: TraceContext | None = None  # call: our span, sent downstream and stored with the reply
        self.outcome: CallOutcome | None = None  # call
        self.reply: c.Reply | None = None  # record
        self.result: WriteResult | None = None  # record
        self.stored: OutboxRecord | None = None  # dedupe or record: the record that answered the key before
        self.status = "error"  # complete: the outcome label of this delivery

    # Accessors for the steps after the one that sets each value (a step out of order fails loudly).
    @property
    def cmd(self) -> Command:
        assert self.command is not None, "parse runs first"
        return self.command

    @property
    def lease(self) -> Claim:
        assert self.claim is not None, "claim runs before this step"
        assert self.claim.token is not None
        return self.claim


class Step(Protocol):
    """One step of the pipeline: reads and extends the job, or ends the delivery with a named exception."""

    async def __call__(self, job: Job) -> None: ...
