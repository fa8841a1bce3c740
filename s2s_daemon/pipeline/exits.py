"""How a delivery that a step ended early is answered. One method per named exception:

* ``Duplicate``: the stored reply is sent again (if the producer asked for replies), the delivery acked.
* ``KeyConflict``: a failed reply of kind ``conflict``, the delivery acked; no downstream call.
* ``CommandRejected``: a copy goes to the DLQ with the reason, a failed reply of kind ``invalid``, acked.
* ``Redeliver``: a copy is parked in a delay queue, acked; after ``amqp.max_redeliveries`` it is rejected.
"""

from __future__ import annotations

from faststream.rabbit.message import RabbitMessage

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import (
    CommandRejected,
    DeadLetterReason,
    DependencyUnavailable,
    Duplicate,
    ErrorKind,
    KeyConflict,
    Redeliver,
    RedeliverCause,
)
from s2s_daemon.messaging import AmqpPublisher, RetryState, Topology
from s2s_daemon.observability import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, Tracing
from s2s_daemon.outbox import OutboxRecord, OutboxStatus, OutboxWriter, command_key
from s2s_daemon.pipeline.dedupe import DELAY_DEPENDENCY_S
from s2s_daemon.pipeline.job import Job, log
from s2s_daemon.pipeline.parse import delivery_correlation_id, idempotency_key
from s2s_daemon.pipeline.record import reply_for
from s2s_daemon.resilience import Backoff, CallOutcome

__all__ = ["Exits"]

# Causes whose delay the retry policy or the breaker already chose; the others climb the ladder.
_CHOSEN_DELAY = frozenset({RedeliverCause.RETRY, RedeliverCause.BREAKER_OPEN})


def _relay_will_answer(record: OutboxRecord, reply_to: str, correlation_id: str) -> bool:
    """The stored reply is not published yet (pending or leased) and is this very delivery's answer (same
    reply_to and correlation id): the relay sends it, and a direct copy now would be a second reply. This is the
    delivery whose outbox write went through although the store's answer was lost (it restarted): redelivered,
    it finds its own document. Another copy of the command (its own correlation id) is answered as usual."""
    return record.status in _UNSENT and record.reply_to == reply_to and record.correlation_id == correlation_id


_UNSENT = frozenset({OutboxStatus.PENDING, OutboxStatus.PUBLISHING})


class Exits:
    __slots__ = ("_ladder", "_max_redeliveries", "_metrics", "_outbox", "_publisher", "_topology", "_tracing")

    def __init__(
        self,
        topology: Topology,
        outbox: OutboxWriter,
        publisher: AmqpPublisher,
        metrics: Metrics,
        max_redeliveries: int,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._tracing = tracing
        self._topology = topology
        self._outbox = outbox
        self._publisher = publisher
        self._metrics = metrics
        self._max_redeliveries = max_redeliveries
        # back off along the delay queues as redeliveries of the same message pile up
        self._ladder = Backoff.ladder(topology.delay_ladder)

    async def duplicate(self, job: Job, exc: Duplicate) -> None:
        cmd = job.cmd
        self._metrics.dedupe_hits.labels(cmd.downstream, exc.state).inc()
        self._tracing.event("s2s.duplicate", {"s2s.idempotency.state": exc.state})
        resent = False
        if cmd.reply_to:
            record = job.stored
            if record is None:
                try:
                    record = await self._outbox.find(command_key(cmd.downstream, cmd.key))
                except DependencyUnavailable as error:
                    raise Redeliver(RedeliverCause.MONGODB_UNAVAILABLE, error.detail, DELAY_DEPENDENCY_S) from error
            if (
                record is not None
                and record.reply is not None
                and not _relay_will_answer(record, cmd.reply_to, cmd.correlation_id)
            ):
                await self._publisher.reply_direct(
                    cmd.reply_to,
                    cmd.correlation_id,
                    record.reply,
                    cmd.trace_headers(),
                    message_id=record.event_id,  # the original reply's message_id: duplicates are droppable
                )
                resent = True
        await job.msg.ack()
        log.info("command.duplicate", state=exc.state, resent=resent)

    async def conflict(self, job: Job) -> None:
        """Same key, different payload: a failed reply of kind ``conflict``, no downstream call."""
        cmd = job.cmd
        self._metrics.dedupe_hits.labels(cmd.downstream, "conflict").inc()
        if cmd.reply_to:
            outcome = CallOutcome(None, None, ErrorKind.CONFLICT, KeyConflict.detail, 0)
            reply = reply_for(cmd, outcome)
            await self._publisher.reply_direct(
                cmd.reply_to, cmd.correlation_id, reply.model_dump(mode="json"), cmd.trace_headers()
            )
        await job.msg.ack()
        log.warning("command.conflict", detail=KeyConflict.detail)

    async def dead_letter(self, msg: RabbitMessage, exc: CommandRejected, routing_key: str) -> None:
        raw = msg.raw_message
        await self._publisher.dead_letter(raw, exc.reason, exc.detail, routing_key)
        self._metrics.dead_lettered.labels(exc.reason.value).inc()
        self._tracing.event("s2s.dead_lettered", {"s2s.reason": exc.reason.value, "s2s.detail": exc.detail[:200]})
        if raw.reply_to:
            correlation_id = delivery_correlation_id(msg)
            body = {
                "status": "failed",
                "command_id": idempotency_key(raw),
                "correlation_id": correlation_id,
                "routing_key": routing_key,
                "error": {"kind": ErrorKind.INVALID.value, "message": f"{exc.reason.value}: {exc.detail}"},
                "completed_at": now_ms(),
            }
            try:
                await self._publisher.reply_direct(raw.reply_to, correlation_id, body, {})
            except Exception:
                log.warning("command.invalid_reply_failed", exc_info=True)
        await msg.ack()
        log.warning("command.dead_lettered", reason=exc.reason.value, detail=exc.detail, routing_key=routing_key)

    async def redeliver(self, msg: RabbitMessage, exc: Redeliver, routing_key: str) -> None:
        raw = msg.raw_message
        downstream = routing_key.partition(".")[0]
        retry = RetryState.from_headers(raw.headers).redelivered(exc.calls, exc.first_call_at)
        if retry.attempt > self._max_redeliveries:
            rejected = CommandRejected(
                DeadLetterReason.RETRIES_EXHAUSTED,
                f"redelivered {retry.attempt - 1} times, last because {exc.cause.value}: {exc.detail}",
            )
            await self.dead_letter(msg, rejected, routing_key)
            return
        wanted = exc.delay if exc.cause in _CHOSEN_DELAY else max(exc.delay, self._ladder.wait(retry.attempt - 1))
        seconds = self._topology.delay_rung(wanted)
        queue = await self._publisher.delay(raw, downstream, seconds, routing_key, retry.attempt, retry.to_headers())
        self._metrics.redelivered.labels(downstream, exc.cause.value).inc()
        self._tracing.event(
            "s2s.parked",
            {
                "s2s.cause": exc.cause.value,
                "s2s.delay_queue": queue,
                "s2s.delay_s": seconds,
                "s2s.attempt": retry.attempt,
            },
        )
        await msg.ack()
        log.info("command.redelivery_scheduled", cause=exc.cause.value, detail=exc.detail, delay_s=seconds)
