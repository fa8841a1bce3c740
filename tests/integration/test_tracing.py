"""Tracing end to end: a daemon process run with the standard ``OTEL_*`` variables alone exports its spans to a real
OTLP/HTTP receiver (tests/otlp.py, protobuf decoded with opentelemetry-proto), and the trees are the documented
ones. Commands are published with pika (not our code); the demo downstream records the ``traceparent`` it got.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import orjson
import pytest
import standardwebhooks.webhooks
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from s2s_daemon.observability.correlation import TraceContext
from tests.conftest import DemoServices, SettingsFactory
from tests.daemonproc import DaemonSubprocess, daemon_subprocess, settings_values
from tests.otlp import Receiver, Span, render, running_grpc_receiver, running_receiver
from tests.support import Outgoing, bind_probe_queue, drain, pika_send, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
SERVICE = "s2s-traced-test"
WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"tracing test standard-webhooks key").decode()


def otel_env(receiver: Receiver, **more: str) -> dict[str, str]:
    """Only the standard variables: exporter, endpoint, protocol, service name, a short batch delay."""
    return {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint,
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_SERVICE_NAME": SERVICE,
        "OTEL_BSP_SCHEDULE_DELAY": "100",
        **more,
    }


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as running:
        yield running


@pytest.fixture
async def traced(
    make_settings: SettingsFactory, cleanup_namespace: None, receiver: Receiver, tmp_path: Path
) -> AsyncIterator[DaemonSubprocess]:
    """The daemon as a process of its own, tracing turned on by the OTEL_* variables alone."""
    webhooks = {"acme": {"scheme": "standard-webhooks", "secrets": [WEBHOOK_SECRET]}}
    values = {**settings_values(make_settings(webhooks=webhooks)), "webhooks": webhooks}  # secrets revealed
    async with daemon_subprocess(values, otel_env(receiver), tmp_path / "daemon.log") as daemon:
        yield daemon


def _traceparent(trace_id: str = CALLER_TRACE, span_id: str = CALLER_SPAN) -> str:
    return f"00-{trace_id}-{span_id}-01"


async def _spans(receiver: Receiver, trace_id: str, *names: str) -> list[Span]:
    """The trace once every named span arrived (the batch processor exports within ~100 ms)."""

    def arrived() -> bool:
        got = [s.name for s in receiver.trace(trace_id)]
        return all(name in got for name in names)

    await wait_for(arrived, timeout=20)
    return receiver.trace(trace_id)


def _child(spans: list[Span], parent: Span, name: str) -> Span:
    found = [s for s in spans if s.parent_span_id == parent.span_id and s.name == name]
    assert len(found) == 1, f"{name} under {parent.name}: {render(spans)}"
    return found[0]


def _assert_command_subtree(
    spans: list[Span], consumer: Span, prefix: str, demo: DemoServices, key: str, status: int
) -> Span:
    """Under the consumer span: the Redis claim, the outbox lookup and insert, one HTTP client span whose context
    the downstream received, and the relay's reply and event producer spans. Returns the client span."""
    assert consumer.kind == "consumer"
    assert consumer.attributes["messaging.system"] == "rabbitmq"
    assert consumer.attributes["messaging.rabbitmq.destination.routing_key"] == "service-a.create-resource"
    assert consumer.attributes["messaging.message.id"] == key
    claim = _child(spans, consumer, "EVALSHA")
    assert (claim.kind, claim.attributes["db.system.name"]) == ("client", "redis")
    assert claim.attributes["s2s.idempotency.state"] == "claimed"
    for operation in ("find", "insert"):
        mongo = _child(spans, consumer, f"{operation} outbox")
        assert mongo.attributes["db.system.name"] == "mongodb"
        assert mongo.attributes["db.namespace"] == prefix
    client = _child(spans, consumer, "POST")
    assert client.kind == "client"
    assert client.attributes["http.response.status_code"] == status
    assert client.attributes["url.template"] == "/resource"
    received = demo.a.trace_by_key[key]
    assert received["traceparent"] == f"00-{client.trace_id}-{client.span_id}-01"
    event = _child(spans, consumer, f"publish {prefix}.events")
    assert event.kind == "producer"
    assert event.attributes["messaging.rabbitmq.destination.routing_key"] == "service-a.create-resource.succeeded"
    return client


async def test_amqp_command_is_one_trace_continuing_the_producer(
    traced: DaemonSubprocess, receiver: Receiver, demo: DemoServices, run_id: str
) -> None:
    """A pika-published command with traceparent/tracestate: the consumer span's parent is the producer's span, the
    client span has service-a's 201 and is what service-a received (with the tracestate), the relay's reply and
    event are producer spans in the same trace whose context the published messages carry, and its mark-sent
    update links to the command; the log lines of the command carry trace_id/span_id, and the latency
    histogram's exemplar names the trace."""
    key = uuid.uuid4().hex
    command = Outgoing(
        "service-a.create-resource",
        b'{"name": "traced"}',
        message_id=key,
        headers={"traceparent": _traceparent(), "tracestate": TRACESTATE},
    )
    events_conn, events = await bind_probe_queue(f"{run_id}.events", "service-a.#")
    async with events_conn:
        [reply] = await pika_send(f"{run_id}.commands", [command], expect_replies=1, timeout=30)
        [event_message] = await drain(events, 1)
    assert reply.json()["status"] == "succeeded"

    spans = await _spans(
        receiver, CALLER_TRACE, f"process {run_id}.service-a.commands", "POST", f"publish {run_id}.events"
    )
    await wait_for(lambda: len([s for s in receiver.trace(CALLER_TRACE) if s.kind == "producer"]) == 2, timeout=20)
    spans = receiver.trace(CALLER_TRACE)
    print(f"\n{render(spans, external_root=CALLER_SPAN)}")
    consumer = receiver.one(CALLER_TRACE, kind="consumer")
    assert consumer.parent_span_id == CALLER_SPAN
    assert consumer.resource["service.name"] == SERVICE
    assert consumer.trace_state == TRACESTATE
    _assert_command_subtree(spans, consumer, run_id, demo, key, 201)
    assert demo.a.trace_by_key[key]["tracestate"] == TRACESTATE

    [reply_span] = [s for s in spans if s.kind == "producer" and s.attributes["s2s.outbox.message"] == "reply"]
    assert reply_span.parent_span_id == consumer.span_id
    event_span = _child(spans, consumer, f"publish {run_id}.events")
    assert reply.headers["traceparent"] == f"00-{CALLER_TRACE}-{reply_span.span_id}-01"
    assert event_message.headers["traceparent"] == f"00-{CALLER_TRACE}-{event_span.span_id}-01"
    assert reply.headers["tracestate"] == event_message.headers["tracestate"] == TRACESTATE

    def marked_sent() -> list[Span]:
        return [s for s in receiver.spans if s.name == "update outbox" and (CALLER_TRACE, consumer.span_id) in s.links]

    [mark] = await wait_for(marked_sent, timeout=20)
    assert (mark.kind, mark.attributes["db.operation.name"], mark.attributes["s2s.outbox.status"]) == (
        "client",
        "update",
        "sent",
    )

    completed = [line for line in traced.log_lines() if line.get("event") == "command.completed"]
    assert [(line["trace_id"], line["span_id"]) for line in completed] == [(CALLER_TRACE, consumer.span_id)]

    async with httpx.AsyncClient(timeout=5) as http:
        scrape = await http.get(f"{traced.url}/metrics", headers={"accept": "application/openmetrics-text"})
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    exemplars = [
        sample.exemplar.labels["trace_id"]
        for family in text_string_to_metric_families(scrape.text)
        if family.name == "s2s_handler_duration_seconds"
        for sample in family.samples
        if sample.exemplar is not None
    ]
    assert CALLER_TRACE in exemplars


async def test_a_duplicate_is_answered_in_its_own_consumer_span(
    traced: DaemonSubprocess, receiver: Receiver, demo: DemoServices, run_id: str
) -> None:
    """The same command twice: the second delivery's consumer span has an ``s2s.duplicate`` event, no client span,
    and the stored reply re-sent as a producer span under it, whose context the re-sent reply carries."""
    trace_id, key = uuid.uuid4().hex, uuid.uuid4().hex
    command = Outgoing(
        "service-a.create-resource",
        b'{"name": "twice"}',
        message_id=key,
        headers={"traceparent": _traceparent(trace_id)},
    )
    [first] = await pika_send(f"{run_id}.commands", [command], expect_replies=1, timeout=30)
    [again] = await pika_send(f"{run_id}.commands", [command], expect_replies=1, timeout=30)
    assert first.json() == again.json()
    assert demo.a.calls_by_key[key] == 1

    def consumers() -> list[Span]:
        found = [s for s in receiver.trace(trace_id) if s.kind == "consumer"]
        return found if len(found) == 2 else []

    _, duplicate = sorted(await wait_for(consumers, timeout=20), key=lambda s: s.start_ns)
    assert duplicate.attributes["s2s.outcome"] == "duplicate"
    assert "s2s.duplicate" in duplicate.event_names

    def children() -> list[Span]:
        found = [s for s in receiver.trace(trace_id) if s.parent_span_id == duplicate.span_id]
        return found if any(s.kind == "producer" for s in found) else []

    under = await wait_for(children, timeout=20)
    assert "POST" not in [s.name for s in under]
    [resent] = [s for s in under if s.kind == "producer"]
    assert resent.name == "publish (reply)"
    assert again.headers["traceparent"] == f"00-{trace_id}-{resent.span_id}-01"


async def test_in_process_retry_is_an_event_and_a_second_client_span(
    traced: DaemonSubprocess, receiver: Receiver, demo: DemoServices, run_id: str
) -> None:
    """service-a answers 503 once: the consumer span has an ``s2s.retry`` event and two client spans, the first
    failed with 503, the second a resend (``http.request.resend_count`` 1) with the 201; the downstream's last
    call carried the second one's context."""
    trace_id, key = uuid.uuid4().hex, uuid.uuid4().hex
    demo.a.faults.fail_next = 1
    command = Outgoing(
        "service-a.create-resource",
        b'{"name": "retried"}',
        message_id=key,
        headers={"traceparent": _traceparent(trace_id)},
    )
    [reply] = await pika_send(f"{run_id}.commands", [command], expect_replies=1, timeout=30)
    assert reply.json()["status"] == "succeeded"

    await wait_for(lambda: len([s for s in receiver.trace(trace_id) if s.name == "POST"]) == 2, timeout=20)
    consumer = await wait_for(lambda: [s for s in receiver.trace(trace_id) if s.kind == "consumer"], timeout=20)
    [consumer] = consumer
    first, second = sorted((s for s in receiver.trace(trace_id) if s.name == "POST"), key=lambda s: s.start_ns)
    assert {first.parent_span_id, second.parent_span_id} == {consumer.span_id}
    assert (first.status, first.attributes["http.response.status_code"]) == ("error", 503)
    assert "http.request.resend_count" not in first.attributes
    assert (second.attributes["http.request.resend_count"], second.attributes["http.response.status_code"]) == (1, 201)
    assert "s2s.retry" in consumer.event_names
    assert demo.a.trace_by_key[key]["traceparent"] == f"00-{trace_id}-{second.span_id}-01"


async def test_parking_in_a_delay_queue_is_an_event_and_the_copy_continues_the_trace(
    traced: DaemonSubprocess, receiver: Receiver, demo: DemoServices, run_id: str
) -> None:
    """A 503 with Retry-After 2 (longer than the in-process wait): the first consumer span records ``s2s.parked``
    with the delay queue, and the delivery of the parked copy is a second consumer span under the same producer."""
    trace_id, key = uuid.uuid4().hex, uuid.uuid4().hex
    demo.a.faults.fail_next, demo.a.faults.retry_after = 1, "2"
    command = Outgoing(
        "service-a.create-resource",
        b'{"name": "parked"}',
        message_id=key,
        headers={"traceparent": _traceparent(trace_id)},
    )
    [reply] = await pika_send(f"{run_id}.commands", [command], expect_replies=1, timeout=60)
    assert reply.json()["status"] == "succeeded"

    def consumers() -> list[Span]:
        found = [s for s in receiver.trace(trace_id) if s.kind == "consumer"]
        return found if len(found) == 2 else []

    first, second = sorted(await wait_for(consumers, timeout=20), key=lambda s: s.start_ns)
    assert first.parent_span_id == second.parent_span_id == CALLER_SPAN
    assert first.attributes["s2s.outcome"] == "redelivered"
    [(_, parked)] = [(name, attrs) for name, attrs in first.events if name == "s2s.parked"]
    assert parked["s2s.cause"] == "retry"
    assert parked["s2s.delay_queue"].startswith(f"{run_id}.service-a.delay.")
    assert second.attributes["s2s.outcome"] == "succeeded"


async def test_http_command_continues_the_callers_trace(
    traced: DaemonSubprocess, receiver: Receiver, demo: DemoServices, run_id: str
) -> None:
    """POST to the command API with a traceparent: the sidecar's server span continues it, the command's publish is
    a producer span under it, the consumer span's parent is that producer span, and the rest is the AMQP tree. A
    read through the sidecar is a server span with the HTTP attempt to service-b under it."""
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    key = f"http-{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=15) as http:
        answer = await http.post(
            f"{traced.url}/api/service-a/resource",
            content=b'{"name": "over http"}',
            headers={
                "content-type": "application/json",
                "idempotency-key": key,
                "prefer": "wait=10",
                "traceparent": _traceparent(trace_id, caller),
            },
        )
    assert answer.status_code == 201, answer.text

    spans = await _spans(
        receiver, trace_id, "POST /api/service-a/resource", f"process {run_id}.service-a.commands", "POST"
    )
    await wait_for(lambda: len([s for s in receiver.trace(trace_id) if s.kind == "producer"]) == 3, timeout=20)
    spans = receiver.trace(trace_id)
    print(f"\n{render(spans, external_root=caller)}")
    server = receiver.one(trace_id, kind="server")
    assert server.parent_span_id == caller
    assert server.attributes["http.route"] == "/api/service-a/resource"
    assert server.attributes["http.response.status_code"] == 201
    publish = _child(spans, server, f"publish {run_id}.commands")
    assert publish.kind == "producer"
    consumer = receiver.one(trace_id, kind="consumer")
    assert consumer.parent_span_id == publish.span_id
    _assert_command_subtree(spans, consumer, run_id, demo, key, 201)

    read_trace = uuid.uuid4().hex
    async with httpx.AsyncClient(timeout=15) as http:
        read = await http.get(
            f"{traced.url}/api/service-b/resource/{answer.json()['result']['body']['id']}",
            headers={"traceparent": _traceparent(read_trace, caller)},
        )
    assert read.status_code == 200, read.text
    spans = await _spans(receiver, read_trace, "GET /api/service-b/resource/{id}", "GET")
    server = receiver.one(read_trace, kind="server")
    assert server.parent_span_id == caller
    attempt = _child(spans, server, "GET")
    assert (attempt.kind, attempt.attributes["http.response.status_code"]) == ("client", 200)
    assert attempt.attributes["url.template"] == "/resource/{id}"


async def test_webhook_is_a_server_span_and_its_event_is_linked(
    traced: DaemonSubprocess, receiver: Receiver, run_id: str
) -> None:
    """A signed webhook with a traceparent: a server span continuing it with the outbox insert under it; the relay
    publishes the event in a producer span of its own trace, linked to the server span."""
    trace_id, caller = uuid.uuid4().hex, uuid.uuid4().hex[:16]
    body = '{"type":"invoice.paid","data":{"id":"in_7"}}'
    msg_id = f"msg_{uuid.uuid4().hex}"
    now = datetime.now(tz=UTC)
    signature = standardwebhooks.webhooks.Webhook(WEBHOOK_SECRET).sign(msg_id, now, body)
    events_conn, events = await bind_probe_queue(f"{run_id}.events", "webhook.acme.#")
    async with events_conn, httpx.AsyncClient(timeout=10) as http:
        answer = await http.post(
            f"{traced.url}/api/webhooks/acme",
            content=body.encode(),
            headers={
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(now.timestamp())),
                "webhook-signature": signature,
                "traceparent": _traceparent(trace_id, caller),
            },
        )
        assert answer.status_code == 202, answer.text
        [event_message] = await drain(events, 1)

    spans = await _spans(receiver, trace_id, "POST /api/webhooks/{service}", "insert outbox")
    server = receiver.one(trace_id, kind="server")
    assert server.parent_span_id == caller
    assert server.attributes["http.response.status_code"] == 202
    _child(spans, server, "insert outbox")

    def linked() -> list[Span]:
        return [s for s in receiver.spans if s.kind == "producer" and (trace_id, server.span_id) in s.links]

    [event_span] = await wait_for(linked, timeout=20)
    print(f"\n{render(spans, external_root=caller)}\n{render([event_span])}")
    assert event_span.trace_id != trace_id
    assert event_span.name == f"publish {run_id}.events"
    assert event_span.attributes["s2s.outbox.kind"] == "webhook"
    assert event_message.headers["traceparent"] == f"00-{event_span.trace_id}-{event_span.span_id}-01"
    assert orjson.loads(event_message.body)["type"] == "webhook.acme.invoice.paid"


async def test_otlp_grpc_exports_the_same_trace(
    make_settings: SettingsFactory, cleanup_namespace: None, demo: DemoServices, run_id: str, tmp_path: Path
) -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL=grpc: the spans reach an OTLP/gRPC receiver, the consumer span under the
    producer's span and the client span what service-a received."""
    key = uuid.uuid4().hex
    async with running_grpc_receiver() as receiver:
        env = otel_env(receiver, OTEL_EXPORTER_OTLP_PROTOCOL="grpc")
        async with daemon_subprocess(settings_values(make_settings()), env, tmp_path / "daemon.log"):
            command = Outgoing(
                "service-a.create-resource",
                b'{"name": "grpc"}',
                message_id=key,
                headers={"traceparent": _traceparent()},
            )
            [reply] = await pika_send(f"{run_id}.commands", [command], expect_replies=1, timeout=30)
            assert reply.json()["status"] == "succeeded"
            await _spans(receiver, CALLER_TRACE, f"process {run_id}.service-a.commands", "POST")
    consumer = receiver.one(CALLER_TRACE, kind="consumer")
    assert consumer.parent_span_id == CALLER_SPAN
    client = receiver.one(CALLER_TRACE, name="POST")
    assert client.parent_span_id == consumer.span_id
    assert demo.a.trace_by_key[key]["traceparent"] == f"00-{CALLER_TRACE}-{client.span_id}-01"


@pytest.mark.parametrize("variables", ["none", "sdk-disabled"])
async def test_without_tracing_nothing_is_recorded_or_exported(
    make_settings: SettingsFactory,
    cleanup_namespace: None,
    receiver: Receiver,
    run_id: str,
    tmp_path: Path,
    variables: str,
) -> None:
    """With no OTEL_* variable (none), or with OTEL_SDK_DISABLED=true beside an exporter and an endpoint: commands
    flow, the traceparent is forwarded as before (a new span id in the caller's trace), log lines carry the trace id
    but no span id, the histograms carry no exemplar, and after the drain the receiver got no request."""
    env = {} if variables == "none" else otel_env(receiver, OTEL_SDK_DISABLED="true")
    key = uuid.uuid4().hex
    async with daemon_subprocess(settings_values(make_settings()), env, tmp_path / "daemon.log") as daemon:
        command = Outgoing(
            "service-a.create-resource",
            b'{"name": "untraced"}',
            message_id=key,
            headers={"traceparent": _traceparent()},
        )
        [reply] = await pika_send(f"{run_id}.commands", [command], expect_replies=1, timeout=30)
        assert reply.json()["status"] == "succeeded"
        async with httpx.AsyncClient(timeout=5) as http:
            scrape = await http.get(f"{daemon.url}/metrics", headers={"accept": "application/openmetrics-text"})
        completed = [line for line in daemon.log_lines() if line.get("event") == "command.completed"]
    forwarded = TraceContext.parse(reply.headers["traceparent"])
    assert forwarded is not None
    assert (forwarded.trace_id, forwarded.parent_id != CALLER_SPAN) == (CALLER_TRACE, True)
    assert [(line["trace_id"], "span_id" in line) for line in completed] == [(CALLER_TRACE, False)]
    assert scrape.headers["content-type"].startswith("application/openmetrics-text")
    assert "trace_id=" not in scrape.text
    assert (receiver.requests, receiver.spans) == (0, [])
