"""One command end to end on real RabbitMQ, Redis and nx-27017, produced by pika (not our code)."""

from __future__ import annotations

import uuid

import orjson
import pytest

from s2s_daemon.app import Daemon
from s2s_daemon.observability.correlation import TraceContext
from tests.conftest import DemoServices
from tests.support import Outgoing, bind_probe_queue, drain, pika_send, queue_depth, wait_for

pytestmark = pytest.mark.integration


def _cmd(name: str = "x", **kw: object) -> Outgoing:
    return Outgoing(
        "service-a.create-resource",
        orjson.dumps({"name": name}),
        message_id=kw.pop("message_id", uuid.uuid4().hex),  # type: ignore[arg-type]
        correlation_id=kw.pop("correlation_id", uuid.uuid4().hex),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


async def test_pika_command_gets_reply_and_event(daemon: Daemon, demo: DemoServices) -> None:
    """A pika-published command reaches service-a; the reply keeps the correlation id; an event is published."""
    events_conn, events = await bind_probe_queue(daemon.topology.events_exchange_name, "service-a.#")
    async with events_conn:
        command = _cmd("first")
        [reply] = await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)

        body = reply.json()
        assert reply.correlation_id == command.correlation_id
        assert body["status"] == "succeeded"
        assert body["command_id"] == command.message_id
        assert body["result"]["status_code"] == 201
        assert body["result"]["body"]["name"] == "first"
        assert demo.a.calls_by_key[command.message_id] == 1

        [event] = await drain(events, 1)
        assert event.routing_key == "service-a.create-resource.succeeded"
        envelope = event.json()
        assert envelope["specversion"] == "1.0"
        assert envelope["type"] == "service-a.create-resource.succeeded"
        assert envelope["data"]["result"]["body"]["id"] == body["result"]["body"]["id"]
        assert event.correlation_id == command.correlation_id


async def test_trace_context_reaches_the_downstream_reply_and_event(daemon: Daemon, demo: DemoServices) -> None:
    """A pika-published command with traceparent and tracestate: service-a gets a child span of that trace and
    the same tracestate, and so do the reply and the event."""
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    tracestate = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    events_conn, events = await bind_probe_queue(daemon.topology.events_exchange_name, "service-a.#")
    async with events_conn:
        command = _cmd("traced", headers={"traceparent": traceparent, "tracestate": tracestate})
        [reply] = await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
        [event] = await drain(events, 1)

    assert reply.json()["status"] == "succeeded"
    downstream = demo.a.trace_by_key[command.message_id]
    sent = TraceContext.parse(downstream["traceparent"])
    assert sent is not None
    assert (sent.trace_id, sent.sampled) == ("4bf92f3577b34da6a3ce929d0e0e4736", True)
    assert sent.parent_id != "00f067aa0ba902b7"
    assert downstream["tracestate"] == tracestate
    for published in (reply, event):
        assert published.headers["traceparent"] == downstream["traceparent"]
        assert published.headers["tracestate"] == tracestate


async def test_same_message_id_three_times_calls_downstream_once(daemon: Daemon, demo: DemoServices) -> None:
    """Three deliveries of one message_id: service-a sees the key once and every reply has the same resource."""
    key = uuid.uuid4().hex
    commands = [_cmd("dup", message_id=key) for _ in range(3)]
    replies = await pika_send(daemon.topology.commands_exchange_name, commands, expect_replies=3, timeout=30)

    assert len(replies) == 3
    assert demo.a.calls_by_key[key] == 1
    assert demo.a.effects == 1
    ids = {r.json()["result"]["body"]["id"] for r in replies}
    assert len(ids) == 1
    assert {r.correlation_id for r in replies} == {c.correlation_id for c in commands}


async def test_downstream_error_gives_typed_failed_reply(daemon: Daemon, demo: DemoServices) -> None:
    """A 4xx from the downstream is a failed reply of kind 'rejected' with the status and body."""
    command = Outgoing(
        "service-a.create-resource",
        orjson.dumps({"name": "x"}),
        message_id=uuid.uuid4().hex,
        correlation_id="c1",
    )
    demo.a.faults.status = 409
    [reply] = await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
    body = reply.json()
    assert body["status"] == "failed"
    assert body["error"]["kind"] == "conflict"
    assert body["error"]["status_code"] == 409


async def test_unreachable_downstream_gives_unavailable_reply(
    make_settings, cleanup_namespace: None, unused_port: int
) -> None:
    """Connection refused by the downstream, once the retries have run out, is a failed reply of kind
    'unavailable' (a short policy here: the default one waits out minutes of an outage)."""
    settings = make_settings(
        downstreams={
            "service-a": {
                "base_url": f"http://127.0.0.1:{unused_port}",
                "timeout": 1.0,
                "retry": {"max_attempts": 3, "initial_delay": 0.05, "max_delay": 0.2},
                "routes": {"create-resource": {"method": "POST", "path": "/resource"}},
            }
        }
    )
    async with Daemon(settings) as daemon:
        [reply] = await pika_send(daemon.topology.commands_exchange_name, [_cmd()], expect_replies=1)
    body = reply.json()
    assert body["status"] == "failed"
    assert body["error"]["kind"] == "unavailable"


async def test_outbox_document_marked_sent_after_publish(daemon: Daemon) -> None:
    """The relay marks the outbox document sent once the reply and event were confirmed."""
    command = _cmd("outboxed")
    await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1)
    assert daemon.outbox is not None
    key = f"cmd:service-a:{command.message_id}"

    async def is_sent() -> bool:
        record = await daemon.outbox.find(key)  # type: ignore[union-attr]
        return record is not None and record.status == "sent" and (record.sent_at or 0) >= record.created_at

    await wait_for(is_sent)


async def test_commands_are_handled_concurrently(daemon: Daemon, demo: DemoServices) -> None:
    """With prefetch > 1, downstream calls for different commands overlap (peak concurrency at service-a > 1)."""
    demo.a.faults.latency_ms = 200
    commands = [_cmd(f"c{i}") for i in range(20)]
    replies = await pika_send(daemon.topology.commands_exchange_name, commands, expect_replies=20, timeout=30)
    assert len(replies) == 20
    assert demo.a.peak_in_flight > 1
    assert await queue_depth(daemon.topology.command_queue_name("service-a")) == 0


async def test_existing_queue_with_other_arguments_is_a_clear_config_error(
    make_settings, cleanup_namespace: None, run_id: str
) -> None:
    """A command queue left with another x-delivery-limit stops the start with a ConfigError naming it."""
    import aio_pika

    from s2s_daemon.errors import ConfigError
    from tests.support import RABBITMQ_URL

    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        await channel.declare_queue(
            f"{run_id}.service-a.commands",
            durable=True,
            arguments={"x-queue-type": "quorum", "x-delivery-limit": 5, "x-dead-letter-exchange": f"{run_id}.dlx"},
        )
    with pytest.raises(ConfigError, match="x-delivery-limit"):
        async with Daemon(make_settings()):
            pass
