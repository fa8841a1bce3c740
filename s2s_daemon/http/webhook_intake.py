"""``POST /api/webhooks/{service}``: verify a signed delivery, dedupe it, and hand it to the outbox.

Per request: unknown service -> 404 (no metric series is created for names nobody configured); the body is
read up to the source's limit (413 as soon as it is known to be larger); the source's verifier checks
content type, headers, signature and timestamp over the raw bytes (its status, 401 for a bad signature,
with a short reason); then one outbox insert whose unique key is ``wh:<service>:<delivery id>``. A
duplicate key is a replay: 200 with ``"duplicate": true`` and nothing new enqueued. 202 is answered only
after the insert returned (majority write concern); no downstream is called inline. The relay publishes
the CloudEvent on ``s2s.events`` with routing key ``webhook.<service>.<type>``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.http.body import BodyTooLarge, InvalidContentLength, read_limited
from s2s_daemon.http.correlation import correlation_of
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

_RETRY_AFTER_S = "5"

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

    async def handle(self, request: Request) -> Response:
        service = request.path_params["service"]
        source = self._sources.get(service)
        if source is None:
            return JSONResponse({"error": "not_found", "detail": "unknown webhook source"}, status_code=404)
        try:
            body = await read_limited(request, source.settings.max_body_bytes)
            verified = source.verifier.verify(body, request.headers, now=self._clock())
        except BodyTooLarge:
            return self._refused(service, RejectReason.BODY_TOO_LARGE, 413)
        except InvalidContentLength:
            self._count(service, "bad_content_length")
            return JSONResponse({"error": "rejected", "reason": "invalid content-length"}, status_code=400)
        except WebhookRejected as exc:
            return self._refused(service, exc.reason, exc.status)

        record = self._record(service, verified, request)
        try:
            with outbox_span(self._tracing, self._outbox, "insert") as span:
                result = await self._outbox.write(record)
                span.set("s2s.outbox.created", result.created)
        except DependencyUnavailable as exc:
            self._count(service, "unavailable")
            log.warning("webhook.outbox_unavailable", service=service, error=exc.detail)
            return JSONResponse(
                {"error": "unavailable", "detail": "could not record the delivery; retry later"},
                status_code=503,
                headers={"retry-after": _RETRY_AFTER_S},
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
            return JSONResponse(answer, status_code=200)
        self._count(service, "accepted")
        log.info("webhook.accepted", service=service, delivery_id=verified.delivery_id, event_type=verified.event_type)
        return JSONResponse(answer, status_code=202)

    def _refused(self, service: str, reason: RejectReason, status: int) -> Response:
        self._count(service, reason.name.lower())
        log.info("webhook.rejected", service=service, reason=reason.value, status=status)
        return JSONResponse({"error": "rejected", "reason": reason.value}, status_code=status)

    def _count(self, service: str, result: str) -> None:
        self._metrics.webhooks.labels(service, result).inc()

    def _record(self, service: str, verified: VerifiedWebhook, request: Request) -> OutboxRecord:
        correlation = correlation_of(request)
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
