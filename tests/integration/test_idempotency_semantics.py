"""The idempotency contract, one rule per test: conflict in every state, and expired-lease takeover."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from s2s_daemon.app import Daemon
from s2s_daemon.idempotency.fingerprint import fingerprint
from tests.conftest import REDIS_URL, DemoServices
from tests.support import RABBITMQ_URL, Outgoing, bind_probe_queue, pika_send, wait_for

pytestmark = pytest.mark.integration

ROUTING_KEY = "service-a.create-resource"


def _command(key: str, name: str) -> Outgoing:
    return Outgoing(ROUTING_KEY, orjson.dumps({"name": name}), message_id=key, correlation_id=uuid.uuid4().hex)


def _record_key(daemon: Daemon, key: str) -> str:
    return f"{daemon.settings.idempotency.key_prefix}service-a:{key}"


async def _send_one(daemon: Daemon, command: Outgoing) -> dict[str, Any]:
    [reply] = await pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1, timeout=20)
    assert reply.correlation_id == command.correlation_id
    return reply.json()  # type: ignore[no-any-return]


def _assert_conflict(body: dict[str, Any], key: str) -> None:
    assert body["status"] == "failed"
    assert body["command_id"] == key
    assert body["error"]["kind"] == "conflict"
    assert body["result"] is None


async def _events_for(queue: Any, key: str, settle: float = 1.0) -> list[dict[str, Any]]:
    """Every event on the probe queue whose subject is ``key``, after a pause for stragglers."""
    await asyncio.sleep(settle)
    got = []
    while (message := await queue.get(fail=False, no_ack=True)) is not None:
        event = orjson.loads(message.body)
        if event["subject"] == key:
            got.append(event)
    return got


async def test_conflict_after_completion_makes_no_call_and_no_event(daemon: Daemon, demo: DemoServices) -> None:
    """Same key, different payload after completion: a `conflict` reply; no downstream call, no second event."""
    connection, events = await bind_probe_queue(daemon.topology.events_exchange_name, "service-a.#")
    async with connection:
        key = uuid.uuid4().hex
        first = await _send_one(daemon, _command(key, "original"))
        assert first["status"] == "succeeded"

        _assert_conflict(await _send_one(daemon, _command(key, "different")), key)

        assert demo.a.calls_by_key[key] == 1
        assert demo.a.effects == 1
        [event] = await _events_for(events, key)
        assert event["type"] == "service-a.create-resource.succeeded"
        assert daemon.outbox is not None
        stored = await daemon.outbox.find(f"cmd:service-a:{key}")
        assert stored is not None
        assert stored.reply is not None
        assert stored.reply["result"]["body"]["name"] == "original", "the stored reply is untouched"


async def test_conflict_while_in_flight_elsewhere_is_answered_at_once(daemon: Daemon, demo: DemoServices) -> None:
    """Same key, different payload while another worker holds the lease: `conflict` now, no call, no waiting."""
    key = uuid.uuid4().hex
    held_fp = fingerprint(ROUTING_KEY, {"name": "held"})
    async with Redis.from_url(REDIS_URL) as redis:
        await redis.set(_record_key(daemon, key), f"f|elsewhere-1-abcdef|{held_fp}", px=30_000)
        started = time.monotonic()
        _assert_conflict(await _send_one(daemon, _command(key, "different")), key)
        assert time.monotonic() - started < 2.0, "answered without a delayed redelivery"
        value = await redis.get(_record_key(daemon, key))
    assert value == f"f|elsewhere-1-abcdef|{held_fp}".encode(), "the other worker's lease is untouched"
    assert demo.a.calls == 0


async def test_conflict_decided_by_the_outbox_when_redis_lost_the_record(daemon: Daemon, demo: DemoServices) -> None:
    """Redis lost the `done` record: the outbox's stored fingerprint still answers `conflict` (and re-sends a match)."""
    key = uuid.uuid4().hex
    first = await _send_one(daemon, _command(key, "original"))
    async with Redis.from_url(REDIS_URL) as redis:
        assert await redis.delete(_record_key(daemon, key)) == 1

        _assert_conflict(await _send_one(daemon, _command(key, "different")), key)
        assert await redis.delete(_record_key(daemon, key)) == 1

        again = await _send_one(daemon, _command(key, "original"))
    assert again["result"] == first["result"], "the same payload gets the stored reply"
    assert demo.a.calls_by_key[key] == 1


async def test_expired_lease_is_taken_over_with_the_same_idempotency_key(daemon: Daemon, demo: DemoServices) -> None:
    """An in-flight record whose owner died: no call while its lease holds, then a takeover that sends the
    same Idempotency-Key, so the downstream returns the resource the dead owner created (one effect)."""
    key = uuid.uuid4().hex
    body = {"name": "orphan"}
    # the dead owner had claimed the key and called service-a before it vanished
    async with httpx.AsyncClient() as http:
        ghost = await http.post(f"{demo.url_a}/resource", json=body, headers={"idempotency-key": key})
    assert ghost.status_code == 201
    lease_ms = 1500
    async with Redis.from_url(REDIS_URL) as redis:
        await redis.set(_record_key(daemon, key), f"f|ghost-1-dead00|{fingerprint(ROUTING_KEY, body)}", px=lease_ms)
        claimed_at = time.monotonic()

        command = Outgoing(ROUTING_KEY, orjson.dumps(body), message_id=key, correlation_id=uuid.uuid4().hex)
        send = asyncio.create_task(
            pika_send(daemon.topology.commands_exchange_name, [command], expect_replies=1, timeout=20)
        )
        await asyncio.sleep(lease_ms / 1000 - 0.3)
        assert demo.a.calls_by_key[key] == 1, "no call while the dead owner's lease holds"
        [reply] = await send
        took_over_after = time.monotonic() - claimed_at
        record = await redis.get(_record_key(daemon, key))

    result = reply.json()
    assert result["status"] == "succeeded"
    assert result["result"]["status_code"] == 200, "service-a recognised the key: no new resource"
    assert result["result"]["body"]["id"] == ghost.json()["id"]
    assert demo.a.calls_by_key[key] == 2
    assert demo.a.effects == 1
    assert record == f"d|{fingerprint(ROUTING_KEY, body)}".encode()
    assert took_over_after >= lease_ms / 1000
    print(f"\n[lease takeover] lease={lease_ms} ms, reply after {took_over_after:.2f} s")


async def test_duplicate_after_completion_gets_the_stored_reply_with_a_stable_message_id(
    daemon: Daemon, demo: DemoServices
) -> None:
    """A completed key delivered again with its own reply_to gets the stored reply, under the same message_id
    as the original reply (the event id), so a consumer can drop it."""
    key = uuid.uuid4().hex
    first_cmd, second_cmd = _command(key, "x"), _command(key, "x")
    [first] = await pika_send(daemon.topology.commands_exchange_name, [first_cmd], expect_replies=1)
    [second] = await pika_send(daemon.topology.commands_exchange_name, [second_cmd], expect_replies=1)
    assert second.correlation_id == second_cmd.correlation_id
    assert second.json() == first.json()
    assert first.message_id is not None
    assert second.message_id == first.message_id
    assert demo.a.calls_by_key[key] == 1


async def test_copies_in_one_process_never_call_twice(daemon: Daemon, demo: DemoServices) -> None:
    """3 copies of each of 200 keys to one daemon process (the copies share its owner token in Redis): one
    call per key and one answer per copy."""
    demo.a.faults.latency_ms = 20
    answers: Counter[str] = Counter()
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(exclusive=True)

        async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
            async with message.process():
                answers[message.correlation_id or ""] += 1

        await replies.consume(on_reply)
        exchange = await channel.get_exchange(daemon.topology.commands_exchange_name)
        keys = [uuid.uuid4().hex for _ in range(200)]
        await asyncio.gather(
            *(
                exchange.publish(
                    aio_pika.Message(
                        orjson.dumps({"name": key[:8]}),
                        message_id=key,
                        correlation_id=f"{key}-{copy}",
                        reply_to=replies.name,
                    ),
                    routing_key=ROUTING_KEY,
                )
                for key in keys
                for copy in range(3)
            )
        )
        await wait_for(lambda: len(answers) >= 600, timeout=30, interval=0.1)
        await asyncio.sleep(1.0)
    assert set(answers.values()) == {1}
    assert demo.a.calls == 200
    assert set(demo.a.calls_by_key.values()) == {1}


async def test_a_lease_lost_mid_call_still_answers_both_deliveries_with_one_result(
    make_settings, cleanup_namespace: None, demo: DemoServices
) -> None:
    """A call outlives its lease: another process takes the key over and calls again (same Idempotency-Key:
    one effect); whichever writes second finds the key recorded and answers from the stored reply."""
    demo.a.faults.latency_ms = 4000  # long enough for a second daemon to start and call under a loaded CI
    lease = {"lease_seconds": 0.5}
    key = uuid.uuid4().hex
    first, second = _command(key, "slow"), _command(key, "slow")
    # the first daemon takes one message at a time, so while it is busy the second delivery goes elsewhere
    async with Daemon(make_settings(amqp={"prefetch": 1}, idempotency=lease)) as busy:
        exchange = busy.topology.commands_exchange_name
        connection, events = await bind_probe_queue(busy.topology.events_exchange_name, "service-a.#")
        async with connection:
            sending = asyncio.create_task(pika_send(exchange, [first], expect_replies=1, timeout=20))
            await wait_for(lambda: demo.a.calls_by_key[key] == 1)
            await asyncio.sleep(0.6)  # the lease has run out; the call has not
            async with Daemon(make_settings(idempotency=lease)) as other:
                assert other.topology.commands_exchange_name == exchange
                [second_reply] = await pika_send(exchange, [second], expect_replies=1, timeout=20)
                [first_reply] = await sending
            [event] = await _events_for(events, key)

    assert demo.a.calls_by_key[key] == 2, "the takeover called again, with the same Idempotency-Key"
    assert demo.a.effects == 1
    assert first_reply.correlation_id == first.correlation_id
    assert second_reply.correlation_id == second.correlation_id
    assert first_reply.json() == second_reply.json() == event["data"]
    assert first_reply.message_id == second_reply.message_id == event["id"]
