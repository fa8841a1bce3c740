"""The command pipeline for one delivery.

parse/validate -> idempotency claim (Redis, outbox backstop) -> downstream call -> outbox write -> ack
-> mark done. Every exit is explicit:

* ``CommandRejected``: the command can never succeed: copied to the DLQ with the reason, acked.
* ``Redeliver``: not now (key in flight elsewhere, Redis or MongoDB down): parked in a delay queue, acked.
* anything else escapes to FastStream (NACK_ON_ERROR): requeued; the quorum queue's delivery limit
  dead-letters a message that keeps crashing the handler.

The AMQP message is acked only after the outbox write returned.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import structlog
from aio_pika.abc import AbstractIncomingMessage
from faststream.rabbit.message import RabbitMessage
from jsonschema import Draft202012Validator

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import (
    CommandRejected,
    DeadLetterReason,
    DependencyUnavailable,
    Redeliver,
    RedeliverCause,
)
from s2s_daemon.idempotency.fingerprint import fingerprint
from s2s_daemon.idempotency.store import Claim, ClaimState, IdempotencyStore
from s2s_daemon.messaging import contracts as c
from s2s_daemon.messaging.publisher import AmqpPublisher
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.correlation import TraceContext, clean_id
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.outbox.record import OutboxRecord, command_key
from s2s_daemon.outbox.writer import OutboxWriter
from s2s_daemon.resilience.client import BREAKER_OPEN, CallOutcome, DownstreamClient
from s2s_daemon.settings import RouteSettings, Settings

log = get_logger("s2s.consumer")

# Waits before a redelivery, by cause (the next delay-ladder rung up is used).
_DELAY_IN_FLIGHT_S = 2.0
_DELAY_DEPENDENCY_S = 5.0


@dataclass(frozen=True, slots=True)
class _Route:
    downstream: str
    action: str
    settings: RouteSettings
    validator: Draft202012Validator | None


class CommandProcessor:
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
    ) -> None:
        """``on_redis_down``: called when a claim finds Redis unreachable (the daemon pauses its consumers)."""
        self._settings = settings
        self._topology = topology
        self._store = store
        self._outbox = outbox
        self._clients = clients
        self._publisher = publisher
        self._metrics = metrics
        self._owner = owner
        self._routes: dict[str, _Route] = {}
        # keys a task of this process is handling now -> that task's fingerprint; taken *before* the Redis claim
        self._active: dict[tuple[str, str], str] = {}
        self._on_redis_down = on_redis_down
        for ds_name, ds in settings.downstreams.items():
            for action, route in ds.routes.items():
                validator = Draft202012Validator(route.json_schema) if route.json_schema else None
                self._routes[f"{ds_name}.{action}"] = _Route(ds_name, action, route, validator)

    # entry points ------------------------------------------------------------------------------
    async def handle(self, msg: RabbitMessage) -> None:
        """FastStream handler for a downstream's command queue."""
        raw = msg.raw_message
        started = time.perf_counter()
        routing_key = _header_str(raw.headers, c.H_ROUTING_KEY) or raw.routing_key or ""
        downstream = routing_key.partition(".")[0] if routing_key.partition(".")[0] in self._clients else "unknown"
        outcome = "error"
        try:
            command, route = self.parse(raw, routing_key)
            with structlog.contextvars.bound_contextvars(
                message_id=command.key, downstream=command.downstream, attempt=command.attempt
            ):
                outcome = await self._process(msg, raw, command, route)
        except CommandRejected as exc:
            outcome = "dead-lettered"
            await self._reject(msg, raw, exc, routing_key)
        except Redeliver as exc:
            outcome = "redelivered"
            await self._redeliver(msg, raw, routing_key, exc)
        finally:
            self._metrics.commands.labels(downstream, outcome).inc()
            self._metrics.handler_seconds.labels(downstream).observe(time.perf_counter() - started)

    async def handle_unrouted(self, msg: RabbitMessage) -> None:
        """Messages no queue was bound for reach us through the commands exchange's alternate exchange."""
        raw = msg.raw_message
        routing_key = raw.routing_key or ""
        exc = CommandRejected(DeadLetterReason.UNROUTABLE, f"no downstream is bound for routing key {routing_key!r}")
        self._metrics.commands.labels("unknown", "dead-lettered").inc()
        await self._reject(msg, raw, exc, routing_key)

    # parsing -----------------------------------------------------------------------------------
    def parse(self, raw: AbstractIncomingMessage, routing_key: str) -> tuple[c.Command, _Route]:
        if len(raw.body) > self._settings.amqp.max_body_bytes:
            raise CommandRejected(
                DeadLetterReason.TOO_LARGE,
                f"body is {len(raw.body)} bytes, the limit is {self._settings.amqp.max_body_bytes}",
            )
        route = self._routes.get(routing_key)
        if route is None:
            raise CommandRejected(DeadLetterReason.UNKNOWN_ROUTE, f"no route declared for {routing_key!r}")
        headers = raw.headers or {}
        try:
            body = orjson.loads(raw.body)
        except orjson.JSONDecodeError as exc:
            raise CommandRejected(DeadLetterReason.INVALID_JSON, f"body is not JSON: {exc}") from None
        if route.validator is not None:
            error = next(iter(sorted(route.validator.iter_errors(body), key=lambda e: e.path)), None)
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path) or "(body)"
                raise CommandRejected(DeadLetterReason.SCHEMA_VIOLATION, f"{where}: {error.message}")
        fp = fingerprint(routing_key, body)
        key = clean_id(headers.get(c.H_IDEMPOTENCY_KEY)) or clean_id(raw.message_id)
        if key is None:
            if self._settings.amqp.require_idempotency_key:
                raise CommandRejected(
                    DeadLetterReason.MISSING_IDEMPOTENCY_KEY,
                    "set the AMQP message_id or an 'idempotency-key' header (printable ASCII, <= 200 chars)",
                )
            key = f"fp-{fp}"
        bound = structlog.contextvars.get_contextvars()
        return (
            c.Command(
                key=key,
                routing_key=routing_key,
                downstream=route.downstream,
                action=route.action,
                body=body,
                fingerprint=fp,
                correlation_id=bound.get("correlation_id") or key,
                reply_to=raw.reply_to or None,
                traceparent=bound.get("traceparent"),
                deadline_ms=_parse_deadline(headers.get(c.H_DEADLINE)),
                attempt=_header_int(headers, c.H_ATTEMPT, 1),
                received_at=now_ms(),
                previous_calls=_header_int(headers, c.H_CALLS, 0),
                first_call_at=_header_int(headers, c.H_FIRST_CALL_AT, 0) or None,
            ),
            route,
        )

    # the pipeline ------------------------------------------------------------------------------
    async def _process(self, msg: RabbitMessage, raw: AbstractIncomingMessage, cmd: c.Command, route: _Route) -> str:
        namespace = cmd.downstream
        active_key = (namespace, cmd.key)
        # Sibling deliveries in this process share one owner token, so Redis cannot tell them apart ("mine"
        # for both, and their claim answers may be read in either order): a task of ours on the key wins here.
        local = self._active.get(active_key)
        if local is not None:
            if local != cmd.fingerprint:
                return await self._conflict(msg, cmd)
            self._metrics.dedupe_hits.labels(cmd.downstream, "in-flight").inc()
            raise Redeliver(RedeliverCause.IN_FLIGHT, "same key in flight in this process", _DELAY_IN_FLIGHT_S)
        self._active[active_key] = cmd.fingerprint
        try:
            return await self._claim_and_process(msg, cmd, route)
        finally:
            del self._active[active_key]

    async def _claim_and_process(self, msg: RabbitMessage, cmd: c.Command, route: _Route) -> str:
        namespace = cmd.downstream
        try:
            claim = await self._store.claim(namespace, cmd.key, self._owner, cmd.fingerprint)
        except DependencyUnavailable as exc:
            if self._on_redis_down is not None:
                self._on_redis_down()  # pause every consumer until Redis answers again
            raise Redeliver(RedeliverCause.REDIS_UNAVAILABLE, exc.detail, _DELAY_DEPENDENCY_S) from exc

        if claim.state in (ClaimState.CLAIMED, ClaimState.OURS):
            return await self._claimed(msg, cmd, route, claim)

        if claim.state is ClaimState.DONE:
            return await self._duplicate(msg, cmd, claim.fingerprint, None, "done")

        # in flight elsewhere: never a parallel call
        if not claim.same_payload(cmd.fingerprint):
            return await self._conflict(msg, cmd)
        self._metrics.dedupe_hits.labels(cmd.downstream, "in-flight").inc()
        raise Redeliver(RedeliverCause.IN_FLIGHT, "same key in flight elsewhere", _DELAY_IN_FLIGHT_S)

    async def _claimed(self, msg: RabbitMessage, cmd: c.Command, route: _Route, claim: Claim) -> str:
        try:
            existing = await self._outbox.find(command_key(cmd.downstream, cmd.key))
        except DependencyUnavailable as exc:
            await self._release_quietly(cmd.downstream, cmd.key, claim)
            raise Redeliver(RedeliverCause.MONGODB_UNAVAILABLE, exc.detail, _DELAY_DEPENDENCY_S) from exc
        if existing is not None:
            # Redis lost the done record (restart, eviction) or a crash hit before it was written: the outbox decides.
            await self._complete_quietly(cmd.downstream, cmd.key, claim, existing.fingerprint)
            return await self._duplicate(msg, cmd, existing.fingerprint, existing, "backstop")
        return await self._call_and_record(msg, cmd, route, claim)

    async def _call_and_record(self, msg: RabbitMessage, cmd: c.Command, route: _Route, claim: Claim) -> str:
        client = self._clients[cmd.downstream]
        trace = (TraceContext.parse(cmd.traceparent) or TraceContext.new()).child()
        headers = {
            "idempotency-key": cmd.key,
            "x-correlation-id": cmd.correlation_id,
            "traceparent": trace.header,
        }
        first_call_at = cmd.first_call_at or now_ms()
        outcome = await client.call(
            route.settings,
            cmd.body,
            headers,
            cmd.deadline_ms,
            previous_attempts=cmd.previous_calls,
            previous_elapsed=max(0, now_ms() - first_call_at) / 1000 if cmd.first_call_at else 0.0,
        )
        if outcome.redeliver_after is not None:
            # Nothing is in flight now: free the key so whichever replica gets the copy can call at once.
            await self._release_quietly(cmd.downstream, cmd.key, claim)
            cause = RedeliverCause.BREAKER_OPEN if outcome.message == BREAKER_OPEN else RedeliverCause.RETRY
            raise Redeliver(
                cause,
                outcome.message,
                outcome.redeliver_after,
                {c.H_CALLS: outcome.attempts, c.H_FIRST_CALL_AT: first_call_at},
            )
        reply = self._reply(cmd, outcome)
        record = OutboxRecord.for_command(cmd, reply, trace, self._settings.service_name)
        assert claim.token is not None
        try:
            result = await self._outbox.write(record)
        except DependencyUnavailable as exc:
            # The call may have had an effect: keep the lease (no parallel call), come back later; the
            # downstream sees the same Idempotency-Key if the lease expires before we return.
            raise Redeliver(RedeliverCause.MONGODB_UNAVAILABLE, exc.detail, _DELAY_DEPENDENCY_S) from exc
        if not result.created:
            # Another worker recorded the key first (our lease ran out during the call): our call carried the
            # same Idempotency-Key; this delivery is answered like any duplicate, from the stored document.
            log.warning("command.recorded_elsewhere", attempts=outcome.attempts)
            await self._complete_quietly(cmd.downstream, cmd.key, claim, result.record.fingerprint)
            return await self._duplicate(msg, cmd, result.record.fingerprint, result.record, "backstop")
        if outcome.retryable and not outcome.ok and result.created:
            # Retries ran out: the producer has its failed reply; the original goes to the DLQ for repair.
            exhausted = CommandRejected(
                DeadLetterReason.RETRIES_EXHAUSTED, f"{outcome.attempts} attempts: {outcome.message}"
            )
            await self._publisher.dead_letter(msg.raw_message, exhausted.reason, exhausted.detail, cmd.routing_key)
            self._metrics.dead_lettered.labels(exhausted.reason.value).inc()
        await msg.ack()
        await self._complete_quietly(cmd.downstream, cmd.key, claim, result.record.fingerprint)
        log.info(
            "command.completed",
            status=reply.status,
            status_code=outcome.status_code,
            error_kind=outcome.error_kind.value if outcome.error_kind else None,
            attempts=outcome.attempts,
            created=result.created,
        )
        return reply.status

    async def _duplicate(
        self,
        msg: RabbitMessage,
        cmd: c.Command,
        stored_fingerprint: str | None,
        record: OutboxRecord | None,
        state: str,
    ) -> str:
        if stored_fingerprint is not None and stored_fingerprint != cmd.fingerprint:
            return await self._conflict(msg, cmd)
        self._metrics.dedupe_hits.labels(cmd.downstream, state).inc()
        if cmd.reply_to:
            if record is None:
                try:
                    record = await self._outbox.find(command_key(cmd.downstream, cmd.key))
                except DependencyUnavailable as exc:
                    raise Redeliver(RedeliverCause.MONGODB_UNAVAILABLE, exc.detail, _DELAY_DEPENDENCY_S) from exc
            if record is not None and record.reply is not None:
                await self._publisher.reply_direct(
                    cmd.reply_to,
                    cmd.correlation_id,
                    record.reply,
                    self._trace_headers(cmd),
                    message_id=record.event_id,  # the original reply's message_id: duplicates are droppable
                )
        await msg.ack()
        log.info("command.duplicate", state=state, resent=bool(cmd.reply_to))
        return "duplicate"

    async def _conflict(self, msg: RabbitMessage, cmd: c.Command) -> str:
        """Same key, different payload: a failed reply of kind ``conflict``, no downstream call."""
        self._metrics.dedupe_hits.labels(cmd.downstream, "conflict").inc()
        if cmd.reply_to:
            outcome = CallOutcome(
                None, None, c.ErrorKind.CONFLICT, "idempotency key reused with a different payload", 0
            )
            reply = self._reply(cmd, outcome)
            await self._publisher.reply_direct(
                cmd.reply_to, cmd.correlation_id, reply.model_dump(mode="json"), self._trace_headers(cmd)
            )
        await msg.ack()
        log.warning("command.conflict", detail="idempotency key reused with a different payload")
        return "conflict"

    # exits -------------------------------------------------------------------------------------
    async def _reject(
        self, msg: RabbitMessage, raw: AbstractIncomingMessage, exc: CommandRejected, routing_key: str
    ) -> None:
        await self._publisher.dead_letter(raw, exc.reason, exc.detail, routing_key)
        self._metrics.dead_lettered.labels(exc.reason.value).inc()
        if raw.reply_to:
            correlation_id = structlog.contextvars.get_contextvars().get("correlation_id") or ""
            body = {
                "status": "failed",
                "command_id": clean_id((raw.headers or {}).get(c.H_IDEMPOTENCY_KEY)) or clean_id(raw.message_id),
                "correlation_id": correlation_id,
                "routing_key": routing_key,
                "error": {"kind": c.ErrorKind.INVALID.value, "message": f"{exc.reason.value}: {exc.detail}"},
                "completed_at": now_ms(),
            }
            try:
                await self._publisher.reply_direct(raw.reply_to, correlation_id, body, {})
            except Exception:
                log.warning("command.invalid_reply_failed", exc_info=True)
        await msg.ack()
        log.warning("command.dead_lettered", reason=exc.reason.value, detail=exc.detail, routing_key=routing_key)

    async def _redeliver(
        self, msg: RabbitMessage, raw: AbstractIncomingMessage, routing_key: str, exc: Redeliver
    ) -> None:
        downstream = routing_key.partition(".")[0]
        attempt = _header_int(raw.headers or {}, c.H_ATTEMPT, 1) + 1
        if attempt > self._settings.amqp.max_redeliveries:
            rejected = CommandRejected(
                DeadLetterReason.RETRIES_EXHAUSTED,
                f"redelivered {attempt - 1} times, last because {exc.cause.value}: {exc.detail}",
            )
            await self._reject(msg, raw, rejected, routing_key)
            return
        if exc.cause in (RedeliverCause.RETRY, RedeliverCause.BREAKER_OPEN):
            wanted = exc.delay  # the retry policy or the breaker already chose the wait
        else:
            # back off along the ladder as redeliveries of the same message pile up
            ladder = self._topology.delay_ladder
            wanted = max(exc.delay, ladder[min(attempt - 2, len(ladder) - 1)])
        seconds = self._topology.delay_rung(wanted)
        await self._publisher.delay(raw, downstream, seconds, routing_key, attempt, exc.headers)
        self._metrics.redelivered.labels(downstream, exc.cause.value).inc()
        await msg.ack()
        log.info("command.redelivery_scheduled", cause=exc.cause.value, detail=exc.detail, delay_s=seconds)

    # helpers -----------------------------------------------------------------------------------
    def _reply(self, cmd: c.Command, outcome: CallOutcome) -> c.Reply:
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

    @staticmethod
    def _trace_headers(cmd: c.Command) -> dict[str, str]:
        return {c.H_TRACEPARENT: cmd.traceparent} if cmd.traceparent else {}

    async def _complete_quietly(self, namespace: str, key: str, claim: Claim, fp: str) -> None:
        assert claim.token is not None
        try:
            await self._store.complete(namespace, key, claim.token, fp)
        except DependencyUnavailable:
            # Harmless: the lease expires and the outbox's unique key answers the next duplicate.
            log.warning("idempotency.complete_failed", exc_info=True)

    async def _release_quietly(self, namespace: str, key: str, claim: Claim) -> None:
        assert claim.token is not None
        try:
            await self._store.release(namespace, key, claim.token)
        except DependencyUnavailable:
            log.warning("idempotency.release_failed", exc_info=True)


def _header_str(headers: Any, name: str) -> str | None:
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) and value else None


def _header_int(headers: Any, name: str, default: int) -> int:
    value = (headers or {}).get(name)
    if isinstance(value, bool) or not isinstance(value, int | str | bytes):
        return default
    try:
        return max(default, int(value))
    except ValueError:
        return default


def _parse_deadline(value: Any) -> int | None:
    """``x-deadline``: epoch milliseconds (integer) or an ISO-8601 timestamp with a zone."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", errors="replace")
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isdigit():
            return int(text)
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is not None:
                return int(when.timestamp() * 1000)
    raise CommandRejected(
        DeadLetterReason.INVALID_HEADER,
        f"x-deadline {value!r}: use epoch milliseconds or ISO-8601 with a zone",
    )
