"""Step 1, parse: the delivery becomes a ``Command`` or is rejected for good (``CommandRejected``)."""

from __future__ import annotations

from typing import Any

import orjson
import structlog
from faststream.rabbit.message import RabbitMessage

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import CommandRejected, DeadLetterReason
from s2s_daemon.idempotency import fingerprint
from s2s_daemon.messaging import RetryState, header_text, message_correlation, read_deadline
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability import clean_id, new_correlation_id
from s2s_daemon.pipeline.job import Command, Job, Route
from s2s_daemon.schemas import BodySchema
from s2s_daemon.settings import Settings

__all__ = ["Parse", "delivery_correlation_id", "idempotency_key"]


def delivery_correlation_id(msg: RabbitMessage) -> str:
    """The delivery's correlation id: the one the message brings, else the one the correlation middleware
    generated for it and stored on the message, else a new one."""
    found, _ = message_correlation(msg.raw_message, with_tracestate=False)
    return found or clean_id(msg.correlation_id) or new_correlation_id()


def idempotency_key(raw: Any) -> str | None:
    """The command's key: the ``idempotency-key`` header, else the AMQP ``message_id``."""
    return clean_id(header_text((raw.headers or {}).get(c.H_IDEMPOTENCY_KEY))) or clean_id(header_text(raw.message_id))


class Parse:
    """Size, route, JSON, schema, idempotency key and deadline; then the log context is bound from the command."""

    __slots__ = ("_max_body_bytes", "_require_key", "_routes")

    def __init__(self, settings: Settings) -> None:
        self._max_body_bytes = settings.amqp.max_body_bytes
        self._require_key = settings.amqp.require_idempotency_key
        self._routes: dict[str, Route] = {}
        for ds_name, ds in settings.downstreams.items():
            for action, route in ds.routes.items():
                validator = BodySchema(route.json_schema) if route.json_schema else None
                self._routes[f"{ds_name}.{action}"] = Route(ds_name, action, route, validator)

    async def __call__(self, job: Job) -> None:
        job.command, job.route = self.parse(job.msg, job.routing_key)
        cmd = job.command
        job.log_tokens = structlog.contextvars.bind_contextvars(
            message_id=cmd.key, downstream=cmd.downstream, attempt=cmd.attempt, correlation_id=cmd.correlation_id
        )

    def parse(self, msg: RabbitMessage, routing_key: str) -> tuple[Command, Route]:
        raw = msg.raw_message
        if len(raw.body) > self._max_body_bytes:
            raise CommandRejected(
                DeadLetterReason.TOO_LARGE,
                f"body is {len(raw.body)} bytes, the limit is {self._max_body_bytes}",
            )
        route = self._routes.get(routing_key)
        if route is None:
            raise CommandRejected(DeadLetterReason.UNKNOWN_ROUTE, f"no route declared for {routing_key!r}")
        headers = raw.headers or {}
        try:
            body = orjson.loads(raw.body)
        except orjson.JSONDecodeError as exc:
            raise CommandRejected(DeadLetterReason.INVALID_JSON, f"body is not JSON: {exc}") from None
        if route.validator is not None and (violation := route.validator.violation(body)) is not None:
            raise CommandRejected(DeadLetterReason.SCHEMA_VIOLATION, violation)
        fp = fingerprint(routing_key, body)
        key = idempotency_key(raw)
        if key is None:
            if self._require_key:
                raise CommandRejected(
                    DeadLetterReason.MISSING_IDEMPOTENCY_KEY,
                    "set the AMQP message_id or an 'idempotency-key' header (printable ASCII, <= 200 chars)",
                )
            key = f"fp-{fp}"
        correlation_id, trace = message_correlation(raw)
        command = Command(
            key=key,
            routing_key=routing_key,
            downstream=route.downstream,
            action=route.action,
            body=body,
            fingerprint=fp,
            correlation_id=correlation_id or clean_id(msg.correlation_id) or new_correlation_id(),
            reply_to=raw.reply_to or None,
            trace=trace,
            deadline_ms=read_deadline(headers.get(c.H_DEADLINE)),
            retry=RetryState.from_headers(headers),
            received_at=now_ms(),
        )
        return command, route
