"""Steps 2-4: local dedupe, claim, backstop. Who may call the downstream for this key, if anyone.

A key is called for at most once at a time: by one task of one process, under a Redis lease. A key answered
before ends here with ``Duplicate`` (answer again from the stored record) or ``KeyConflict`` (same key, other
payload); one in flight elsewhere with ``Redeliver`` (come back later, never a parallel call).
"""

from __future__ import annotations

from collections.abc import Callable

from s2s_daemon.errors import DependencyUnavailable, Duplicate, KeyConflict, Redeliver, RedeliverCause, S2SError
from s2s_daemon.idempotency import Claim, ClaimState, IdempotencyStore
from s2s_daemon.observability import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, SpanKind, Tracing
from s2s_daemon.outbox import OutboxRecord, OutboxWriter, command_key
from s2s_daemon.pipeline.job import Command, Job, log
from s2s_daemon.pipeline.spans import outbox_span, redis_attributes

__all__ = [
    "DELAY_DEPENDENCY_S",
    "DELAY_IN_FLIGHT_S",
    "Backstop",
    "ClaimKey",
    "LocalDedupe",
    "answered",
    "complete_quietly",
    "release_quietly",
]

_CLAIM_SPAN = redis_attributes("EVALSHA", "claim")

# Waits before a redelivery, by cause (the next delay-ladder rung up is used).
DELAY_IN_FLIGHT_S = 2.0
DELAY_DEPENDENCY_S = 5.0


def answered(job: Job, stored_fingerprint: str | None, state: str, record: OutboxRecord | None) -> S2SError:
    """The exception that ends a delivery whose key was answered before: a conflict when the payload differs.

    ``record``, the stored outbox record when the step has it at hand, is kept on the job for the answer."""
    if stored_fingerprint is not None and stored_fingerprint != job.cmd.fingerprint:
        return KeyConflict()
    job.stored = record
    return Duplicate(state)


class LocalDedupe:
    """Sibling deliveries in this process share one owner token, so Redis cannot tell them apart ("mine" for
    both, and their claim answers may be read in either order): a task of ours on the key wins here. The key
    is held until the delivery is answered (the pipeline lets go of ``job.local_key``)."""

    __slots__ = ("_active", "_metrics")

    def __init__(self, active: dict[tuple[str, str], str], metrics: Metrics) -> None:
        self._active = active  # key a task of this process is handling now -> that task's fingerprint
        self._metrics = metrics

    async def __call__(self, job: Job) -> None:
        cmd = job.cmd
        active_key = (cmd.downstream, cmd.key)
        local = self._active.get(active_key)
        if local is not None:
            if local != cmd.fingerprint:
                raise KeyConflict()
            self._metrics.dedupe_hits.labels(cmd.downstream, "in-flight").inc()
            raise Redeliver(RedeliverCause.IN_FLIGHT, "same key in flight in this process", DELAY_IN_FLIGHT_S)
        self._active[active_key] = cmd.fingerprint
        job.local_key = active_key

    def release(self, job: Job) -> None:
        if job.local_key is not None:
            del self._active[job.local_key]
            job.local_key = None


class ClaimKey:
    """The Redis lease on the key: ours (go on), done before (duplicate), or held elsewhere (come back later)."""

    __slots__ = ("_metrics", "_on_redis_down", "_owner", "_store", "_tracing")

    def __init__(
        self,
        store: IdempotencyStore,
        owner: str,
        metrics: Metrics,
        on_redis_down: Callable[[], None] | None = None,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        """``on_redis_down``: called when a claim finds Redis unreachable (the daemon pauses its consumers)."""
        self._store = store
        self._owner = owner
        self._metrics = metrics
        self._on_redis_down = on_redis_down
        self._tracing = tracing

    async def __call__(self, job: Job) -> None:
        cmd = job.cmd
        try:
            with self._tracing.span("EVALSHA", SpanKind.CLIENT, _CLAIM_SPAN) as span:
                claim = await self._store.claim(cmd.downstream, cmd.key, self._owner, cmd.fingerprint)
                span.set("s2s.idempotency.state", claim.state.value)
        except DependencyUnavailable as exc:
            if self._on_redis_down is not None:
                self._on_redis_down()  # pause every consumer until Redis answers again
            raise Redeliver(RedeliverCause.REDIS_UNAVAILABLE, exc.detail, DELAY_DEPENDENCY_S) from exc
        if claim.state in (ClaimState.CLAIMED, ClaimState.OURS):
            job.claim = claim
            return
        if claim.state is ClaimState.DONE:
            raise answered(job, claim.fingerprint, "done", None)
        # in flight elsewhere: never a parallel call
        if not claim.same_payload(cmd.fingerprint):
            raise KeyConflict()
        self._metrics.dedupe_hits.labels(cmd.downstream, "in-flight").inc()
        raise Redeliver(RedeliverCause.IN_FLIGHT, "same key in flight elsewhere", DELAY_IN_FLIGHT_S)


class Backstop:
    """Redis lost the done record (restart, eviction) or a crash hit before it was written: the outbox decides."""

    __slots__ = ("_outbox", "_store", "_tracing")

    def __init__(self, outbox: OutboxWriter, store: IdempotencyStore, tracing: Tracing = NO_TRACING) -> None:
        self._outbox = outbox
        self._store = store
        self._tracing = tracing

    async def __call__(self, job: Job) -> None:
        cmd, claim = job.cmd, job.lease
        try:
            with outbox_span(self._tracing, self._outbox, "find") as span:
                existing = await self._outbox.find(command_key(cmd.downstream, cmd.key))
                span.set("s2s.outbox.found", existing is not None)
        except DependencyUnavailable as exc:
            await release_quietly(self._store, cmd, claim)
            raise Redeliver(RedeliverCause.MONGODB_UNAVAILABLE, exc.detail, DELAY_DEPENDENCY_S) from exc
        if existing is not None:
            await complete_quietly(self._store, cmd, claim, existing.fingerprint)
            raise answered(job, existing.fingerprint, "backstop", existing)


async def complete_quietly(store: IdempotencyStore, cmd: Command, claim: Claim, fp: str) -> None:
    assert claim.token is not None
    try:
        await store.complete(cmd.downstream, cmd.key, claim.token, fp)
    except DependencyUnavailable:
        # Harmless: the lease expires and the outbox's unique key answers the next duplicate.
        log.warning("idempotency.complete_failed", exc_info=True)


async def release_quietly(store: IdempotencyStore, cmd: Command, claim: Claim) -> None:
    assert claim.token is not None
    try:
        await store.release(cmd.downstream, cmd.key, claim.token)
    except DependencyUnavailable:
        log.warning("idempotency.release_failed", exc_info=True)
