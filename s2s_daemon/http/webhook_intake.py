"""``POST /api/webhooks/{service}``: verify a signed delivery, dedupe it, and hand it to the outbox.

Per request: unknown service -> 404 (no metric series is created for names nobody configured); the body is
read up to the source's limit (413 as soon as it is known to be larger); the source's verifier checks
content type, headers, signature and timestamp over the raw bytes (its status, 401 for a bad signature,
with a short reason); then one outbox insert whose unique key is ``wh:<service>:<delivery id>``. A
duplicate key is a replay: 200 with ``"duplicate": true`` and nothing new enqueued. 202 is answered only
after the insert returned (majority write concern); no downstream is called inline. The relay publishes
the CloudEvent on ``s2s.events`` with routing key ``webhook.<service>.<type>``.

A plain ASGI endpoint under Starlette's ``Route`` (which still matches the path, answers 405 and sets
``scope["route"]`` for the server span), not a request/response function: no ``Request``, no ``Response``
object, no async-generator body stream. Answers are the bytes and headers ``JSONResponse`` sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeAlias

import orjson
from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse
from starlette.types import Receive, Scope, Send

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.http.body import BodyTooLarge, InvalidContentLength, receive_limited
from s2s_daemon.http.correlation import scope_correlation
from s2s_daemon.http.webhooks import (
    RejectReason,
    VerifiedWebhook,
    Verifier,
    WebhookRejected,
    build_verifier,
)
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, Tracing
from s2s_daemon.outbox.record import OutboxRecord, webhook_routing_key
from s2s_daemon.outbox.writer import OutboxWriter
from s2s_daemon.pipeline.spans import outbox_span
from s2s_daemon.settings import WebhookSourceSettings

__all__ = ["WEBHOOK_RESULTS", "WebhookIntake", "webhook_routing_key"]

log = get_logger("s2s.webhooks")

_RETRY_AFTER = ((b"retry-after", b"5"),)
_CONTENT_TYPE_JSON = (b"content-type", b"application/json")
# status, JSON body, extra headers
_Answer: TypeAlias = tuple[int, dict[str, Any], Sequence[tuple[bytes, bytes]]]

# The closed set of the metric's `result` label.
WEBHOOK_RESULTS = frozenset(
    {"accepted", "duplicate", "unavailable", "bad_content_length"} | {r.name.lower() for r in RejectReason}
)


@dataclass(frozen=True, slots=True)
class _Source:
    settings: WebhookSourceSettings
    verifier: Verifier


class WebhookIntake:
    def __init__(
        self,
        sources: Mapping[str, WebhookSourceSettings],
        outbox: OutboxWriter,
        metrics: Metrics,
        service_name: str,
        tracing: Tracing = NO_TRACING,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._sources = {name: _Source(s, build_verifier(s)) for name, s in sources.items()}
        self._outbox = outbox
        self._metrics = metrics
        self._service_name = service_name
        self._clock = clock
        self._tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, answer, headers = await self._handle(scope, receive)
        except Exception:
            # What Starlette's ServerErrorMiddleware answers (the route may be served ahead of it, see app.py);
            # nothing was sent yet, and the exception still reaches the server's log.
            await PlainTextResponse("Internal Server Error", status_code=500)(scope, receive, send)
            raise
        body = orjson.dumps(answer)
        # the bytes and headers Starlette's JSONResponse sent (compact JSON, length, then type)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", b"%d" % len(body)), _CONTENT_TYPE_JSON],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def _handle(self, scope: Scope, receive: Receive) -> _Answer:
        service = scope["path_params"]["service"]
        source = self._sources.get(service)
        if source is None:
            return 404, {"error": "not_found", "detail": "unknown webhook source"}, ()
        headers = Headers(scope=scope)
        try:
            body = await receive_limited(receive, headers, source.settings.max_body_bytes)
            verified = source.verifier.verify(body, headers, now=self._clock())
        except BodyTooLarge:
            return self._refused(service, RejectReason.BODY_TOO_LARGE, 413)
        except InvalidContentLength:
            self._count(service, "bad_content_length")
            return 400, {"error": "rejected", "reason": "invalid content-length"}, ()
        except WebhookRejected as exc:
            return self._refused(service, exc.reason, exc.status)

        record = self._record(service, verified, scope)
        try:
            with outbox_span(self._tracing, self._outbox, "insert") as span:
                result = await self._outbox.write(record)
                span.set("s2s.outbox.created", result.created)
        except DependencyUnavailable as exc:
            self._count(service, "unavailable")
            log.warning("webhook.outbox_unavailable", service=service, error=exc.detail)
            return (
                503,
                {"error": "unavailable", "detail": "could not record the delivery; retry later"},
                _RETRY_AFTER,
            )
        answer = {
            "service": service,
            "delivery_id": verified.delivery_id,
            "event_type": verified.event_type,
            "event_id": result.record.event_id,
            "duplicate": not result.created,
        }
        if not result.created:
            self._count(service, "duplicate")
            if result.record.fingerprint != record.fingerprint:
                # Same delivery id, other bytes: the first one stands (GitHub's delivery id is not signed).
                log.warning("webhook.duplicate_with_other_body", service=service, delivery_id=verified.delivery_id)
            else:
                log.info("webhook.duplicate", service=service, delivery_id=verified.delivery_id)
            return 200, answer, ()
        self._count(service, "accepted")
        log.info("webhook.accepted", service=service, delivery_id=verified.delivery_id, event_type=verified.event_type)
        return 202, answer, ()

    def _refused(self, service: str, reason: RejectReason, status: int) -> _Answer:
        self._count(service, reason.name.lower())
        log.info("webhook.rejected", service=service, reason=reason.value, status=status)
        return status, {"error": "rejected", "reason": reason.value}, ()

    def _count(self, service: str, result: str) -> None:
        self._metrics.webhooks.labels(service, result).inc()

    def _record(self, service: str, verified: VerifiedWebhook, scope: Scope) -> OutboxRecord:
        correlation = scope_correlation(scope)
        return OutboxRecord.for_webhook(
            service,
            delivery_id=verified.delivery_id,
            event_type=verified.event_type,
            body=verified.body,  # the verifier proved it is a JSON object
            signed_at=verified.timestamp,
            correlation_id=correlation.correlation_id,
            trace=self._tracing.forward(correlation.trace),  # tracing on: the server span, linked by the relay
            service_name=self._service_name,
            received_ms=int(self._clock() * 1000),
        )
