"""Steps 6-8: record the outcome durably, ack the delivery, complete the key.

The AMQP message is acked only after the outbox write returned: from then on the reply and the event are the
relay's to publish, and the outbox record answers every duplicate.
"""

from __future__ import annotations

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import CommandRejected, DeadLetterReason, DependencyUnavailable, Redeliver, RedeliverCause
from s2s_daemon.idempotency import IdempotencyStore
from s2s_daemon.messaging import AmqpPublisher
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, Tracing
from s2s_daemon.outbox import OutboxRecord, OutboxWriter
from s2s_daemon.pipeline.dedupe import DELAY_DEPENDENCY_S, answered, complete_quietly
from s2s_daemon.pipeline.job import Command, Job, log
from s2s_daemon.pipeline.spans import outbox_span
from s2s_daemon.resilience import CallOutcome

__all__ = ["Ack", "Complete", "Record", "reply_for"]


def reply_for(cmd: Command, outcome: CallOutcome) -> c.Reply:
    """The reply a producer receives (and an event carries) for this outcome."""
    result = error = None
    if outcome.ok:
        assert outcome.status_code is not None
        result = c.DownstreamResult(status_code=outcome.status_code, body=outcome.body)
    else:
        assert outcome.error_kind is not None
        error = c.ReplyError(
            kind=outcome.error_kind,
            message=outcome.message,
            status_code=outcome.status_code,
            body=outcome.body,
        )
    return c.Reply(
        status="succeeded" if outcome.ok else "failed",
        command_id=cmd.key,
        correlation_id=cmd.correlation_id,
        routing_key=cmd.routing_key,
        downstream=cmd.downstream,
        action=cmd.action,
        attempts=outcome.attempts,
        result=result,
        error=error,
        received_at=cmd.received_at,
        completed_at=now_ms(),
    )


class Record:
    """The outbox record of the reply and the event (durable: majority + journal). A command whose retries ran
    out also goes to the DLQ for repair; its producer has the failed reply."""

    __slots__ = ("_metrics", "_outbox", "_publisher", "_service_name", "_store", "_tracing")

    def __init__(
        self,
        outbox: OutboxWriter,
        store: IdempotencyStore,
        publisher: AmqpPublisher,
        metrics: Metrics,
        service_name: str,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._tracing = tracing
        self._outbox = outbox
        self._store = store
        self._publisher = publisher
        self._metrics = metrics
        self._service_name = service_name

    async def __call__(self, job: Job) -> None:
        cmd, claim, outcome = job.cmd, job.lease, job.outcome
        assert outcome is not None, "call runs before record"
        assert job.call_trace is not None
        reply = reply_for(cmd, outcome)
        record = OutboxRecord.for_command(cmd, reply, job.call_trace, self._service_name)
        try:
            with outbox_span(self._tracing, self._outbox, "insert") as span:
                result = await self._outbox.write(record)
                span.set("s2s.outbox.created", result.created)
        except DependencyUnavailable as exc:
            # The call may have had an effect: keep the lease (no parallel call), come back later; the
            # downstream sees the same Idempotency-Key if the lease expires before we return.
            raise Redeliver(RedeliverCause.MONGODB_UNAVAILABLE, exc.detail, DELAY_DEPENDENCY_S) from exc
        if not result.created:
            # Another worker recorded the key first (our lease ran out during the call): our call carried the
            # same Idempotency-Key; this delivery is answered like any duplicate, from the stored document.
            log.warning("command.recorded_elsewhere", attempts=outcome.attempts)
            await complete_quietly(self._store, cmd, claim, result.record.fingerprint)
            raise answered(job, result.record.fingerprint, "backstop", result.record)
        if outcome.retryable and not outcome.ok and result.created:
            # Retries ran out: the producer has its failed reply; the original goes to the DLQ for repair.
            exhausted = CommandRejected(
                DeadLetterReason.RETRIES_EXHAUSTED, f"{outcome.attempts} attempts: {outcome.message}"
            )
            await self._publisher.dead_letter(job.msg.raw_message, exhausted.reason, exhausted.detail, cmd.routing_key)
            self._metrics.dead_lettered.labels(exhausted.reason.value).inc()
        job.reply, job.result = reply, result


class Ack:
    """Only after the durable write: a crash before this point redelivers, and the outbox answers the copy."""

    __slots__ = ()

    async def __call__(self, job: Job) -> None:
        await job.msg.ack()


class Complete:
    """The Redis done record (best effort: the outbox record is the durable one), then the log line."""

    __slots__ = ("_store",)

    def __init__(self, store: IdempotencyStore) -> None:
        self._store = store

    async def __call__(self, job: Job) -> None:
        outcome, reply, result = job.outcome, job.reply, job.result
        assert outcome is not None, "call runs before complete"
        assert reply is not None, "record runs before complete"
        assert result is not None
        await complete_quietly(self._store, job.cmd, job.lease, result.record.fingerprint)
        log.info(
            "command.completed",
            status=reply.status,
            status_code=outcome.status_code,
            error_kind=outcome.error_kind.value if outcome.error_kind else None,
            attempts=outcome.attempts,
            created=result.created,
        )
        job.status = reply.status
