"""``s2s-daemon dlq``: list, show, replay and purge on the real RabbitMQ, mostly through the CLI in a subprocess.

Dead letters are made the way the daemon makes them (a copy on ``<prefix>.dlx`` with ``x-s2s-*`` headers) and
the way the broker makes them (quorum-queue delivery limit: ``x-death``), and by a running daemon.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from typing import Any

import aio_pika
import orjson
import pytest
from faststream.rabbit import RabbitBroker

from s2s_daemon.app import Daemon
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.ops.dlq import DeadLetterQueue, Selection, edited_key
from tests.conftest import DemoServices
from tests.support import RABBITMQ_URL, Outgoing, pika_send, queue_depth, wait_for

pytestmark = pytest.mark.integration

ROUTE = "service-a.create-resource"
DAY_MS = 86_400_000


@dataclass
class Namespace:
    prefix: str
    topology: Topology

    @property
    def dlq(self) -> str:
        return self.topology.dlq_name

    @property
    def command_queues(self) -> list[str]:
        return [self.topology.command_queue_name(d) for d in self.topology.downstreams] + [self.topology.unrouted_name]


@pytest.fixture
async def ns(run_id: str, make_settings, cleanup_namespace: None) -> Namespace:
    """This test's exchanges and queues, declared as the daemon declares them, without a daemon consuming."""
    settings = make_settings()
    topology = Topology.from_settings(settings.amqp, tuple(settings.downstreams))
    broker = RabbitBroker(RABBITMQ_URL, logger=None)
    await broker.connect()
    try:
        await topology.declare(broker)
        for downstream in topology.downstreams:  # the daemon's subscribers bind these when they start
            queue = await broker.declare_queue(topology.command_queue(downstream))
            await queue.bind(topology.commands_exchange_name, routing_key=f"{downstream}.#")
    finally:
        await broker.stop()
    return Namespace(run_id, topology)


def _env(prefix: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("S2S_")}
    env.update({"RABBITMQ_URL": RABBITMQ_URL, "S2S_AMQP__PREFIX": prefix, "PYTHONUNBUFFERED": "1"})
    return env


async def cli(prefix: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """``s2s-daemon dlq ARGS`` in a subprocess (no terminal: no progress bar)."""
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "s2s_daemon", "dlq", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_env(prefix),
    )


def start_cli(prefix: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "s2s_daemon", "dlq", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(prefix),
    )


async def dead_letter(
    ns: Namespace,
    count: int,
    *,
    reason: str = "retries-exhausted",
    routing_key: str = ROUTE,
    age_ms: int = 60_000,
    body: Any = None,
    id_prefix: str = "m",
) -> list[str]:
    """Put ``count`` dead letters in the DLQ exactly as the daemon's publisher does; returns their message ids."""
    ids = [f"{id_prefix}{i:05d}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    dead_at = int(time.time() * 1000) - age_ms
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        dlx = await channel.get_exchange(ns.topology.dlx_name)
        for start in range(0, count, 200):
            await asyncio.gather(
                *(
                    dlx.publish(
                        aio_pika.Message(
                            orjson.dumps(body if body is not None else {"name": mid[:12]}),
                            message_id=mid,
                            correlation_id=f"corr-{mid}",
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                            headers={
                                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                                "x-custom": "kept",
                                "x-s2s-reason": reason,
                                "x-s2s-detail": f"detail of {reason}",
                                "x-s2s-routing-key": routing_key,
                                "x-s2s-dead-lettered-at": dead_at,
                                "x-s2s-queue": ns.topology.command_queue_name("service-a"),
                                "x-s2s-attempt": 3,
                            },
                        ),
                        routing_key=routing_key,
                    )
                    for mid in ids[start : start + 200]
                )
            )
    return ids


async def take_all(queue: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Empty ``queue`` (auto-ack), in order."""
    got = []
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        q = await channel.get_queue(queue)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            got.append(message)
    return got


async def commands_depth(ns: Namespace) -> int:
    return sum([await queue_depth(name) for name in ns.command_queues])


# list / show --------------------------------------------------------------------------------------------
async def test_list_shows_reason_routing_key_attempts_age_and_correlation(ns: Namespace) -> None:
    """`dlq list --json` reports our reasons and the broker's, attempts, age, correlation; the DLQ is unchanged."""
    ours = await dead_letter(ns, 2, reason="schema-violation", age_ms=2 * DAY_MS)
    await _broker_dead_letter(ns, "poison-1", "poison.cmd")
    await wait_for(lambda: _depth_is(ns.dlq, 3), timeout=5)

    listed = await cli(ns.prefix, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    rows = orjson.loads(listed.stdout)
    assert [r["id"] for r in rows] == [*ours, "poison-1"], "in queue order"
    first, broker = rows[0], rows[2]
    assert first["reason"] == "schema-violation"
    assert first["routing_key"] == ROUTE
    assert first["attempts"] == 3
    assert first["correlation_id"] == f"corr-{ours[0]}"
    assert 2 * 86_400 - 60 < first["age_seconds"] < 2 * 86_400 + 60
    assert broker["reason"] == "delivery_limit"
    assert broker["routing_key"] == "poison.cmd"
    assert broker["attempts"] == 1  # x-death count: dead-lettered once
    assert broker["correlation_id"] == "corr-poison"
    assert 0 <= broker["age_seconds"] < 60

    table = await cli(ns.prefix, "list")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    assert header.split() == ["ID", "REASON", "ROUTING", "KEY", "ATTEMPTS", "AGE", "CORRELATION", "ID"]
    assert lines[0].split()[:5] == [ours[0], "schema-violation", ROUTE, "3", "2d00h"]
    assert "3 dead letters" in table.stderr

    assert [m.message_id for m in await take_all(ns.dlq)] == [*ours, "poison-1"], "listing changed nothing"


async def test_show_prints_headers_properties_and_body(ns: Namespace) -> None:
    """`dlq show ID` prints the reason, detail, headers and the JSON body; an unknown id exits 1."""
    [mid] = await dead_letter(ns, 1, reason="schema-violation", body={"nom": "x"})
    shown = await cli(ns.prefix, "show", mid)
    assert shown.returncode == 0, shown.stderr
    assert f"id:             {mid}" in shown.stdout
    assert "reason:         schema-violation" in shown.stdout
    assert "detail:         detail of schema-violation" in shown.stdout
    assert 'x-custom: "kept"' in shown.stdout
    assert '"nom": "x"' in shown.stdout

    as_json = await cli(ns.prefix, "show", mid, "--json")
    detail = orjson.loads(as_json.stdout)
    assert detail["body"] == {"nom": "x"}
    assert detail["headers"]["x-s2s-reason"] == "schema-violation"
    assert detail["properties"]["correlation_id"] == f"corr-{mid}"

    missing = await cli(ns.prefix, "show", "no-such-id")
    assert missing.returncode == 1
    assert "no dead letter with id 'no-such-id'" in missing.stderr
    assert await queue_depth(ns.dlq) == 1


async def test_a_message_without_ids_has_a_stable_content_id_and_replays_with_a_derived_key(ns: Namespace) -> None:
    """No message_id, no idempotency key: the id is a hash of body and headers, the same on every listing; a replay
    gives the command a key derived from that id (said in the output) instead of a random one."""
    anon = Outgoing(ROUTE, b'{"name": "anon"}', headers={"x-s2s-reason": "missing-idempotency-key"}, want_reply=False)
    await pika_send(ns.topology.dlx_name, [anon])  # pika, unlike aio-pika, sends no invented message_id
    first = orjson.loads((await cli(ns.prefix, "list", "--json")).stdout)
    second = orjson.loads((await cli(ns.prefix, "list", "--json")).stdout)
    content_id = first[0]["id"]
    assert content_id.startswith("sha-")
    assert content_id == second[0]["id"], "x-delivery-count changes between listings; the id does not"
    assert (await cli(ns.prefix, "show", content_id)).returncode == 0

    done = await cli(ns.prefix, "replay")
    assert done.returncode == 0, done.stderr
    key = edited_key(content_id, b'{"name": "anon"}')
    assert f"NEW idempotency key {key}" in done.stdout
    [replayed] = await take_all(ns.topology.command_queue_name("service-a"))
    assert replayed.message_id == key
    assert replayed.headers["idempotency-key"] == key
    assert replayed.headers["x-s2s-replay-of"] == content_id


# replay -------------------------------------------------------------------------------------------------
async def test_replay_with_filter_moves_matches_and_keeps_the_rest_in_order(ns: Namespace) -> None:
    """Replay by reason: matches go to the commands exchange with the original routing key, properties and headers
    plus replay markers and without death headers; the others stay in the DLQ in their original order."""
    a = await dead_letter(ns, 3, reason="retries-exhausted", id_prefix="a")
    b = await dead_letter(ns, 2, reason="schema-violation", id_prefix="b")
    c = await dead_letter(ns, 3, reason="retries-exhausted", id_prefix="c")
    d = await dead_letter(ns, 2, reason="schema-violation", routing_key="service-b.get-resource", id_prefix="d")

    done = await cli(ns.prefix, "replay", "--filter", "reason=retries-exhausted", "--json")
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert (report["replayed"], report["skipped"], report["scanned"]) == (6, 4, 10)

    replayed = await take_all(ns.topology.command_queue_name("service-a"))
    assert [m.message_id for m in replayed] == a + c
    m = replayed[0]
    assert m.routing_key == ROUTE
    assert m.correlation_id == f"corr-{a[0]}"
    assert m.content_type == "application/json"
    assert m.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert m.headers["x-custom"] == "kept"
    assert m.headers["traceparent"].startswith("00-0af7651916cd43dd8448eb211c80319c")
    assert m.headers["x-s2s-replay-count"] == 1
    assert abs(m.headers["x-s2s-replayed-at"] - time.time() * 1000) < 60_000
    for gone in ("x-s2s-reason", "x-s2s-detail", "x-s2s-attempt", "x-s2s-dead-lettered-at", "x-s2s-routing-key"):
        assert gone not in m.headers
    assert m.headers["x-delivery-count"] == 0, "the DLQ's count was dropped; this is the command queue's own"
    left = [m.message_id for m in await take_all(ns.dlq)]
    assert left == b + d, f"the rest, in order: {left} {b + d}"


async def test_replay_by_routing_key_pattern_and_limit(ns: Namespace) -> None:
    """--filter routing-key=service-b.* --limit 2 replays the first two matches only; counts add up."""
    a = await dead_letter(ns, 2, id_prefix="a")
    b = await dead_letter(ns, 5, routing_key="service-b.get-resource", id_prefix="b")
    done = await cli(ns.prefix, "replay", "-f", "routing-key=service-b.*", "--limit", "2")
    assert done.returncode == 0, done.stderr
    assert "replayed 2 of 7 scanned; 5 left in the DLQ" in done.stdout
    assert [m.message_id for m in await take_all(ns.topology.command_queue_name("service-b"))] == b[:2]
    assert await queue_depth(ns.topology.command_queue_name("service-a")) == 0
    assert [m.message_id for m in await take_all(ns.dlq)] == a + b[2:]


async def test_replay_with_a_bad_filter_or_edit_is_refused(ns: Namespace) -> None:
    """A filter key we do not know, a body that is not JSON, or an edit without one pinned id: exit 2 or 1."""
    await dead_letter(ns, 2)
    bad_key = await cli(ns.prefix, "replay", "--filter", "colour=red")
    assert bad_key.returncode == 2
    assert "KEY one of id, reason, routing-key, correlation-id" in bad_key.stderr
    bad_json = await cli(ns.prefix, "replay", "--filter", "id=x", "--set-body", "{nope")
    assert bad_json.returncode == 2
    assert "not JSON" in bad_json.stderr
    unpinned = await cli(ns.prefix, "replay", "--filter", "reason=*", "--set-body", "{}")
    assert unpinned.returncode == 1
    assert "filter id=ID" in unpinned.stderr
    assert await queue_depth(ns.dlq) == 2
    assert await commands_depth(ns) == 0


async def test_replay_library_limit_counts_add_up(ns: Namespace) -> None:
    """Replays with --limit, one after another, move exactly what they report; nothing lost or doubled."""
    ids = await dead_letter(ns, 25)
    moved = []
    async with DeadLetterQueue(RABBITMQ_URL, ns.prefix) as dlq:
        for limit in (7, 7, 7, 7):
            report = await dlq.replay(Selection(), limit=limit, batch=3)
            moved += [r.id for r in report.replayed]
            assert await dlq.depth() + len(moved) == 25
    assert moved == ids
    assert [m.message_id for m in await take_all(ns.topology.command_queue_name("service-a"))] == ids


async def test_ctrl_c_mid_replay_loses_and_duplicates_nothing(ns: Namespace) -> None:
    """SIGINT during a long replay: exit 130 after the batch in hand; DLQ + commands == sent, no id in both,
    the DLQ keeps its order."""
    sent = await dead_letter(ns, 2000)
    proc = start_cli(ns.prefix, "replay", "--batch", "5", "--json")
    await wait_for(lambda: _commands_at_least(ns, 50), timeout=30, interval=0.01)
    proc.send_signal(signal.SIGINT)
    out, err = await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == 130, err
    report = orjson.loads(out)
    assert report["interrupted"] is True
    assert 0 < report["replayed"] < 2000

    replayed = [m.message_id for m in await take_all(ns.topology.command_queue_name("service-a"))]
    left = [m.message_id for m in await take_all(ns.dlq)]
    print(f"\nreplayed={len(replayed)} left={len(left)}")
    assert len(replayed) == report["replayed"]
    assert replayed + left == sent, "each message in exactly one place, both in the original order"


async def test_sigkill_mid_replay_loses_nothing_and_duplicates_at_most_one_batch(ns: Namespace) -> None:
    """SIGKILL during a replay: every message is somewhere; a copy in both places only within the batch in hand,
    with the same idempotency key (the daemon dedupes it); the DLQ keeps its order."""
    sent = await dead_letter(ns, 2000)
    batch = 5
    proc = start_cli(ns.prefix, "replay", "--batch", str(batch))
    await wait_for(lambda: _commands_at_least(ns, 200), timeout=30, interval=0.01)
    proc.kill()
    await asyncio.to_thread(proc.communicate, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    await wait_for(lambda: _depth_is_total(ns, 2000, batch), timeout=10)

    replayed = [m.message_id for m in await take_all(ns.topology.command_queue_name("service-a"))]
    left = [m.message_id for m in await take_all(ns.dlq)]
    both = set(replayed) & set(left)
    print(f"\nreplayed={len(replayed)} left={len(left)} in_both={len(both)}")
    assert set(replayed) | set(left) == set(sent), "0 lost"
    assert len(replayed) == len(set(replayed))
    assert len(both) <= batch
    assert replayed == sent[: len(replayed)]
    assert left == sent[len(replayed) - len(both) :], "the DLQ order is unchanged"


async def test_replay_through_a_running_daemon_applies_once(
    ns: Namespace, make_settings, demo: DemoServices, run_id: str
) -> None:
    """Replaying a dead letter a daemon can now handle: one downstream effect, a reply; a second copy of the same
    command replayed later is deduplicated by its idempotency key."""
    [mid] = await dead_letter(ns, 1, id_prefix="ok")
    [dup] = await dead_letter(ns, 1, id_prefix="ok")
    async with Daemon(make_settings()) as daemon:
        # make the second dead letter a copy of the first command (same message id, same body)
        first = await cli(ns.prefix, "replay", "--filter", f"id={mid}")
        assert first.returncode == 0, first.stderr
        await wait_for(lambda: demo.a.effects == 1, timeout=15)
        await _rewrite_id(ns, dup, mid, body={"name": mid[:12]})
        second = await cli(ns.prefix, "replay")
        assert second.returncode == 0, second.stderr
        await wait_for(lambda: _dedupe_done(daemon) >= 1, timeout=15)
    assert demo.a.effects == 1
    assert demo.a.calls_by_key[mid] == 1
    assert await queue_depth(ns.dlq) == 0


async def test_edited_replay_gets_a_new_idempotency_key_and_succeeds(
    ns: Namespace, make_settings, demo: DemoServices
) -> None:
    """A command dead-lettered for its schema is fixed with --set-body: the copy carries a new, derived key
    (the output says so) and the daemon handles it."""
    async with Daemon(make_settings()) as daemon:
        bad = Outgoing(ROUTE, b'{"nom": "typo"}', message_id="k-typo", correlation_id="corr-typo", want_reply=False)
        await pika_send(daemon.topology.commands_exchange_name, [bad])
        await wait_for(lambda: _depth_is(ns.dlq, 1), timeout=10)
        listed = orjson.loads((await cli(ns.prefix, "list", "--json")).stdout)
        assert listed[0]["reason"] == "schema-violation"

        fixed = b'{"name": "typo"}'
        done = await cli(ns.prefix, "replay", "--filter", "id=k-typo", "--set-body", fixed.decode())
        assert done.returncode == 0, done.stderr
        new_key = edited_key("k-typo", fixed)
        assert f"NEW idempotency key {new_key}" in done.stdout
        await wait_for(lambda: demo.a.effects == 1, timeout=15)
    assert list(demo.a.calls_by_key) == [new_key]
    assert await queue_depth(ns.dlq) == 0


# purge --------------------------------------------------------------------------------------------------
async def test_purge_older_than_deletes_only_old_dead_letters(ns: Namespace) -> None:
    """--older-than 7d removes the 10-day-old ones only; --dry-run counts without deleting; order is kept."""
    old = await dead_letter(ns, 3, age_ms=10 * DAY_MS, id_prefix="old")
    young = await dead_letter(ns, 2, age_ms=2 * DAY_MS, id_prefix="young")
    older = await dead_letter(ns, 1, age_ms=30 * DAY_MS, id_prefix="older")

    dry = await cli(ns.prefix, "purge", "--older-than", "7d", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would purge 4 of 6 scanned; 2 kept" in dry.stdout
    assert await queue_depth(ns.dlq) == 6

    bad = await cli(ns.prefix, "purge", "--older-than", "seven days")
    assert bad.returncode == 2

    done = await cli(ns.prefix, "purge", "--older-than", "1w", "--json")
    assert done.returncode == 0, done.stderr
    assert orjson.loads(done.stdout)["purged"] == 4
    assert [m.message_id for m in await take_all(ns.dlq)] == young
    assert len(old) + len(older) == 4


async def test_missing_dlq_is_a_clear_error(run_id: str) -> None:
    """A prefix without a DLQ (typo, daemon never ran) says so instead of a traceback."""
    result = await cli(run_id, "list")
    assert result.returncode == 1
    assert f"queue '{run_id}.dlq' does not exist" in result.stderr


# helpers ------------------------------------------------------------------------------------------------
async def _broker_dead_letter(ns: Namespace, message_id: str, routing_key: str) -> None:
    """A dead letter made by RabbitMQ: a quorum queue with delivery limit 1 bound to the commands exchange."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        name = f"{ns.prefix}.poison"
        queue = await channel.declare_queue(
            name,
            durable=True,
            arguments={"x-queue-type": "quorum", "x-delivery-limit": 1, "x-dead-letter-exchange": ns.topology.dlx_name},
        )
        try:
            await queue.bind(ns.topology.commands_exchange_name, routing_key="poison.#")
            commands = await channel.get_exchange(ns.topology.commands_exchange_name)
            await commands.publish(
                aio_pika.Message(b'{"name": "poison"}', message_id=message_id, correlation_id="corr-poison"),
                routing_key=routing_key,
            )
            for _ in range(2):
                message = await wait_for(lambda: queue.get(no_ack=False, fail=False), timeout=5)
                await message.nack(requeue=True)
        finally:
            await channel.queue_delete(name)


def _dedupe_done(daemon: Daemon) -> float:
    labels = {"downstream": "service-a", "state": "done"}
    return daemon.metrics.registry.get_sample_value("s2s_dedupe_hits_total", labels) or 0.0


async def _depth_is(queue: str, n: int) -> bool:
    return await queue_depth(queue) == n


async def _commands_at_least(ns: Namespace, n: int) -> bool:
    return await queue_depth(ns.topology.command_queue_name("service-a")) >= n


async def _depth_is_total(ns: Namespace, total: int, slack: int) -> bool:
    """The killed connection's unacked messages are back once DLQ + commands covers everything."""
    got = await queue_depth(ns.dlq) + await commands_depth(ns)
    return total <= got <= total + slack


async def _rewrite_id(ns: Namespace, old: str, new: str, body: Any) -> None:
    """Replace dead letter ``old`` by a copy with message id ``new`` (a producer's duplicate, dead-lettered)."""
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.get_queue(ns.dlq)
        message = await queue.get(no_ack=False)
        assert message.message_id == old
        dlx = await channel.get_exchange(ns.topology.dlx_name)
        await dlx.publish(
            aio_pika.Message(orjson.dumps(body), message_id=new, headers=dict(message.headers)), routing_key=ROUTE
        )
        await message.ack()
