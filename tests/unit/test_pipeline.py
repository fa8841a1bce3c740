"""The command pipeline against recording stand-ins for RabbitMQ, Redis, the outbox and the downstream client:
the order of the steps, ack after the durable write, and how each early end is answered."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import orjson
import pytest
import structlog

from s2s_daemon.errors import DependencyUnavailable, ErrorKind, KeyConflict, RedeliverCause
from s2s_daemon.idempotency import Claim, ClaimState
from s2s_daemon.messaging import Topology
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability import Metrics
from s2s_daemon.outbox import OutboxRecord, OutboxStatus, WriteResult
from s2s_daemon.pipeline import CommandPipeline
from s2s_daemon.resilience import CallOutcome, CallRefused
from s2s_daemon.settings import Settings, load_settings

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def _stored(event_id: str, fingerprint: str = "0" * 32, status: str = "succeeded") -> OutboxRecord:
    """An outbox record as another delivery left it (only what the answer reads matters here)."""
    return OutboxRecord(
        _id="cmd:svc:k1",
        key="cmd:svc:k1",
        kind="command",
        fingerprint=fingerprint,
        correlation_id="c",
        reply={"status": status},
        event_routing_key=f"svc.do.{status}",
        event={"id": event_id},
        created_at=1,
    )


@dataclass
class Raw:
    """The aio-pika message fields the pipeline reads."""

    body: bytes
    routing_key: str = "svc.do"
    headers: dict[str, Any] = field(default_factory=dict)
    message_id: str | None = "k1"
    correlation_id: str | None = "corr-1"
    reply_to: str | None = "amq.rabbitmq.reply-to"


class Message:
    """FastStream's message: the raw one, the correlation id FastStream (or the middleware) set, ack()."""

    def __init__(self, raw: Raw, events: list[Any]) -> None:
        self.raw_message = raw
        self.correlation_id = raw.correlation_id or "generated-by-the-middleware"
        self._events = events

    async def ack(self) -> None:
        self._events.append(("ack",))


class World:
    """Records every side effect in one list, in order."""

    def __init__(self) -> None:
        self.events: list[Any] = []
        self.claim = Claim(ClaimState.CLAIMED, None, "tok")
        self.redis_down = False
        self.stored: OutboxRecord | None = None
        self.mongo_down = False
        self.write_created = True
        self.outcome = CallOutcome(201, {"id": 7}, None, "ok", 1)
        self.redis_down_reports = 0

    # idempotency store
    async def claim_key(self, namespace: str, key: str, owner: str, fp: str) -> Claim:
        self.events.append(("claim", key))
        if self.redis_down:
            raise DependencyUnavailable("redis", "refused")
        return self.claim

    async def complete(self, namespace: str, key: str, token: str, fp: str) -> bool:
        self.events.append(("complete", key))
        return True

    async def release(self, namespace: str, key: str, token: str) -> None:
        self.events.append(("release", key))

    # outbox
    async def find(self, key: str) -> OutboxRecord | None:
        self.events.append(("find", key))
        if self.mongo_down:
            raise DependencyUnavailable("mongodb", "down")
        return self.stored

    async def write(self, record: OutboxRecord) -> WriteResult:
        self.events.append(("write", record.key))
        if self.mongo_down:
            raise DependencyUnavailable("mongodb", "down")
        if not self.write_created:
            assert self.stored is not None
            return WriteResult(False, self.stored)
        return WriteResult(True, record)

    # downstream client
    async def call(self, route: Any, body: Any, headers: dict[str, str], deadline_ms: int | None, **kw: Any) -> Any:
        self.events.append(("call", headers["idempotency-key"], kw["previous_attempts"]))
        return self.outcome

    # publisher
    async def dead_letter(self, raw: Raw, reason: Any, detail: str, routing_key: str) -> None:
        self.events.append(("dead_letter", reason.value))

    async def reply_direct(
        self, reply_to: str, correlation_id: str, body: dict[str, Any], headers: dict[str, str], message_id: Any = None
    ) -> None:
        self.events.append(("reply", correlation_id, body, headers, message_id))

    async def delay(self, raw: Raw, downstream: str, seconds: int, routing_key: str, attempt: int, extra: Any) -> str:
        self.events.append(("delay", seconds, dict(extra)))
        return f"delay.{seconds}"

    def names(self) -> list[str]:
        return [event[0] for event in self.events]


class Store:
    def __init__(self, world: World) -> None:
        self.claim, self.complete, self.release = world.claim_key, world.complete, world.release


class Client:
    def __init__(self, world: World) -> None:
        self.call = world.call


def _settings() -> Settings:
    return load_settings(
        downstreams={"svc": {"base_url": "http://svc", "routes": {"do": {"path": "/do"}}}},
        amqp={"max_redeliveries": 6},
    )


def _pipeline(world: World, metrics: Metrics | None = None) -> CommandPipeline:
    settings = _settings()
    world_any = cast("Any", world)

    def redis_down() -> None:
        world.redis_down_reports += 1

    return CommandPipeline(
        settings,
        Topology.from_settings(settings.amqp, ("svc",)),
        cast("Any", Store(world)),
        world_any,
        {"svc": cast("Any", Client(world))},
        world_any,
        metrics or Metrics(),
        owner="me",
        on_redis_down=redis_down,
    )


def _msg(world: World, body: dict[str, Any] | bytes | None = None, **raw: Any) -> Any:
    data = body if isinstance(body, bytes) else orjson.dumps(body if body is not None else {"name": "x"})
    return Message(Raw(data, **raw), world.events)


def _outcomes(metrics: Metrics) -> dict[str, float]:
    return {
        sample.labels["outcome"]: sample.value
        for metric in metrics.commands.collect()
        for sample in metric.samples
        if sample.name.endswith("_total")
    }


def _redelivered(metrics: Metrics, cause: RedeliverCause) -> float | None:
    labels = {"downstream": "svc", "reason": cause.value}
    return metrics.registry.get_sample_value("s2s_redelivered_total", labels)


def test_the_steps_are_one_list_in_the_documented_order() -> None:
    """parse -> local dedupe -> claim -> backstop -> call -> record -> ack -> complete."""
    names = [type(step).__name__ for step in _pipeline(World()).steps]
    assert names == ["Parse", "LocalDedupe", "ClaimKey", "Backstop", "Call", "Record", "Ack", "Complete"]


async def test_a_command_is_acked_only_after_its_outbox_write() -> None:
    """The happy path runs every step once, in order: claim, backstop lookup, call, write, ack, complete."""
    world, metrics = World(), Metrics()
    await _pipeline(world, metrics).handle(_msg(world))
    assert world.names() == ["claim", "find", "call", "write", "ack", "complete"]
    assert _outcomes(metrics) == {"succeeded": 1.0}


async def test_the_command_carries_correlation_and_trace_from_the_message() -> None:
    """The correlation id comes from the message, the trace continues the producer's (its tracestate sent
    downstream and stored with the reply unchanged), and the log context is bound from the command while it
    runs and restored afterwards."""
    world = World()
    seen: dict[str, Any] = {}
    call, write = world.call, world.write

    async def spying_call(route: Any, body: Any, headers: dict[str, str], deadline_ms: int | None, **kw: Any) -> Any:
        seen.update(structlog.contextvars.get_contextvars(), sent=headers)
        return await call(route, body, headers, deadline_ms, **kw)

    async def spying_write(record: OutboxRecord) -> WriteResult:
        seen["stored"] = record.headers
        return await write(record)

    world.call = spying_call  # type: ignore[method-assign]
    world.write = spying_write  # type: ignore[method-assign]
    pipeline = _pipeline(world)
    headers = {"x-correlation-id": b"from-header", "traceparent": TRACE, "tracestate": b"rojo=1,congo=t61rcWkgMzE"}
    await pipeline.handle(_msg(world, correlation_id=None, headers=headers))
    assert seen["correlation_id"] == "from-header"
    assert seen["message_id"] == "k1"
    assert seen["downstream"] == "svc"
    assert seen["sent"]["traceparent"].split("-")[1] == TRACE.split("-")[1]
    assert seen["sent"]["tracestate"] == "rojo=1,congo=t61rcWkgMzE"
    assert seen["stored"] == {"traceparent": seen["sent"]["traceparent"], "tracestate": "rojo=1,congo=t61rcWkgMzE"}
    assert "message_id" not in structlog.contextvars.get_contextvars()


async def test_without_a_correlation_id_the_one_on_the_message_is_used() -> None:
    """A message that brings no usable id gets the one stored on the FastStream message (generated once)."""
    world = World()
    world.claim = Claim(ClaimState.DONE, None, None)
    world.stored = _stored("ev-1")
    await _pipeline(world).handle(_msg(world, correlation_id=None))
    [reply] = [event for event in world.events if event[0] == "reply"]
    assert reply[1] == "generated-by-the-middleware"


@pytest.mark.parametrize(
    ("body", "raw", "reason"),
    [
        (b"{not json", {}, "invalid-json"),
        (None, {"routing_key": "svc.nope"}, "unknown-route"),
        (None, {"message_id": None}, "missing-idempotency-key"),
        (None, {"headers": {"x-deadline": "tomorrow"}}, "invalid-header"),
    ],
)
async def test_a_command_that_cannot_succeed_is_dead_lettered(body: Any, raw: dict[str, Any], reason: str) -> None:
    """Parse rejects: a DLQ copy with the reason, a failed reply of kind invalid, an ack; nothing else runs."""
    world, metrics = World(), Metrics()
    await _pipeline(world, metrics).handle(_msg(world, body, **raw))
    assert world.names() == ["dead_letter", "reply", "ack"]
    assert world.events[0][1] == reason
    assert world.events[1][2]["error"]["kind"] == ErrorKind.INVALID.value
    assert _outcomes(metrics) == {"dead-lettered": 1.0}


async def test_a_key_a_sibling_task_holds_is_redelivered_or_a_conflict() -> None:
    """Local dedupe: the same payload waits in a delay queue, another payload gets a conflict reply."""
    world, metrics = World(), Metrics()
    pipeline = _pipeline(world, metrics)
    active = cast("Any", pipeline)._local._active
    held = ("svc", "k1")
    active[held] = "someone-elses-fingerprint"
    await pipeline.handle(_msg(world))
    assert world.names() == ["reply", "ack"]
    assert world.events[0][2]["error"]["kind"] == "conflict"

    command, _ = cast("Any", pipeline.steps[0]).parse(_msg(world), "svc.do")
    active[held] = command.fingerprint
    world.events.clear()
    await pipeline.handle(_msg(world))
    assert world.names() == ["delay", "ack"]
    assert world.events[0][1] == 2  # in flight here: 2 s
    assert active == {held: command.fingerprint}  # the holder keeps its key
    assert _outcomes(metrics) == {"conflict": 1.0, "redelivered": 1.0}


async def test_a_key_done_before_is_answered_from_the_outbox() -> None:
    """Claim finds a done record: the stored reply is re-sent, the delivery acked, no call."""
    world, metrics = World(), Metrics()
    world.claim = Claim(ClaimState.DONE, None, None)
    world.stored = _stored("ev-1")
    await _pipeline(world, metrics).handle(_msg(world))
    assert world.names() == ["claim", "find", "reply", "ack"]
    assert world.events[2][2] == {"status": "succeeded"}
    assert world.events[2][4] == "ev-1"  # the original reply's message_id: the copy is droppable
    assert _outcomes(metrics) == {"duplicate": 1.0}


async def test_a_key_done_with_another_payload_is_a_conflict() -> None:
    """Claim finds a done record with another fingerprint: a conflict reply, no call."""
    world = World()
    world.claim = Claim(ClaimState.DONE, "another-fingerprint", None)
    await _pipeline(world).handle(_msg(world))
    assert world.names() == ["claim", "reply", "ack"]
    assert world.events[1][2]["error"]["message"] == KeyConflict.detail


async def test_a_key_in_flight_elsewhere_comes_back_later() -> None:
    """Claim finds another owner's lease: the delivery is parked, never called in parallel."""
    world = World()
    pipeline = _pipeline(world)
    command, _ = cast("Any", pipeline.steps[0]).parse(_msg(world), "svc.do")
    world.claim = Claim(ClaimState.IN_FLIGHT, command.fingerprint, None)
    await pipeline.handle(_msg(world))
    assert world.names() == ["claim", "delay", "ack"]


async def test_redis_down_parks_the_command_and_reports_it() -> None:
    """A claim that finds Redis unreachable: the consumers are told to pause, the command is parked."""
    world, metrics = World(), Metrics()
    world.redis_down = True
    await _pipeline(world, metrics).handle(_msg(world))
    assert world.names() == ["claim", "delay", "ack"]
    assert world.events[1][1] == 5
    assert world.redis_down_reports == 1
    assert _redelivered(metrics, RedeliverCause.REDIS_UNAVAILABLE) == 1


async def test_the_backstop_answers_a_key_redis_forgot() -> None:
    """The outbox already holds the key: the Redis record is completed and the stored reply re-sent."""
    world = World()
    pipeline = _pipeline(world)
    command, _ = cast("Any", pipeline.steps[0]).parse(_msg(world), "svc.do")
    world.stored = _stored("ev-2", command.fingerprint, "failed")
    await pipeline.handle(_msg(world))
    assert world.names() == ["claim", "find", "complete", "reply", "ack"]
    assert world.events[3][2] == {"status": "failed"}
    assert world.events[3][4] == "ev-2"


async def test_a_stored_reply_not_yet_published_is_left_to_the_relay() -> None:
    """The outbox holds the key with this delivery's reply still unpublished (the write went through but its
    answer was lost when the store restarted): the relay will send it, so no second copy goes now."""
    world, metrics = World(), Metrics()
    pipeline = _pipeline(world, metrics)
    command, _ = cast("Any", pipeline.steps[0]).parse(_msg(world), "svc.do")
    unsent = _stored("ev-3", command.fingerprint).model_copy(
        update={
            "status": OutboxStatus.PUBLISHING,
            "reply_to": "amq.rabbitmq.reply-to",
            "correlation_id": command.correlation_id,
        }
    )
    world.stored = unsent
    await pipeline.handle(_msg(world))
    assert world.names() == ["claim", "find", "complete", "ack"]
    assert _outcomes(metrics) == {"duplicate": 1.0}
    # another copy of the command (its own correlation id, or its reply wanted elsewhere) still gets its answer
    for other in ({"correlation_id": "corr-2"}, {"reply_to": "another-queue"}):
        world.events.clear()
        await pipeline.handle(_msg(world, **other))
        assert world.names() == ["claim", "find", "complete", "reply", "ack"]


async def test_an_open_breaker_frees_the_key_and_parks_the_command() -> None:
    """The client refuses (breaker open): the lease is released and the copy carries the calls made so far."""
    world, metrics = World(), Metrics()
    refused = CallRefused.BREAKER_OPEN
    world.outcome = CallOutcome(None, None, ErrorKind.UNAVAILABLE, refused.value, 2, True, 8.0, 8.0, refused)
    await _pipeline(world, metrics).handle(_msg(world, headers={c.H_CALLS: 2, c.H_FIRST_CALL_AT: 1000}))
    assert world.names() == ["claim", "find", "call", "release", "delay", "ack"]
    assert world.events[2][2] == 2  # the earlier deliveries' calls count against the limits
    _, seconds, headers = world.events[4]
    assert seconds == 10  # the breaker's wait, on the next rung up
    assert headers == {c.H_ATTEMPT: 2, c.H_CALLS: 2, c.H_FIRST_CALL_AT: 1000}
    assert _redelivered(metrics, RedeliverCause.BREAKER_OPEN) == 1


async def test_mongodb_down_at_the_write_keeps_the_lease() -> None:
    """The call may have had an effect: no release, no ack before a durable write; the command comes back."""
    world = World()
    write = world.write

    async def write_fails(record: OutboxRecord) -> WriteResult:
        world.mongo_down = True
        return await write(record)

    world.write = write_fails  # type: ignore[method-assign]
    await _pipeline(world).handle(_msg(world))
    assert world.names() == ["claim", "find", "call", "write", "delay", "ack"]


async def test_a_key_recorded_elsewhere_meanwhile_is_a_duplicate() -> None:
    """The write finds the key taken (our lease ran out during the call): answered from the stored record."""
    world, metrics = World(), Metrics()
    pipeline = _pipeline(world, metrics)
    command, _ = cast("Any", pipeline.steps[0]).parse(_msg(world), "svc.do")
    stored = _stored("ev-3", command.fingerprint)
    world.write_created = False

    async def find_none_then_stored(key: str) -> OutboxRecord | None:
        world.events.append(("find", key))
        return None

    world.find = find_none_then_stored  # type: ignore[method-assign]
    world.stored = stored
    await pipeline.handle(_msg(world))
    assert world.names() == ["claim", "find", "call", "write", "complete", "reply", "ack"]
    assert world.events[-2][4] == "ev-3"  # answered from the record the write found, without another lookup
    assert _outcomes(metrics) == {"duplicate": 1.0}


async def test_exhausted_retries_record_the_failure_and_copy_the_command_to_the_dlq() -> None:
    """A retryable failure with no retry left: the failed reply is recorded, the original goes to the DLQ, acked."""
    world, metrics = World(), Metrics()
    world.outcome = CallOutcome(503, None, ErrorKind.UNAVAILABLE, "downstream answered 503", 4, True)
    await _pipeline(world, metrics).handle(_msg(world))
    assert world.names() == ["claim", "find", "call", "write", "dead_letter", "ack", "complete"]
    assert _outcomes(metrics) == {"failed": 1.0}


async def test_too_many_redeliveries_dead_letter_the_command() -> None:
    """Past amqp.max_redeliveries a command that keeps coming back goes to the DLQ instead."""
    world = World()
    world.redis_down = True
    await _pipeline(world).handle(_msg(world, headers={c.H_ATTEMPT: 6}))
    assert world.names() == ["claim", "dead_letter", "reply", "ack"]
    assert world.events[1][1] == "retries-exhausted"


async def test_the_redelivery_ladder_climbs_with_each_attempt() -> None:
    """Causes without a chosen delay wait at least the ladder rung of their redelivery count."""
    world = World()
    world.redis_down = True
    pipeline = _pipeline(world)
    delays = []
    for attempt in (1, 2, 3, 4):
        world.events.clear()
        await pipeline.handle(_msg(world, headers={c.H_ATTEMPT: attempt}))
        delays.append(world.events[1][1])
    assert delays == [5, 5, 5, 10]  # max(5 s for Redis, the ladder's 1, 2, 5, 10 s) for redeliveries 1-4
