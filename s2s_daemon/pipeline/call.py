"""Step 5, call: the downstream, through its resilient client (deadline, bulkhead, breaker, retries, budget).

The client never raises for downstream trouble: it returns an outcome. An outcome that asks to come back later
(a long wait, an open breaker, a retry the budget refused) frees the key and ends the delivery with
``Redeliver``, carrying the calls made so far so the retry limits hold across deliveries.
"""

from __future__ import annotations

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import Redeliver, RedeliverCause
from s2s_daemon.idempotency import IdempotencyStore
from s2s_daemon.observability.tracing import NO_TRACING, Tracing
from s2s_daemon.pipeline.dedupe import release_quietly
from s2s_daemon.pipeline.job import Job
from s2s_daemon.resilience import CallRefused, DownstreamClient

__all__ = ["Call"]


class Call:
    __slots__ = ("_clients", "_store", "_tracing")

    def __init__(
        self, clients: dict[str, DownstreamClient], store: IdempotencyStore, tracing: Tracing = NO_TRACING
    ) -> None:
        self._clients = clients
        self._store = store
        self._tracing = tracing

    async def __call__(self, job: Job) -> None:
        cmd, claim = job.cmd, job.lease
        assert job.route is not None
        # Tracing on: the consumer span's context (kept in the outbox record: the relay's producer spans are its
        # children); each attempt's client span puts its own in the headers. Off: a new span id, made up.
        trace = self._tracing.forward(cmd.trace)
        headers = {"idempotency-key": cmd.key, "x-correlation-id": cmd.correlation_id, **trace.headers()}
        first_call_at = cmd.retry.first_call_at or now_ms()
        outcome = await self._clients[cmd.downstream].call(
            job.route.settings,
            cmd.body,
            headers,
            cmd.deadline_ms,
            previous_attempts=cmd.retry.calls,
            previous_elapsed=max(0, now_ms() - first_call_at) / 1000 if cmd.retry.first_call_at else 0.0,
        )
        if outcome.redeliver_after is not None:
            # Nothing is in flight now: free the key so whichever replica gets the copy can call at once.
            await release_quietly(self._store, cmd, claim)
            breaker_open = outcome.refused is CallRefused.BREAKER_OPEN
            raise Redeliver(
                RedeliverCause.BREAKER_OPEN if breaker_open else RedeliverCause.RETRY,
                outcome.message,
                outcome.redeliver_after,
                calls=outcome.attempts,
                first_call_at=first_call_at,
            )
        job.call_trace, job.outcome = trace, outcome
