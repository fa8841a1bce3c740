"""The outbox relay: publish with confirms, mark sent only after the confirm.

Two ways in, both leased, so many replicas are safe together:

* Fast path: a document written by this process is inserted already claimed (status ``publishing``, our
  owner token, a lease) and handed to the relay in memory, so the hot path costs no claim query at all.
* Claim path (polling, the fallback): documents that are pending and due (retries) or whose publishing lease
  expired (their writer died) are claimed in batches by a conditional update that stamps a fresh owner token;
  only documents carrying our token are published.

Marking sent is a conditional update (our token), so a relay whose lease ran out never overwrites the claim of
the relay that took over. It runs beside the publishing: a batch frees its place among the batches in flight
once its confirms are in, and the documents confirmed meanwhile are marked together by one update per token
(one at a time; they count against the inbox's limit until marked, so a slow store still holds the writers
back before any lease can run out). With tracing on it is a client span of its own, linked to the
trace of every document it marks.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.errors import PyMongoError

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.observability.correlation import H_TRACEPARENT, H_TRACESTATE, TraceContext
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, AttributeValue, Span, SpanKind, Tracing
from s2s_daemon.outbox.documents import count_in_status
from s2s_daemon.outbox.record import OutboxRecord, OutboxStatus
from s2s_daemon.resilience.backoff import Backoff
from s2s_daemon.settings import OutboxSettings

log = get_logger("s2s.outbox")

PublishFn = Callable[[OutboxRecord], Awaitable[None]]

_SWEEP_EVERY_S = 60.0
_FAST_BATCHES_IN_FLIGHT = 4
# writers wait while this many batches wait in the inbox: past it the relay is the bottleneck, and documents
# waiting longer than their lease would be claimed (and published) a second time by a polling round
_INBOX_LIMIT_BATCHES = 4
_BACKLOG_EVERY_S = 15.0  # three count commands (see count_in_status)
_BROKER_DOWN_RETRY_S = (0.5, 1.5)  # while the broker is unreachable: try again this soon, no attempt charged
# a document that failed to publish n times waits up to 0.4 * 2^(n-1) s (full jitter), 60 s at most
_PUBLISH_BACKOFF = Backoff.exponential(initial=0.4, multiplier=2.0, max_delay=60.0)


class Relay:
    def __init__(
        self,
        collection: AsyncCollection[dict[str, Any]],
        publish: PublishFn,
        settings: OutboxSettings,
        metrics: Metrics,
        *,
        owner: str,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._collection = collection
        self._tracing = tracing
        self._publish = publish
        self._settings = settings
        self._metrics = metrics
        self._owner = owner
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[None] | None = None
        self._last_sweep = 0.0
        self._last_backlog = 0.0
        self._last_poll = 0.0
        self._fast_token = f"{owner}:fast"
        self._inbox: list[OutboxRecord] = []
        self._inbox_limit = _INBOX_LIMIT_BATCHES * settings.batch_size
        self._room = asyncio.Event()  # set while the inbox is below its limit
        self._room.set()
        self._broker_down_until = 0.0  # monotonic; no claiming rounds before it
        self._unmarked: list[tuple[list[OutboxRecord], str]] = []  # published, mark-sent failed: (records, token)
        self._to_mark: list[tuple[list[OutboxRecord], str]] = []  # confirmed, waiting for their mark-sent update
        self._marking: asyncio.Task[None] | None = None
        self._unmarked_count = 0  # documents confirmed and not marked yet (waiting, or in the update in flight)
        self.healthy = True

    # lifecycle ---------------------------------------------------------------------------------
    def notify(self) -> None:
        self._wake.set()

    def stamp(self, record: OutboxRecord) -> OutboxRecord:
        """The record about to be inserted, claimed by this relay (the fast path)."""
        return record.claimed(self._fast_token, now_ms() + int(self._settings.lease_seconds * 1000))

    async def room(self) -> None:
        """Wait until the inbox is below its limit (writers call this before stamping a document)."""
        while not self._room.is_set():
            await self._room.wait()

    def submit(self, record: OutboxRecord) -> None:
        """A stamped record is durable: publish it from memory."""
        self._inbox.append(record)
        self._update_room()
        self._wake.set()

    def _taken(self, n: int) -> None:
        del self._inbox[:n]
        self._update_room()

    def _update_room(self) -> None:
        if len(self._inbox) + self._unmarked_count < self._inbox_limit:
            self._room.set()
        else:
            self._room.clear()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="s2s-outbox-relay")

    async def stop(self, timeout: float = 10.0) -> None:
        """Finish the batch in hand (its claims are published or released), then stop."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, timeout)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            self._task = None
        if self._marking is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._marking, timeout)

    async def _run(self) -> None:
        while True:
            if not self._inbox and not self._stopping:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self._settings.poll_interval)
            self._wake.clear()
            try:
                await self._mark_unmarked()
                await self._drain_inbox()
                if self._stopping:
                    return
                mono = time.monotonic()
                if mono - self._last_poll >= self._settings.poll_interval and mono >= self._broker_down_until:
                    await self._poll()
                await self._housekeeping()
                self.healthy = True
            except (PyMongoError, OSError) as exc:
                self.healthy = False
                log.warning("outbox.relay_error", error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(min(self._settings.poll_interval, 1.0))
            except Exception:
                self.healthy = False
                log.exception("outbox.relay_crashed_round")
                await asyncio.sleep(min(self._settings.poll_interval, 1.0))

    # one round -----------------------------------------------------------------------------------
    async def _drain_inbox(self) -> None:
        """Publish what this process wrote, several batches in flight: a batch waits on its confirms (its
        mark-sent update runs beside, see ``_mark_later``), and new documents keep arriving meanwhile. A
        document that arrives while fewer than the limit are in flight starts a batch at once (it used to
        wait for a batch in flight to finish, so at moderate load one batch at a time was in flight and
        every document waited for the previous batch's confirms and update); at the limit, documents gather
        into the next batch (group commit)."""
        in_flight: set[asyncio.Task[None]] = set()
        arrival: asyncio.Task[bool] | None = None
        try:
            while self._inbox or in_flight:
                while self._inbox and len(in_flight) < _FAST_BATCHES_IN_FLIGHT:
                    batch = self._unexpired(self._inbox[: self._settings.batch_size])
                    self._taken(self._settings.batch_size)
                    if batch:
                        in_flight.add(asyncio.create_task(self._publish_batch(batch, self._fast_token)))
                if not in_flight:
                    continue
                self._wake.clear()
                if len(in_flight) < _FAST_BATCHES_IN_FLIGHT and not self._stopping:
                    arrival = asyncio.ensure_future(self._wake.wait())
                    await asyncio.wait({*in_flight, arrival}, return_when=asyncio.FIRST_COMPLETED)
                    arrival.cancel()
                    arrival = None
                else:
                    await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                done = {task for task in in_flight if task.done()}
                in_flight -= done
                # a store error ends the round; the documents' leases bring them back (each error retrieved)
                errors = [error for task in done if (error := task.exception()) is not None]
                if errors:
                    raise errors[0]
        finally:
            if arrival is not None:
                arrival.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _poll(self) -> None:
        """Claim and publish full batches until one comes back short; then wait ``poll_interval``. Documents
        this process wrote go first: with any in the inbox the polling stops after the batch in hand and
        resumes right after the inbox is drained (a polling round that kept the inbox waiting let those
        documents' leases run out, and the next round claimed them as expired: every one published twice)."""
        while True:
            claimed = await self.relay_once()
            if claimed < self._settings.batch_size or self._stopping or time.monotonic() < self._broker_down_until:
                self._last_poll = time.monotonic()
                return
            if self._inbox:
                return

    def _unexpired(self, batch: list[OutboxRecord]) -> list[OutboxRecord]:
        """The documents whose fast-path lease (stamped before their insert) has a quarter of its length left.
        The others waited too long (a slow insert, a long inbox): a polling claim may already own them, and
        publishing them from memory as well would send them twice; they are left to the polling claim."""
        cutoff = now_ms() + int(self._settings.lease_seconds * 250)
        fresh = [record for record in batch if record.lease_until > cutoff]
        if len(fresh) < len(batch):
            log.warning("outbox.fast_path_expired", documents=len(batch) - len(fresh))
        return fresh

    async def relay_once(self) -> int:
        """Claim one batch and publish it; returns how many records were claimed (not counting documents
        marked dead because they are not records)."""
        batch, token = await self.claim()
        if batch:
            await self._publish_batch(batch, token)
            await self.marked()
        return len(batch)

    async def marked(self) -> None:
        """Wait until every confirmed document's mark-sent update has run (marked, or kept for the next round)."""
        while self._marking is not None and not self._marking.done():
            await asyncio.shield(self._marking)

    async def _publish_batch(self, batch: list[OutboxRecord], token: str) -> None:
        self._metrics.relay_batch_size.observe(len(batch))
        results = await asyncio.gather(*(self._publish(record) for record in batch), return_exceptions=True)
        sent_ids, failed, unreachable = [], [], []
        for record, result in zip(batch, results, strict=True):
            if isinstance(result, DependencyUnavailable):
                unreachable.append(record.id)
            elif isinstance(result, BaseException):
                failed.append((record, result))
            else:
                sent_ids.append(record.id)
        if sent_ids:
            published = set(sent_ids)
            sent = [record for record in batch if record.id in published]
            self._confirmed(sent)
            self._mark_later(sent, token)
        if unreachable:
            await self._broker_down(
                unreachable, token, next(r for r in results if isinstance(r, DependencyUnavailable))
            )
        for record, exc in failed:
            await self._failed(record, token, exc)

    def _mark_sent_span(self, records: list[OutboxRecord]) -> contextlib.AbstractContextManager[Span]:
        if not self._tracing.enabled:
            return self._tracing.span("update")
        links = [
            trace
            for record in records
            if (trace := TraceContext.parse(record.headers.get(H_TRACEPARENT), record.headers.get(H_TRACESTATE)))
        ]
        attributes: dict[str, AttributeValue] = {
            "db.system.name": "mongodb",
            "db.operation.name": "update",
            "db.namespace": self._collection.database.name,
            "db.collection.name": self._collection.name,
            "db.operation.batch.size": len(records),
            "s2s.outbox.status": OutboxStatus.SENT.value,
        }
        return self._tracing.span(
            f"update {self._collection.name}", SpanKind.CLIENT, attributes, root=True, links=links
        )

    def _confirmed(self, sent: list[OutboxRecord]) -> None:
        now = now_ms()
        self._metrics.outbox_published.inc(len(sent))
        for record in sent:
            self._metrics.outbox_lag_seconds.observe(max(0, now - record.created_at) / 1000)

    def _mark_later(self, sent: list[OutboxRecord], token: str) -> None:
        """Queue confirmed documents for their mark-sent update; one task marks whatever is queued."""
        self._to_mark.append((sent, token))
        self._unmarked_count += len(sent)
        self._update_room()
        if self._marking is None or self._marking.done():
            self._marking = asyncio.create_task(self._mark_queued(), name="s2s-outbox-mark-sent")

    async def _mark_queued(self) -> None:
        while self._to_mark:
            queued, self._to_mark = self._to_mark, []
            by_token: dict[str, list[OutboxRecord]] = {}
            for sent, token in queued:
                by_token.setdefault(token, []).extend(sent)
            for token, sent in by_token.items():
                try:
                    await self._mark_sent(sent, token)
                except Exception as exc:
                    # Published, but the store did not hear of it: remember it (the relay's next round marks it
                    # before anything else), or the documents' leases run out and a polling claim publishes every
                    # one of them again (a store restart re-sent ~1,000 replies so).
                    self._unmarked.append((sent, token))
                    self.healthy = False
                    self._wake.set()
                    log.warning("outbox.mark_sent_failed", documents=len(sent), error=f"{type(exc).__name__}: {exc}")
                finally:
                    self._unmarked_count -= len(sent)
                    self._update_room()

    async def _mark_sent(self, sent: list[OutboxRecord], token: str) -> None:
        with self._mark_sent_span(sent):
            await self._collection.update_many(
                {"_id": {"$in": [record.id for record in sent]}, "lease_owner": token},
                {"$set": {"status": OutboxStatus.SENT.value, "sent_at": now_ms(), "lease_owner": None}},
            )

    async def _mark_unmarked(self) -> None:
        """Mark sent what was published while the store was unreachable, before anything else: before this
        relay claims expired leases, and before it publishes more that it could not mark either. The update
        is conditional on our token, so a document another relay has taken over meanwhile is left to it."""
        while self._unmarked:
            sent, token = self._unmarked[0]
            await self._mark_sent(sent, token)
            del self._unmarked[0]
            log.info("outbox.marked_after_store_outage", documents=len(sent))

    async def _broker_down(self, ids: list[Any], token: str, exc: DependencyUnavailable) -> None:
        """The broker is unreachable (connection lost, reconnecting): not the documents' fault. Charging an
        attempt each round would back them off for minutes and, after ``max_publish_attempts``, mark them dead
        during a long enough broker outage; instead they are released and retried within a second or two."""
        self._metrics.outbox_publish_failures.inc(len(ids))
        wait = random.uniform(*_BROKER_DOWN_RETRY_S)
        self._broker_down_until = time.monotonic() + wait  # no claim storm against the store meanwhile
        next_at = now_ms() + int(wait * 1000)
        await self._collection.update_many(
            {"_id": {"$in": ids}, "lease_owner": token},
            {
                "$set": {
                    "status": OutboxStatus.PENDING.value,
                    "next_attempt_at": next_at,
                    "last_error": str(exc)[:500],
                    "lease_owner": None,
                }
            },
        )
        log.warning("outbox.broker_unavailable", documents=len(ids), error=exc.detail[:200])

    async def claim(self) -> tuple[list[OutboxRecord], str]:
        """Claim pending-and-due documents, then publishing ones whose lease expired (two plain queries:
        an ``$or`` takes a slow path on nx-27017 once many sent documents accumulate)."""
        now = now_ms()
        token = f"{self._owner}:{uuid.uuid4().hex[:12]}"
        lease_until = now + int(self._settings.lease_seconds * 1000)
        claim = {"$set": {"status": OutboxStatus.PUBLISHING.value, "lease_owner": token, "lease_until": lease_until}}
        claimed: list[Any] = []
        for condition, taken_over in (
            ({"status": OutboxStatus.PENDING.value, "next_attempt_at": {"$lte": now}}, False),
            ({"status": OutboxStatus.PUBLISHING.value, "lease_until": {"$lt": now}}, True),
        ):
            room = self._settings.batch_size - len(claimed)
            if room <= 0:
                break
            found = await self._collection.find(condition, {"_id": 1}).limit(room).to_list()
            if found:
                ids = [doc["_id"] for doc in found]
                result = await self._collection.update_many({"_id": {"$in": ids}, **condition}, claim)
                claimed.extend(ids)
                if taken_over and result.modified_count:
                    # a relay (maybe this one) took them and did not finish in its lease: they go out again
                    self._metrics.outbox_lease_expired.inc(result.modified_count)
                    log.warning("outbox.lease_expired", documents=result.modified_count)
        if not claimed:
            return [], token
        documents = await self._collection.find({"_id": {"$in": claimed}, "lease_owner": token}).to_list()
        batch = [record for record in [await self._read(doc, token) for doc in documents] if record is not None]
        batch.sort(key=lambda record: record.created_at)
        return batch, token

    async def _read(self, document: dict[str, Any], token: str) -> OutboxRecord | None:
        """The claimed document as a record; one that is not a record (written by hand, damaged) is marked
        dead with the reason, instead of failing every round that claims it."""
        try:
            return OutboxRecord.from_mongo(document)
        except ValidationError as exc:
            error = f"not an outbox record: {exc}"[:500]
            log.error("outbox.dead", key=document.get("key"), attempts=document.get("attempts"), error=error)
            await self._collection.update_one(
                {"_id": document["_id"], "lease_owner": token},
                {"$set": {"status": OutboxStatus.DEAD.value, "last_error": error, "lease_owner": None}},
            )
            return None

    async def _failed(self, record: OutboxRecord, token: str, exc: BaseException) -> None:
        self._metrics.outbox_publish_failures.inc()
        attempts = record.attempts + 1
        error = f"{type(exc).__name__}: {exc}"[:500]
        if attempts >= self._settings.max_publish_attempts:
            status, next_at = OutboxStatus.DEAD.value, 0
            log.error("outbox.dead", key=record.key, attempts=attempts, error=error)
        else:
            backoff = _PUBLISH_BACKOFF.wait(attempts)
            status, next_at = OutboxStatus.PENDING.value, now_ms() + int(backoff * 1000)
            log.warning("outbox.publish_failed", key=record.key, attempts=attempts, error=error)
        await self._collection.update_one(
            {"_id": record.id, "lease_owner": token},
            {
                "$set": {
                    "status": status,
                    "attempts": attempts,
                    "next_attempt_at": next_at,
                    "last_error": error,
                    "lease_owner": None,
                }
            },
        )

    async def _housekeeping(self) -> None:
        mono = time.monotonic()
        if mono - self._last_backlog >= _BACKLOG_EVERY_S:
            self._last_backlog = mono
            for status in (OutboxStatus.PENDING, OutboxStatus.PUBLISHING, OutboxStatus.DEAD):
                count = await count_in_status(self._collection, status)
                self._metrics.outbox_backlog.labels(status.value).set(count)
        if mono - self._last_sweep >= _SWEEP_EVERY_S:
            self._last_sweep = mono
            cutoff = now_ms() - self._settings.retention_seconds * 1000
            result = await self._collection.delete_many({"status": OutboxStatus.SENT.value, "sent_at": {"$lt": cutoff}})
            if result.deleted_count:
                log.info("outbox.swept", deleted=result.deleted_count)
