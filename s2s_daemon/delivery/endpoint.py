"""One subscription's consumer: an event from its queue -> a signed POST to its endpoint -> ack.

Each subscription has its own quorum queue bound to the events exchange with its patterns, its own consumer
and its own resilient client (bulkhead, breaker, retry schedule, retry budget), so a slow or dead endpoint
never delays another. One delivery of a message makes at most one HTTP attempt; every wait between attempts
is parked in the endpoint's delay queues (the consumer slot is freed), and the message comes back carrying its
attempts so far (``x-s2s-calls``, ``x-s2s-first-call-at``).

Outcomes, each acked only after what it needs is durable (a park or dead-letter publish is confirmed first):

* 2xx: delivered.
* retryable (timeout, connection error, 408, 429, 5xx), attempts left: parked for the schedule's wait, or the
  endpoint's ``Retry-After`` when longer; an open breaker or a refused retry budget parks it too.
* 410 Gone: the subscription is disabled (persisted, every replica pauses its consumer; events wait in the
  queue until ``s2s-daemon subscriptions enable``), this delivery goes to the DLQ (``endpoint-gone``).
* other 4xx: the DLQ at once (``rejected-by-endpoint``); retries ran out: the DLQ (``retries-exhausted``).
  ``s2s-daemon dlq replay`` sends them back to this endpoint's queue, with the same ``webhook-id``.

``webhook-id`` is the event's id (the AMQP message_id the relay publishes with, the CloudEvents ``id``), so it is
the same on every attempt and every redelivery: receivers dedupe on it. ``webhook-timestamp`` and the
signatures are made afresh for each attempt.
"""

from __future__ import annotations

import dataclasses
import hashlib
import time
from typing import Any

import orjson
from faststream.rabbit.message import RabbitMessage
from jsonschema import Draft202012Validator

from s2s_daemon.clock import now_ms
from s2s_daemon.delivery.log import DeliveryLog, EndpointStates
from s2s_daemon.delivery.signing import WebhookSigner
from s2s_daemon.errors import DeadLetterReason
from s2s_daemon.messaging import AmqpPublisher, RetryState, Topology, header_int, header_text
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability import Metrics, get_logger
from s2s_daemon.resilience import CallOutcome, DownstreamClient, HttpRequest
from s2s_daemon.settings import SubscriptionSettings

__all__ = ["EndpointDelivery"]

log = get_logger("s2s.delivery")
_USER_AGENT = "s2s-daemon-webhooks/1"
_DUE_SLACK_MS = 500
_DEAD_OUTCOME = {  # metric label of a dead-lettered delivery, by reason
    DeadLetterReason.ENDPOINT_GONE: "gone",
    DeadLetterReason.REJECTED_BY_ENDPOINT: "rejected",
    DeadLetterReason.INVALID_JSON: "invalid",
}  # a parked copy back this early is due (the delay queues' TTL is not exact)


class EndpointDelivery:
    """The FastStream handler of one subscription's queue."""

    def __init__(
        self,
        name: str,
        settings: SubscriptionSettings,
        client: DownstreamClient,
        topology: Topology,
        publisher: AmqpPublisher,
        delivery_log: DeliveryLog,
        states: EndpointStates,
        metrics: Metrics,
    ) -> None:
        self.name = name
        self._settings = settings
        self._client = client
        self._signer = WebhookSigner.from_secrets([s.get_secret_value() for s in settings.secrets])
        self._topology = topology
        self._publisher = publisher
        self._log = delivery_log
        self._states = states
        self._metrics = metrics
        self._filter = Draft202012Validator(settings.filter) if settings.filter is not None else None
        self._max_elapsed_ms = int(settings.downstream().retry.max_elapsed * 1000)
        self._headers = {"content-type": "application/json", "user-agent": _USER_AGENT, **settings.headers}

    async def handle(self, msg: RabbitMessage) -> None:
        raw = msg.raw_message
        headers = raw.headers or {}
        routing_key = header_text(headers.get(c.H_ROUTING_KEY)) or raw.routing_key or ""
        event_id = header_text(raw.message_id) or "sha-" + hashlib.sha256(raw.body).hexdigest()[:24]
        if self._states.disabled(self.name):
            # the consumer is being paused: hand it back to the queue, where it waits for the endpoint's return
            self._count("held")
            await msg.nack(requeue=True)
            return
        not_before = header_int(headers.get(c.H_NOT_BEFORE))
        if not_before is not None and now_ms() < not_before - _DUE_SLACK_MS:
            await self._park(msg, (not_before - now_ms()) / 1000, {})  # the ladder's top rung was shorter
            return
        try:
            event: Any = orjson.loads(raw.body)
        except orjson.JSONDecodeError:  # not one of ours: nothing to sign and send
            await self._dead_letter(msg, event_id, routing_key, DeadLetterReason.INVALID_JSON, "event is not JSON")
            return
        if self._filter is not None and not self._filter.is_valid(event):
            self._count("filtered")
            await msg.ack()
            return
        retry = RetryState.from_headers(headers)
        first_call_at = retry.first_call_at or now_ms()
        if retry.first_call_at and now_ms() - retry.first_call_at > self._max_elapsed_ms:
            await self._dead_letter(
                msg, event_id, routing_key, DeadLetterReason.RETRIES_EXHAUSTED, "retry horizon passed"
            )
            return
        outcome, seconds = await self._send(raw.body, event_id, retry, first_call_at)
        if outcome.attempts > retry.calls:  # an attempt was made (not refused by the breaker or the budget)
            status = "delivered" if outcome.ok else "retrying" if outcome.redeliver_after is not None else "failed"
            await self._record(event_id, routing_key, status, outcome, seconds)
        if outcome.ok:
            self._count("delivered")
            await msg.ack()
            return
        if outcome.redeliver_after is not None:
            state = retry.redelivered(outcome.attempts, first_call_at)
            self._count("retrying")
            await self._park(msg, outcome.redeliver_after, state.to_headers())
            log.info(
                "delivery.retry_scheduled",
                subscription=self.name,
                event_id=event_id,
                attempts=outcome.attempts,
                wait_s=round(outcome.redeliver_after, 3),
                error=outcome.message,
            )
            return
        if outcome.status_code == 410:
            await self._states.set(self.name, True, f"endpoint answered 410 Gone for event {event_id}")
            await self._dead_letter(msg, event_id, routing_key, DeadLetterReason.ENDPOINT_GONE, outcome.message)
            return
        reason = DeadLetterReason.RETRIES_EXHAUSTED if outcome.retryable else DeadLetterReason.REJECTED_BY_ENDPOINT
        await self._dead_letter(
            msg, event_id, routing_key, reason, f"{outcome.message} after {outcome.attempts} attempts"
        )

    async def _send(
        self, body: bytes, event_id: str, retry: RetryState, first_call_at: int
    ) -> tuple[CallOutcome, float]:
        def sign(request: HttpRequest) -> HttpRequest:
            signed = self._signer.headers(event_id, int(time.time()), body)
            return dataclasses.replace(request, headers={**request.headers, **signed})

        started = time.perf_counter()
        outcome = await self._client.send(
            HttpRequest("POST", self._settings.url, self._headers, body),
            previous_attempts=retry.calls,
            previous_elapsed=(now_ms() - first_call_at) / 1000 if retry.first_call_at else 0.0,
            prepare=sign,
        )
        seconds = time.perf_counter() - started
        if outcome.attempts > retry.calls:
            self._metrics.webhook_delivery_seconds.labels(self.name).observe(seconds)
        return outcome, seconds

    async def _park(self, msg: RabbitMessage, wait: float, headers: dict[str, Any]) -> None:
        raw = msg.raw_message
        seconds = self._topology.subscription_delay_rung(wait)
        routing_key = header_text((raw.headers or {}).get(c.H_ROUTING_KEY)) or raw.routing_key or ""
        extra = {**headers, c.H_ROUTING_KEY: routing_key, c.H_NOT_BEFORE: now_ms() + int(wait * 1000)}
        await self._publisher.park_delivery(raw, self.name, seconds, extra)
        await msg.ack()

    async def _dead_letter(
        self, msg: RabbitMessage, event_id: str, routing_key: str, reason: DeadLetterReason, detail: str
    ) -> None:
        outcome = _DEAD_OUTCOME.get(reason, "exhausted")
        await self._publisher.dead_letter(msg.raw_message, reason, detail, routing_key, {c.H_SUBSCRIPTION: self.name})
        await self._record(event_id, routing_key, "dead-lettered", None, None, f"{reason.value}: {detail}")
        self._metrics.dead_lettered.labels(reason.value).inc()
        self._count(outcome)
        await msg.ack()
        log.warning(
            "delivery.dead_lettered", subscription=self.name, event_id=event_id, reason=reason.value, detail=detail
        )

    async def _record(
        self,
        event_id: str,
        routing_key: str,
        status: str,
        outcome: CallOutcome | None,
        seconds: float | None,
        error: str | None = None,
    ) -> None:
        """One line of the delivery log: an attempt (``outcome`` and ``seconds``), or a state change."""
        if outcome is not None and not outcome.ok:
            error = outcome.message
        try:
            await self._log.attempt(
                self.name,
                event_id,
                routing_key,
                status=status,
                status_code=outcome.status_code if outcome is not None else None,
                error=error,
                duration_ms=None if seconds is None else round(seconds * 1000),
            )
        except Exception:
            # the log is for people; a MongoDB hiccup must not turn a delivered webhook into a redelivery
            log.warning("delivery.log_failed", subscription=self.name, event_id=event_id, exc_info=True)

    def _count(self, outcome: str) -> None:
        self._metrics.webhook_deliveries.labels(self.name, outcome).inc()
