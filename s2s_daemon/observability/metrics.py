"""Prometheus metrics: ``s2s_`` prefix, small label sets, one unit per histogram.

One ``Metrics`` per daemon with its own registry (no global state: tests run several daemons in one
process). Label values come only from configuration (downstream names) and closed enums (outcomes).

The latency histograms carry exemplars (the trace id of a recorded span, when tracing is on); Prometheus
format 0.0.4 cannot carry them, so ``exposition`` answers OpenMetrics to a scraper that asks for it
(``Accept: application/openmetrics-text``; Prometheus does when exemplar storage is on), else the text format.
The registry also holds prometheus-client's process, platform and GC collectors and ``s2s_build_info``.
"""

from __future__ import annotations

import platform

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)
from prometheus_client.exposition import choose_encoder, generate_latest

from s2s_daemon.observability.version import package_version

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r = self.registry
        ProcessCollector(registry=r)  # process_cpu_seconds_total, process_resident_memory_bytes, open fds...
        PlatformCollector(registry=r)  # python_info
        GCCollector(registry=r)  # python_gc_*
        Info("s2s_build", "The running build: package and Python versions.", registry=r).info(
            {"version": package_version(), "python_version": platform.python_version()}
        )
        self.commands = Counter(
            "s2s_commands_total",
            "Commands handled, by final outcome of this delivery.",
            ["downstream", "outcome"],
            registry=r,
        )
        self.handler_seconds = Histogram(
            "s2s_handler_duration_seconds",
            "Time from delivery to ack for one command.",
            ["downstream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.downstream_calls = Counter(
            "s2s_downstream_calls_total",
            "HTTP attempts to downstreams, by outcome class.",
            ["downstream", "outcome"],
            registry=r,
        )
        self.downstream_seconds = Histogram(
            "s2s_downstream_call_duration_seconds",
            "Duration of one HTTP attempt to a downstream.",
            ["downstream"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.dedupe_hits = Counter(
            "s2s_dedupe_hits_total",
            "Deliveries answered from the idempotency record instead of a downstream call.",
            ["downstream", "state"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "s2s_dead_lettered_total",
            "Messages the daemon moved to the dead-letter queue, by reason.",
            ["reason"],
            registry=r,
        )
        self.webhooks = Counter(
            "s2s_webhooks_total",
            "Webhook deliveries by configured source and result (accepted, duplicate, or why refused).",
            ["service", "result"],
            registry=r,
        )
        self.redelivered = Counter(
            "s2s_redelivered_total",
            "Messages sent through a delay queue to come back later, by reason.",
            ["downstream", "reason"],
            registry=r,
        )
        self.outbox_backlog = Gauge(
            "s2s_outbox_backlog",
            "Outbox documents by status (sampled by the relay).",
            ["status"],
            registry=r,
        )
        self.outbox_published = Counter(
            "s2s_outbox_published_total", "Outbox documents published and confirmed.", registry=r
        )
        self.outbox_publish_failures = Counter(
            "s2s_outbox_publish_failures_total",
            "Outbox publish attempts that were not confirmed.",
            registry=r,
        )
        self.outbox_lease_expired = Counter(
            "s2s_outbox_lease_expired_total",
            "Outbox documents claimed again after a relay's lease ran out (published again: duplicate replies).",
            registry=r,
        )
        self.outbox_lag_seconds = Histogram(
            "s2s_outbox_publish_lag_seconds",
            "Time from outbox write to confirmed publish.",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.relay_batch_size = Histogram(
            "s2s_relay_batch_size",
            "Documents per relay claim.",
            buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500),
            registry=r,
        )

        self.breaker_state = Gauge(
            "s2s_breaker_state",
            "Circuit breaker state per downstream: 0 closed, 1 half-open, 2 open.",
            ["downstream"],
            registry=r,
        )
        self.breaker_transitions = Counter(
            "s2s_breaker_transitions_total",
            "Circuit breaker transitions, by the state entered.",
            ["downstream", "to"],
            registry=r,
        )
        self.breaker_rejected = Counter(
            "s2s_breaker_rejected_total",
            "Calls not made because the breaker was open (the command is redelivered later).",
            ["downstream"],
            registry=r,
        )
        self.retries = Counter(
            "s2s_retries_total",
            "Retries of downstream calls, in-process or through a delayed redelivery.",
            ["downstream", "where"],
            registry=r,
        )
        self.retry_budget_refused = Counter(
            "s2s_retry_budget_refused_total",
            "Retries the retry budget refused (the command waits in a delay queue instead).",
            ["downstream"],
            registry=r,
        )
        self.consumers_paused = Gauge(
            "s2s_consumer_paused",
            "1 while a downstream's command consumer is paused because its breaker is open.",
            ["downstream"],
            registry=r,
        )
        # Webhooks sent to the subscriptions' endpoints (s2s_daemon.delivery), labelled by subscription name.
        self.webhook_deliveries = Counter(
            "s2s_webhook_deliveries_total",
            "Webhook deliveries by outcome: delivered, retrying (parked for a later attempt), rejected (4xx), gone "
            "(410), exhausted (retries ran out), invalid (not JSON), filtered (the event did not match), held "
            "(endpoint disabled).",
            ["subscription", "outcome"],
            registry=r,
        )
        self.webhook_delivery_seconds = Histogram(
            "s2s_webhook_delivery_duration_seconds",
            "Duration of one HTTP attempt to a webhook endpoint.",
            ["subscription"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.webhook_breaker_state = Gauge(
            "s2s_webhook_breaker_state",
            "Circuit breaker state per webhook endpoint: 0 closed, 1 half-open, 2 open.",
            ["subscription"],
            registry=r,
        )
        self.webhook_endpoint_disabled = Gauge(
            "s2s_webhook_endpoint_disabled",
            "1 while a subscription is disabled (its endpoint answered 410 Gone), until it is enabled again.",
            ["subscription"],
            registry=r,
        )
        # Sampled by observability.sampler: broker-wide figures (every replica reports the same) and readiness.
        self.dlq_messages = Gauge(
            "s2s_dlq_messages", "Ready messages in the dead-letter queue (sampled from RabbitMQ).", registry=r
        )
        self.consumers = Gauge(
            "s2s_consumers",
            "Consumers on each command queue, all replicas together (sampled from RabbitMQ).",
            ["queue"],
            registry=r,
        )
        self.ready = Gauge(
            "s2s_ready",
            "1 while this replica is ready (what /readyz answers), 0 from the start of a drain.",
            registry=r,
        )

    def render(self) -> bytes:
        """The Prometheus text format (0.0.4), no exemplars."""
        return generate_latest(self.registry)

    def exposition(self, accept: str | None) -> tuple[bytes, str]:
        """The body and content type for a scrape with this ``Accept`` header: OpenMetrics (with exemplars) when
        the scraper accepts it, else the text format."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
