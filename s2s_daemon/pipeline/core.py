"""The command pipeline: the ordered steps one delivery goes through, and how each early end is answered.

    parse -> local dedupe -> claim -> backstop -> call -> record -> ack -> complete

``CommandPipeline.steps`` is that list, in that order, and the only place it is written down. A step either
adds to the ``Job`` or ends the delivery with a named exception, answered by ``Exits``:

* ``Duplicate`` / ``KeyConflict``: answered from the stored record, or with a ``conflict`` reply; acked.
* ``CommandRejected``: the command can never succeed: copied to the DLQ with the reason, acked.
* ``Redeliver``: not now (key in flight elsewhere, Redis or MongoDB down, a retry later): parked in a delay
  queue, acked.
* anything else escapes to FastStream (NACK_ON_ERROR): requeued; the quorum queue's delivery limit
  dead-letters a message that keeps crashing the handler.

The AMQP message is acked only after the outbox write returned (``Record`` before ``Ack``).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog
from faststream.rabbit.message import RabbitMessage

from s2s_daemon.errors import CommandRejected, DeadLetterReason, Duplicate, KeyConflict, Redeliver
from s2s_daemon.idempotency import IdempotencyStore
from s2s_daemon.messaging import AmqpPublisher, Topology, header_text, message_correlation
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, SpanKind, Tracing
from s2s_daemon.outbox import OutboxWriter
from s2s_daemon.pipeline.call import Call
from s2s_daemon.pipeline.dedupe import Backstop, ClaimKey, LocalDedupe
from s2s_daemon.pipeline.exits import Exits
from s2s_daemon.pipeline.job import Job, Step
from s2s_daemon.pipeline.parse import Parse
from s2s_daemon.pipeline.record import Ack, Complete, Record
from s2s_daemon.pipeline.spans import consumer_attributes
from s2s_daemon.resilience import DownstreamClient
from s2s_daemon.settings import Settings

__all__ = ["CommandPipeline"]


class CommandPipeline:
    def __init__(
        self,
        settings: Settings,
        topology: Topology,
        store: IdempotencyStore,
        outbox: OutboxWriter,
        clients: dict[str, DownstreamClient],
        publisher: AmqpPublisher,
        metrics: Metrics,
        owner: str,
        on_redis_down: Callable[[], None] | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        """``on_redis_down``: called when a claim finds Redis unreachable (the daemon pauses its consumers)."""
        self._clients = clients
        self._metrics = metrics
        self._topology = topology
        self._tracing = tracing
        # keys a task of this process is handling now -> that task's fingerprint; taken *before* the Redis claim
        self._local = LocalDedupe({}, metrics)
        self.steps: tuple[Step, ...] = (
            Parse(settings),
            self._local,
            ClaimKey(store, owner, metrics, on_redis_down, tracing),
            Backstop(outbox, store, tracing),
            Call(clients, store, tracing),
            Record(outbox, store, publisher, metrics, settings.service_name, tracing),
            Ack(),
            Complete(store),
        )
        self.exits = Exits(topology, outbox, publisher, metrics, settings.amqp.max_redeliveries, tracing)

    async def handle(self, msg: RabbitMessage) -> None:
        """FastStream handler for a downstream's command queue: one consumer span (tracing on) around the steps."""
        raw = msg.raw_message
        started = time.perf_counter()
        routing_key = header_text((raw.headers or {}).get(c.H_ROUTING_KEY)) or raw.routing_key or ""
        downstream = routing_key.partition(".")[0]
        if downstream not in self._clients:
            downstream = "unknown"
        with self._tracing.span(
            f"process {self._topology.command_queue_name(downstream)}",
            SpanKind.CONSUMER,
            consumer_attributes(raw, routing_key) if self._tracing.enabled else None,
            parent=message_correlation(raw)[1] if self._tracing.enabled else None,
            root=True,
        ) as span:
            outcome = "error"  # an exception escapes to FastStream (requeued)
            try:
                outcome = await self._handle(msg, routing_key)
            finally:
                span.set("s2s.outcome", outcome)
                self._metrics.commands.labels(downstream, outcome).inc()
                self._metrics.handler_seconds.labels(downstream).observe(
                    time.perf_counter() - started, self._tracing.exemplar()
                )

    async def _handle(self, msg: RabbitMessage, routing_key: str) -> str:
        """The steps, and the answer of an early end; returns the outcome label."""
        job = Job(msg, routing_key)
        outcome = "error"
        try:
            try:
                for step in self.steps:
                    await step(job)
                outcome = job.status
            except Duplicate as exc:
                await self.exits.duplicate(job, exc)
                outcome = "duplicate"
            except KeyConflict:
                await self.exits.conflict(job)
                outcome = "conflict"
            finally:
                self._local.release(job)  # after the answer: a sibling delivery meanwhile waits, never calls
        except CommandRejected as exc:
            outcome = "dead-lettered"
            await self.exits.dead_letter(msg, exc, routing_key)
        except Redeliver as exc:
            outcome = "redelivered"
            await self.exits.redeliver(msg, exc, routing_key)
        finally:
            if job.log_tokens is not None:
                structlog.contextvars.reset_contextvars(**job.log_tokens)
        return outcome

    async def handle_unrouted(self, msg: RabbitMessage) -> None:
        """Messages no queue was bound for reach us through the commands exchange's alternate exchange."""
        routing_key = msg.raw_message.routing_key or ""
        exc = CommandRejected(DeadLetterReason.UNROUTABLE, f"no downstream is bound for routing key {routing_key!r}")
        self._metrics.commands.labels("unknown", "dead-lettered").inc()
        await self.exits.dead_letter(msg, exc, routing_key)
