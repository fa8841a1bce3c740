"""Redis unreachable during a run: fail closed, lose nothing, call nothing twice, report not-ready.

Uses a private redis-server on a free port (never the shared one on 6379), made unreachable for 10 s in one
of two ways:

* ``pause``: ``CLIENT PAUSE 10000 ALL``; every command, PING included, hangs until the pause ends, which is
  how a stalled or partitioned Redis looks to a client (each attempt costs the 2 s socket timeout);
* ``kill``: SIGKILL, then a restart on the same port with no persistence, so every record is gone and the
  outbox's unique key alone decides which keys were already done.

After the run, 100 completed keys are delivered again: they are answered from the stored reply, never called.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import httpx
import orjson
import pytest
from redis.asyncio import Redis

from tests.conftest import DemoServices
from tests.daemonproc import DaemonProcess, forkserver, settings_values, start_daemon, stop_daemons, wait_ready
from tests.privateredis import PrivateRedis, private_redis
from tests.support import RABBITMQ_URL, wait_for

pytestmark = pytest.mark.integration

COMMANDS = 1000
RATE_PER_S = 50  # publishing spreads over 20 s: before, during and after the outage
OUTAGE_AT_S = 5.0
OUTAGE_S = 10.0
DUPLICATES = 100


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as server:
        yield server


async def _poll_readiness(daemon: DaemonProcess, log: list[tuple[float, int]], stop: asyncio.Event) -> None:
    async with httpx.AsyncClient(timeout=3.0) as http:
        while not stop.is_set():
            try:
                code = (await http.get(f"{daemon.url}/readyz")).status_code
            except httpx.HTTPError:
                code = 0
            log.append((time.monotonic(), code))
            await asyncio.sleep(0.25)


class Outage:
    def __init__(self, kind: str, redis: PrivateRedis) -> None:
        self.kind = kind
        self.redis = redis
        self.started = 0.0
        self.ended = 0.0

    async def begin(self) -> None:
        if self.kind == "pause":
            async with Redis.from_url(self.redis.url) as admin:
                await admin.execute_command("CLIENT", "PAUSE", int(OUTAGE_S * 1000), "ALL")
        else:
            await asyncio.to_thread(self.redis.kill)
        self.started = time.monotonic()

    async def end_if_due(self) -> None:
        if self.started and not self.ended and time.monotonic() >= self.started + OUTAGE_S:
            if self.kind == "kill":
                await asyncio.to_thread(self.redis.start)  # same port, empty
            self.ended = self.started + OUTAGE_S if self.kind == "pause" else time.monotonic()


@pytest.mark.timeout(150)
@pytest.mark.parametrize("kind", ["pause", "kill"])
async def test_redis_unreachable_10s_during_1000_commands_loses_nothing_and_calls_once(
    kind: str, make_settings, cleanup_namespace: None, demo: DemoServices, own_redis: PrivateRedis
) -> None:
    """Redis unreachable for 10 s in the middle of 1,000 commands to 2 daemon processes: every command
    answered, every key called exactly once, /readyz 503 while Redis is unreachable and 200 soon after; then
    100 completed keys delivered again are answered without a call."""
    settings = make_settings(
        redis_url=own_redis.url,
        amqp={"prefetch": 20, "delay_ladder": [1, 2, 5]},
        idempotency={"lease_seconds": 5.0},
        outbox={"poll_interval": 0.2},
    )
    prefix = settings.amqp.prefix
    outage = Outage(kind, own_redis)
    daemons = [start_daemon(forkserver(), settings_values(settings)) for _ in range(2)]
    readiness: dict[int, list[tuple[float, int]]] = {d.port: [] for d in daemons}
    answered: dict[str, float] = {}  # correlation id -> first answer
    answers = Counter[str]()
    published: dict[str, float] = {}
    stop_polling = asyncio.Event()
    try:
        for d in daemons:
            await wait_ready(d)
        pollers = [asyncio.create_task(_poll_readiness(d, readiness[d.port], stop_polling)) for d in daemons]
        connection = await aio_pika.connect(RABBITMQ_URL)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            replies = await channel.declare_queue(exclusive=True)

            async def on_reply(message: aio_pika.abc.AbstractIncomingMessage) -> None:
                async with message.process():
                    assert orjson.loads(message.body)["status"] == "succeeded"
                    answers[message.correlation_id or ""] += 1
                    answered.setdefault(message.correlation_id or "", time.monotonic())

            await replies.consume(on_reply)
            exchange = await channel.get_exchange(f"{prefix}.commands")

            async def send(key: str, correlation_id: str) -> None:
                await exchange.publish(
                    aio_pika.Message(
                        orjson.dumps({"name": key[:8]}),
                        message_id=key,
                        correlation_id=correlation_id,
                        reply_to=replies.name,
                        delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                    ),
                    routing_key="service-a.create-resource",
                )

            started = time.monotonic()
            for i in range(COMMANDS):
                if not outage.started and time.monotonic() - started >= OUTAGE_AT_S:
                    await outage.begin()
                await outage.end_if_due()
                key = uuid.uuid4().hex
                published[key] = time.monotonic()
                await send(key, key)
                # pace by the clock, so publishing keeps its rate while the loop is busy
                await asyncio.sleep(max(0.0, started + (i + 1) / RATE_PER_S - time.monotonic()))
            await wait_for(lambda: len(answered) >= COMMANDS, timeout=90, interval=0.1)
            all_answered = time.monotonic()
            stop_polling.set()
            await asyncio.gather(*pollers)

            calls_before = demo.a.calls
            again = list(published)[:DUPLICATES]  # completed before the outage
            for key in again:
                await send(key, f"{key}-again")
            await wait_for(lambda: len(answered) >= COMMANDS + DUPLICATES, timeout=30, interval=0.1)
            await asyncio.sleep(1.0)  # room for a second answer to show up
            dlq = await channel.declare_queue(f"{prefix}.dlq", passive=True)
            dead_lettered = dlq.declaration_result.message_count
        redeliveries = sum([await d.metric("s2s_redelivered_total", reason="redis-unavailable") for d in daemons])
        in_flight_waits = sum([await d.metric("s2s_redelivered_total", reason="in-flight") for d in daemons])
        backstop = sum([await d.metric("s2s_dedupe_hits_total", state="backstop") for d in daemons])
    finally:
        stop_polling.set()
        await stop_daemons(daemons)

    during = [k for k, t in published.items() if outage.started <= t < outage.ended]
    latency = sorted(answered[k] - published[k] for k in published)
    not_ready_after = [_first(log, outage.started, 503) - outage.started for log in readiness.values()]
    ready_again_after = [_first(log, outage.ended, 200) - outage.ended for log in readiness.values()]
    per_second = Counter(int(answered[k] - outage.ended) for k in published if answered[k] >= outage.ended)
    print(
        f"\n[redis {kind}] commands={COMMANDS} published_during_outage={len(during)} answered={len(answered)} "
        f"calls={demo.a.calls} effects={demo.a.effects} dead_lettered={dead_lettered} "
        f"redis_redeliveries={redeliveries:.0f} in_flight_redeliveries={in_flight_waits:.0f} "
        f"backstop_hits={backstop:.0f} not_ready_after_s={[round(x, 2) for x in not_ready_after]} "
        f"ready_again_after_s={[round(x, 2) for x in ready_again_after]} "
        f"all_answered_after_outage_s={all_answered - outage.ended:.1f} "
        f"answers_per_s_after_outage={[per_second[s] for s in range(max(per_second, default=0) + 1)]} "
        f"latency_p50_s={latency[len(latency) // 2]:.2f} latency_max_s={latency[-1]:.2f}"
    )
    assert outage.ended, "the outage began and ended during the run"
    assert during, "commands arrived during the outage"
    # consumers pause while Redis is unreachable: only what was prefetched (2 daemons x 20) gets parked, once
    # or twice (160-820 parkings before the pause existed)
    assert redeliveries <= 2 * 20 * 2, f"{redeliveries:.0f} commands parked during the outage"
    assert set(answered) == set(published) | {f"{k}-again" for k in again}, "0 lost"
    assert set(answers.values()) == {1}, "one answer per delivery asked"
    assert set(demo.a.calls_by_key) == set(published)
    assert set(demo.a.calls_by_key.values()) == {1}, "0 duplicate calls, so 0 duplicate effects"
    assert demo.a.effects == COMMANDS
    assert demo.a.calls == calls_before, "the repeated keys were answered from the stored reply"
    assert dead_lettered == 0
    if kind == "kill":
        assert backstop >= DUPLICATES, "with Redis emptied, the outbox decided"
    for log in readiness.values():
        assert any(c == 200 for t, c in log if t < outage.started), "ready before the outage"
        assert any(c == 503 for t, c in log if outage.started <= t < outage.ended), "not ready during it"
    assert max(not_ready_after) < 3.0
    assert max(ready_again_after) < 3.0


def _first(log: list[tuple[float, int]], since: float, code: int) -> float:
    return next((t for t, c in log if t >= since and c == code), float("inf"))
