"""The scenarios. Each builds its own private stack, publishes its commands, injects its fault at a
point of progress (a fraction of the commands answered, so the fault lands mid-run at any speed), waits for
quiescence and counts. ``full`` sizes run in ``make chaos``; ``short`` ones in ``make test``."""

from __future__ import annotations

import os
import random
import shutil
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import orjson

from tests.harness.chaos.counters import FaultWindow, latencies, percentile, sum_counters
from tests.harness.chaos.producer import Command, good_commands
from tests.harness.chaos.run import Load, ReadinessProbe, ScenarioResult, wait_until
from tests.harness.chaos.services import PrivateRabbit
from tests.harness.chaos.stack import Stack, StackOptions

__all__ = ["SCENARIOS", "Scenario", "run_scenario"]

Params = dict[str, Any]
StackFactory = Callable[..., Stack]  # (StackOptions | None) -> Stack, not started


@dataclass(frozen=True)
class Scenario:
    name: str
    title: str
    fn: Callable[[StackFactory, Params, ScenarioResult], None]
    full: Params
    short: Params


def _quiesce_and_count(load: Load, stack: Stack, p: Params, result: ScenarioResult) -> None:
    waited = load.quiesce(timeout=p["quiesce_s"], stall=p["stall_s"], settle=p["settle_s"])
    result.counters = load.finish()
    outbox = stack.outbox_counts()
    queues = stack.queues()
    left = {name: q["messages"] for name, q in queues.items() if q["messages"] and name != stack.reply_queue}
    result.details.update(load.details())
    result.details.update(waited)
    result.details["outbox"] = outbox
    result.details["messages_left_in_queues"] = left
    result.checks["outbox drained (nothing pending, publishing or dead)"] = (
        outbox["pending"] + outbox["publishing"] + outbox["dead"] == 0
    )
    latency = latencies(load.journal)
    result.details["latency_s"] = {
        "p50": _round(percentile(latency, 50)),
        "p99": _round(percentile(latency, 99)),
        "max": _round(max(latency, default=None)),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


# 1 ---------------------------------------------------------------------------------------------------
def connections_closed(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    with make_stack() as stack:
        result.details["stack"] = stack.timings
        load = Load(stack, good_commands(p["commands"], "s1"), p["rate"]).start()
        closed = []
        for fraction in p["at"]:
            load.wait_answered(fraction, p["trigger_s"])
            with load.fault("close_all_connections"):
                out = stack.close_all_connections()
            closed.append(out)
        result.details["connections_closed"] = closed
        result.checks[f"{len(p['at'])} force-closes, each closing connections"] = len(closed) == len(p["at"]) and all(
            n > 0 for n in closed
        )
        _quiesce_and_count(load, stack, p, result)


# 2 ---------------------------------------------------------------------------------------------------
def broker_paused(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    with make_stack() as stack:
        result.details["stack"] = stack.timings
        load = Load(stack, good_commands(p["commands"], "s2"), p["rate"]).start()
        load.wait_answered(p["at"], p["trigger_s"])
        answered_before = load.journal.answered
        with load.fault("SIGSTOP beam.smp"):
            try:
                state = stack.rabbit.pause()
                time.sleep(p["pause_s"])
                # the harness's observers may still drain what the broker pushed before it stopped
                answered_during = load.journal.answered - answered_before
            finally:
                stack.rabbit.resume()
        result.details["answered_while_paused"] = answered_during
        result.checks["beam.smp was stopped (state T)"] = state == "T"
        _quiesce_and_count(load, stack, p, result)


# 3 ---------------------------------------------------------------------------------------------------
def broker_restarted(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    with make_stack() as stack:
        result.details["stack"] = stack.timings
        probe = ReadinessProbe(stack.daemons)
        probe.start()
        try:
            load = Load(stack, good_commands(p["commands"], "s3"), p["rate"]).start()
            load.wait_answered(p["at"], p["trigger_s"])
            with load.fault("stop_app/start_app"):
                stack.rabbit.stop_app()
                stopped = time.monotonic()
                time.sleep(p["outage_s"])
                restarting = time.monotonic()
                stack.rabbit.start_app()
            started = time.monotonic()
            ready_back = wait_until(lambda: all(d.readyz() == 200 for d in stack.daemons), p["recover_s"], 0.25)
            ready_after = round(time.monotonic() - started, 2)
            command_queues = [stack.command_queue(ds) for ds in ("service-a", "service-b")]
            consumers_back = wait_until(
                lambda: all(stack.queues().get(q, {}).get("consumers", 0) >= 1 for q in command_queues),
                p["recover_s"],
                1.0,
            )
            consumers_after = round(time.monotonic() - started, 2)
            _quiesce_and_count(load, stack, p, result)
        finally:
            probe.stop()
        # readiness must fail within a second or two of the stop and stay failed until the node is back
        during = probe.between(stopped + p["detect_s"], restarting)
        result.details["readiness"] = {
            "samples_during_outage": len(during),
            "ready_samples_during_outage": sum(1 for code in during if code == 200),
            "ready_again_after_start_app_s": ready_after,
        }
        result.details["consumers_back_after_start_app_s"] = consumers_after
        result.checks["readiness failed during the outage"] = bool(during) and all(code != 200 for code in during)
        result.checks["readiness back after start_app"] = ready_back
        result.checks["consumers re-created on every command queue"] = consumers_back


# 4 ---------------------------------------------------------------------------------------------------
def redis_faults(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    with make_stack() as stack:
        result.details["stack"] = stack.timings
        load = Load(stack, good_commands(p["commands"], "s4"), p["rate"]).start()
        load.wait_answered(p["pause_at"], p["trigger_s"])
        with load.fault("CLIENT PAUSE"):
            stack.redis.pause(p["pause_s"])
            time.sleep(p["pause_s"])
        load.wait_answered(p["kill_at"], p["trigger_s"])
        with load.fault("kill + restart empty"):
            stack.redis.kill()
            time.sleep(p["down_s"])
            stack.redis.restart_empty()
        _quiesce_and_count(load, stack, p, result)


# 5 ---------------------------------------------------------------------------------------------------
def mongo_killed(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    with make_stack() as stack:
        result.details["stack"] = stack.timings
        load = Load(stack, good_commands(p["commands"], "s5"), p["rate"]).start()
        load.wait_answered(p["at"], p["trigger_s"])
        with load.fault("SIGKILL nx-27017 + restart"):
            stack.mongo.kill()
            time.sleep(p["down_s"])
            stack.mongo.restart()
        _quiesce_and_count(load, stack, p, result)
        # every succeeded reply is backed by a durable outbox document (no ack without the write)
        outbox = result.details["outbox"]
        assert result.counters is not None
        result.checks["an outbox document for every succeeded reply"] = outbox["sent"] >= result.counters.succeeded


# 6 ---------------------------------------------------------------------------------------------------
def daemon_sigkilled(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    rng = random.Random(p.get("seed"))
    options = StackOptions(replicas=p["replicas"], config=p.get("config", {}))
    with make_stack(options) as stack:
        result.details["stack"] = stack.timings
        load = Load(stack, good_commands(p["commands"], "s6"), p["rate"]).start()
        kills: list[dict[str, Any]] = []
        for fraction in sorted(rng.uniform(*p["between"]) for _ in range(p["kills"])):
            load.wait_answered(fraction, p["trigger_s"])
            victim = rng.choice(stack.daemons)
            with load.fault(f"SIGKILL {victim.name}"):
                victim.kill()
            kills.append({"replica": victim.name, "at_s": load.since_start(), "answered": load.journal.answered})
            # as an orchestrator restarts a pod: a new process (new owner id) in its place, not waited for
            stack.daemons[stack.daemons.index(victim)] = stack.new_replica().start()
        result.details["kills"] = kills
        outstanding = [k for k in kills if k["answered"] < load.total]
        result.checks[f"{p['kills']} replicas SIGKILLed while commands were outstanding"] = (
            len(outstanding) == p["kills"]
        )
        _quiesce_and_count(load, stack, p, result)
        result.checks["all replicas ready at the end"] = all(d.readyz() == 200 for d in stack.daemons)


# 7 ---------------------------------------------------------------------------------------------------
def downstream_faults(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    with make_stack(StackOptions(proxy=True)) as stack:
        result.details["stack"] = stack.timings
        assert stack.proxy is not None
        proxy = stack.proxy
        load = Load(stack, good_commands(p["commands"], "s7"), p["rate"]).start()
        phases = [
            ("latency spike", {"latency_ms": p["latency_ms"], "jitter_ms": p["jitter_ms"]}, p["latency_s"]),
            ("connection resets", {"reset_probability": p["reset_probability"]}, p["resets_s"]),
            ("blackhole", {"blackhole": True}, p["blackhole_s"]),
        ]
        effects: dict[str, dict[str, int]] = {}
        for (name, knobs, seconds), fraction in zip(phases, p["at"], strict=True):
            load.wait_answered(fraction, p["trigger_s"])
            before = dict(proxy.proxy.stats.__dict__)
            with load.fault(name):
                proxy.set(**knobs)
                time.sleep(seconds)
                proxy.set()
            effects[name] = {k: v - before[k] for k, v in proxy.proxy.stats.__dict__.items()}
        _quiesce_and_count(load, stack, p, result)
        result.details["proxy_during_phase"] = effects
        result.checks["each proxy fault hit traffic"] = (
            effects["latency spike"]["delayed_chunks"] > 0
            and effects["connection resets"]["resets_before"] + effects["connection resets"]["resets_after"] > 0
            and effects["blackhole"]["swallowed_chunks"] > 0
        )


# 9 ---------------------------------------------------------------------------------------------------
def low_traffic_outage(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    """A downstream deploy at low traffic, with the default retry and breaker policy: service-a answers 503, then
    refuses connections (through the proxy, which stops listening), then is healthy again. Every command must
    succeed, none dead-lettered, and none may cost more than ``max_calls`` downstream calls."""
    with make_stack(StackOptions(proxy=True)) as stack:
        result.details["stack"] = stack.timings
        assert stack.proxy is not None
        proxy = stack.proxy
        load = Load(stack, good_commands(p["commands"], "s9"), p["rate"]).start()
        load.wait_answered(p["at"], p["trigger_s"])
        sent_before = load.journal.answered
        with load.fault(f"503 for {p['error_s']:g}s, then connections refused for {p['refused_s']:g}s"):
            stack.demo.faults("a", status=503)
            time.sleep(p["error_s"])
            stack.demo.faults("a")
            proxy.refuse()
            try:
                time.sleep(p["refused_s"])
            finally:
                proxy.accept()
        _quiesce_and_count(load, stack, p, result)
        assert result.counters is not None
        calls = stack.demo.stats("a")["calls_by_key"]
        attempts = [r.attempts for rs in load.journal.replies.values() for r in rs[:1] if r.attempts is not None]
        metrics = stack.daemons[0].metrics()
        transitions = {
            k.partition("{")[2].rstrip("}"): int(v)
            for k, v in metrics.items()
            if k.startswith("s2s_breaker_transitions_total{") and 'downstream="service-a"' in k
        }
        opened = sum(v for k, v in transitions.items() if 'to="open"' in k)
        result.details["answered_before_the_outage"] = sent_before
        result.details["calls_per_command"] = {
            "max_attempts_in_replies": max(attempts, default=0),
            "max_calls_reaching_service_a": max(calls.values(), default=0),
            "mean_attempts": round(sum(attempts) / len(attempts), 2) if attempts else None,
        }
        result.details["breaker_transitions"] = transitions
        result.checks["the outage met traffic (commands sent during it)"] = sent_before < result.counters.sent
        result.checks["0 failed"] = result.counters.failed == 0
        result.checks["0 dead-lettered"] = result.counters.dead_lettered == 0
        result.checks[f"all {result.counters.sent} commands succeeded"] = (
            result.counters.succeeded == result.counters.sent
        )
        result.checks[f"at most {p['max_calls']} downstream calls per command"] = (
            len(attempts) == result.counters.replied
            and max(attempts, default=0) <= p["max_calls"]
            and max(calls.values(), default=0) <= p["max_calls"]
        )
        result.checks["the breaker opened (the consumer paused rather than burning attempts)"] = opened > 0


# 8 ---------------------------------------------------------------------------------------------------
EXPECTED_REASON = {
    "invalid-json": "invalid-json",
    "schema-violation": "schema-violation",
    "missing-key": "missing-idempotency-key",
    "too-large": "too-large",
    "unknown-route": "unknown-route",
    "unroutable": "unroutable",
    "always-500": "retries-exhausted",
}


# refused by the broker itself (max_message_size in s2s_daemon/config/rabbitmq.conf): never reaches the daemon
REFUSED_AT_PUBLISH = "over-broker-limit"


def poison_commands(mix: dict[str, int], big_bytes: int, huge_bytes: int = 0) -> list[Command]:
    """``too-large``: ``big_bytes`` bodies (over the daemon's limit, under the broker's); ``over-broker-limit``:
    ``huge_bytes`` bodies, over the broker's max_message_size."""
    out = []
    for kind, n in mix.items():
        for i in range(n):
            cid = f"bad-{kind}-{i:04d}"
            body, rk = orjson.dumps({"name": cid}), "service-a.create-resource"
            key: str | None = cid
            if kind == "invalid-json":
                body = b'{"name": "unterminated'
            elif kind == "schema-violation":
                body = orjson.dumps({"name": 123, "extra": True})
            elif kind == "missing-key":
                key = None
            elif kind == "too-large":
                body = orjson.dumps({"name": "x" * big_bytes})
            elif kind == REFUSED_AT_PUBLISH:
                body = orjson.dumps({"name": "x" * huge_bytes})
            elif kind == "unknown-route":
                rk = "service-a.no-such-action"
            elif kind == "unroutable":
                rk = "nowhere.at-all"
            elif kind == "always-500":
                rk = "failing.always-500"
            out.append(Command(cid, rk, body, kind=kind, key=key))
    return out


def poison_mix(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    """Clean and poisoned phases alternate (``rounds`` of each, after a warm-up), so load from outside the
    scenario weighs on both latency samples alike; the bad commands are spread over the poisoned phases.
    Bodies over the broker's max_message_size must be refused at publish (the producer's channel closed with
    406, its confirm failed) and reach no queue; every other bad command must reach the DLQ with its reason.

    The bodies over the broker's limit go in a phase of their own after the rounds, not into the poisoned phases
    whose latency is compared: they never reach the daemon, yet each stalls the broker for every connection
    while it reads the 20 MB it then refuses, and the harness process while pika writes them (measured alone,
    without a daemon: 12-153 ms on the broker, 11-133 ms in the harness). In the poisoned phases the slowest
    good commands were exactly those sent just after such a publish, which made the check measure the broker's
    and the harness's stall instead of the daemon's isolation of good traffic."""
    failing = {"retry": {"max_attempts": 3, "initial_delay": 0.05, "max_delay": 0.2}}
    options = StackOptions(failing=True, downstream_config={"failing": failing})
    rng = random.Random(p.get("seed"))
    rounds, per_round = p["rounds"], p["good"] // p["rounds"]
    bad_all = _shuffled(poison_commands(p["mix"], p["big_bytes"], p["huge_bytes"]), rng)
    to_daemon = [command for command in bad_all if command.kind != REFUSED_AT_PUBLISH]
    over_limit = [command for command in bad_all if command.kind == REFUSED_AT_PUBLISH]
    with make_stack(options) as stack:
        result.details["stack"] = stack.timings
        _run_phase(stack, good_commands(p["warmup"], "warm"), [], p)
        clean: list[Load] = []
        poison: list[Load] = []
        for r in range(rounds):
            clean.append(_run_phase(stack, good_commands(per_round, f"clean{r}"), [], p))
            poison.append(_run_phase(stack, good_commands(per_round, f"good{r}"), to_daemon[r::rounds], p))
        refusals = _run_phase(stack, good_commands(p["warmup"], "refusals"), over_limit, p)
        judged = [*poison, refusals]
        result.counters = sum_counters([load.counters for load in judged if load.counters is not None])
        p99_clean = percentile([x for load in clean for x in latencies(load.journal)], 99)
        p99_poison = percentile([x for load in poison for x in latencies(load.journal)], 99)
        records = {cid: r for load in judged for cid, r in load.journal.records.items()}
        dead = {cid: ds for load in judged for cid, ds in load.journal.dead.items()}
        replies = {cid: rs for load in judged for cid, rs in load.journal.replies.items()}
        bad = {cid: r.command.kind for cid, r in records.items() if r.command.kind not in ("good", REFUSED_AT_PUBLISH)}
        refused = {cid: r for cid, r in records.items() if r.command.kind == REFUSED_AT_PUBLISH}
        refused_ok = {
            cid for cid, r in refused.items()
            if r.confirmed_at is None and r.error and "larger than configured max size" in r.error
            and cid not in dead and cid not in replies
        }  # fmt: skip
        right_reason = {
            cid for cid, kind in bad.items() if any(d.reason == EXPECTED_REASON[kind] for d in dead.get(cid, []))
        }
        loops = sum(
            n for ds in dead.values() for d in ds for reason, n in d.deaths.items()
            if reason in ("rejected", "delivery_limit")
        )  # fmt: skip
        errors = sum(
            v for d in stack.daemons for k, v in d.metrics().items()
            if k.startswith("s2s_commands_total{") and 'outcome="error"' in k
        )  # fmt: skip
        good_ok = sum(
            1 for cid, rs in replies.items() if records[cid].command.kind == "good" and rs[0].status == "succeeded"
        )  # fmt: skip
        outbox = stack.outbox_counts()
        result.details.update(poison[-1].details())
        result.details["over_limit_phase_good_p99_s"] = _round(percentile(latencies(refusals.journal), 99))
        result.details.update(
            {
                "rounds": rounds,
                "clean": sum_counters([load.counters for load in clean if load.counters is not None]).as_dict(),
                "bad_by_kind": dict(p["mix"]),
                "bad_missing_or_wrong_reason": sorted(set(bad) - right_reason)[:20],
                "refused_at_publish": {
                    "expected": len(refused),
                    "refused": len(refused_ok),
                    "errors": sorted({r.error or "confirmed" for r in refused.values()})[:3],
                },
                "requeues_by_broker": loops,
                "handler_errors": errors,
                "good_p99_s": {"clean": _round(p99_clean), "poison": _round(p99_poison)},
                "good_p99_s_by_round": [
                    [_round(percentile(latencies(c.journal), 99)), _round(percentile(latencies(q.journal), 99))]
                    for c, q in zip(clean, poison, strict=True)
                ],
                "outbox": outbox,
            }
        )
        result.checks[f"100% of {len(bad)} bad commands in the DLQ with their reason"] = len(right_reason) == len(bad)
        result.checks[f"{len(refused)} bodies over the broker's max_message_size refused at publish (406)"] = len(
            refused_ok
        ) == len(refused)
        result.checks["0 requeue loops (no x-death rejected/delivery_limit, no handler errors)"] = (
            loops == 0 and errors == 0
        )
        good_sent = per_round * rounds + p["warmup"]
        result.checks[f"all {good_sent} good commands succeeded"] = good_ok == good_sent
        within = p99_clean is not None and p99_poison is not None and p99_poison <= 2 * p99_clean
        if p["check_p99"]:
            result.checks["good p99 within 2x of the clean phases"] = within
        else:  # a p99 of a few hundred samples on a shared box is noise: reported, not judged
            result.details["good_p99_within_2x"] = within
        result.checks["outbox drained (nothing pending, publishing or dead)"] = (
            outbox["pending"] + outbox["publishing"] + outbox["dead"] == 0
        )


def _run_phase(stack: Stack, commands: list[Command], side: list[Command], p: Params) -> Load:
    stack.demo.reset("a")  # effects are counted per phase
    load = Load(stack, commands, p["rate"], side).start()
    load.quiesce(timeout=p["quiesce_s"], stall=p["stall_s"], settle=p["settle_s"])
    load.counters = load.finish()
    return load


def _shuffled(commands: list[Command], rng: random.Random) -> list[Command]:
    out = list(commands)
    rng.shuffle(out)
    return out


# 9 ---------------------------------------------------------------------------------------------------
def cluster_node_lost(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    """A 3-node cluster, the command queues replicated on all three. First the node the daemon's consumers are
    connected to is stopped, then (once it is back and the queues have all members online again, or a second
    stop would take the quorum away) the node leading service-a's command queue. Each fault window is the
    shutdown's start, so ``recover s`` counts from the node's loss; the node is started again afterwards."""
    options = StackOptions(cluster=3, config=p.get("config", {}))
    with make_stack(options) as stack:
        cluster = stack.cluster
        assert cluster is not None
        result.details["stack"] = stack.timings
        command_queues = [stack.command_queue(ds) for ds in ("service-a", "service-b")]
        members = {q: len(v["members"] or []) for q, v in cluster.quorum_queues(stack.vhost).items()}
        result.details["replicas_per_queue"] = {q: members.get(q) for q in command_queues}
        result.checks["command queues replicated on all 3 nodes"] = all(members.get(q) == 3 for q in command_queues)
        load = Load(stack, good_commands(p["commands"], "s9"), p["rate"]).start()
        steps: list[dict[str, Any]] = []

        def consumers_back(lost: str) -> bool:
            queues = stack.queues()
            node = cluster.node_of_connection(stack.vhost, "consumers")
            on_other = node is not None and node.node != lost
            return on_other and all(queues.get(q, {}).get("consumers", 0) >= 1 for q in command_queues)

        def all_online() -> bool:
            status = cluster.quorum_queues(stack.vhost)
            return all(len(status.get(q, {}).get("online") or []) == 3 for q in command_queues)

        for fraction, which in zip(p["at"], ("daemon's node", "leader of the command queue"), strict=True):
            load.wait_answered(fraction, p["trigger_s"])
            wait_until(all_online, p["recover_s"], 0.5)
            if which == "daemon's node":
                victim = cluster.node_of_connection(stack.vhost, "consumers")
            else:
                victim = cluster.node_named(cluster.quorum_queues(stack.vhost)[command_queues[0]]["leader"])
            assert victim is not None, "no consumer connection found"
            step: dict[str, Any] = {"stopped": which, "node": victim.node, "answered": load.journal.answered}
            stopped = time.monotonic()
            cluster.stop_node(victim)  # a graceful shutdown: clients are disconnected early, the node exits later
            # the window is the shutdown's start, so ``recover s`` counts from the moment the node began to go
            load.faults.append(FaultWindow(f"stop {which}", stopped, stopped))
            step["shutdown_s"] = round(time.monotonic() - stopped, 2)
            step["consumers_back"] = wait_until(partial(consumers_back, victim.node), p["recover_s"], 0.25)
            step["consumers_back_s"] = round(time.monotonic() - stopped, 2)
            leader = cluster.quorum_queues(stack.vhost)[command_queues[0]]["leader"]
            step["leader_after"] = leader
            time.sleep(max(0.0, p["down_s"] - (time.monotonic() - stopped)))
            began = time.monotonic()
            cluster.start_node(victim)
            step["node_restart_s"] = round(time.monotonic() - began, 2)
            steps.append(step)
        result.details["steps"] = steps
        result.checks["daemon's consumers back on another node after each stop"] = len(steps) == 2 and all(
            s["consumers_back"] for s in steps
        )
        result.checks["command queue had a new leader after the leader stopped"] = len(steps) == 2 and steps[1][
            "leader_after"
        ] not in (None, steps[1]["node"])
        outstanding = [s for s in steps if s["answered"] < load.total]
        result.checks["both nodes stopped while commands were outstanding"] = len(outstanding) == 2
        _quiesce_and_count(load, stack, p, result)
        result.checks["all replicas ready at the end"] = all(d.readyz() == 200 for d in stack.daemons)


# 10 --------------------------------------------------------------------------------------------------
def redis_primary_failover(make_stack: StackFactory, p: Params, result: ScenarioResult) -> None:
    """Redis as a primary, a replica and three sentinels; the daemon finds the primary through the sentinels.
    Replication is asynchronous: to make its window visible, the replica is SIGSTOPped and its replication link
    closed ``lag_s`` before the primary is SIGKILLed (and continued right after), so every record written in that
    window (``done`` records, claims) is gone once the sentinels promote the replica. After the failover, copies
    of the commands around the kill are sent again, as a producer retrying would: keys whose ``done`` record was
    lost must be answered by the outbox backstop (``s2s_dedupe_hits_total{state="backstop"}``), never called twice."""
    originals = good_commands(p["commands"], "s10")
    with make_stack(StackOptions(sentinel=True)) as stack:
        sentinels = stack.sentinel
        assert sentinels is not None
        assert sentinels.replica.process is not None
        result.details["stack"] = stack.timings
        load = Load(stack, originals, p["rate"]).start()
        # triggered on the daemon's progress (outbox documents written), not on replies, which can trail it
        target = int(len(originals) * p["at"])
        wait_until(lambda: sum(stack.outbox_counts().values()) >= target, p["trigger_s"], 0.2)
        replica_pid = sentinels.replica.process.pid
        assert replica_pid is not None
        with load.fault("replica lagging, primary SIGKILLed, sentinels fail over"):
            # A stopped replica alone loses nothing: the kernel's socket buffers hold what the primary sends and
            # the replica reads it once continued. Its link is cut too, so the lag window's writes stay behind.
            os.kill(replica_pid, signal.SIGSTOP)
            try:
                cut = sentinels.cut_replication()
                answered_at_lag = load.journal.answered
                time.sleep(p["lag_s"])
                answered_at_kill = load.journal.answered
                # how far the daemon got (outbox documents written), not how far the replies got: under a
                # backlog the replies trail the daemon's work by thousands
                processed = sum(stack.outbox_counts().values())
                sentinels.kill_primary()
            finally:
                os.kill(replica_pid, signal.SIGCONT)
            failover_s = sentinels.wait_failover(p["recover_s"])
        load.quiesce(timeout=p["quiesce_s"], stall=p["stall_s"], settle=p["settle_s"])
        load.finish()
        # the keys the daemon worked on around the kill, again, after the failover, counted with the first phase
        window = originals[max(0, processed - p["copy_window"]) : processed + p["copy_window"]]
        copies = [Command(f"{c.id}-again", c.routing_key, c.body, key=c.key) for c in window]
        again = Load(stack, copies, p["rate"], after=load).start()
        _quiesce_and_count(again, stack, p, result)
        metrics = [d.metrics() for d in stack.daemons]
        by_state = {
            state: int(sum(v for m in metrics for k, v in m.items() if k.startswith("s2s_dedupe_hits_total{")
                           and f'state="{state}"' in k))
            for state in ("done", "backstop", "in-flight")
        }  # fmt: skip
        result.details.update(
            {
                "sentinel_failover_s": failover_s,
                "replication_links_cut": cut,
                "answered_while_replica_lagged": answered_at_kill - answered_at_lag,
                "processed_at_kill": processed,
                "copies_sent_again": len(copies),
                "dedupe_hits_by_state": by_state,
            }
        )
        result.checks["the outbox backstop decided keys whose Redis records were lost"] = by_state["backstop"] > 0
        result.checks["every copy sent again was answered without a call"] = (
            result.counters is not None and result.counters.recalls == 0
        )
        result.checks["all replicas ready at the end"] = all(d.readyz() == 200 for d in stack.daemons)


# registry ----------------------------------------------------------------------------------------------
_WAITS_FULL = {"trigger_s": 600.0, "quiesce_s": 900.0, "stall_s": 180.0, "settle_s": 3.0}
_WAITS_SHORT = {"trigger_s": 60.0, "quiesce_s": 90.0, "stall_s": 30.0, "settle_s": 1.0}
# short runs: leases short enough that a killed replica's claims expire within the test's budget
_SHORT_LEASES = {"idempotency": {"lease_seconds": 3.0}, "outbox": {"lease_seconds": 3.0, "poll_interval": 0.5}}


def _scenario(
    name: str, title: str, fn: Callable[[StackFactory, Params, ScenarioResult], None], full: Params, **short: Any
) -> Scenario:
    """Full-size parameters, and the short version as overrides of them."""
    return Scenario(name, title, fn, {**full, **_WAITS_FULL}, {**full, **_WAITS_SHORT, **short})


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        _scenario(
            "connections",
            "broker connections force-closed 5x",
            connections_closed,
            {"commands": 10_000, "rate": 250, "at": [0.1, 0.25, 0.4, 0.55, 0.7]},
            commands=400,
            rate=80,
        ),
        _scenario(
            "pause",
            "broker paused (SIGSTOP) then resumed",
            broker_paused,
            {"commands": 10_000, "rate": 250, "at": 0.3, "pause_s": 30.0},
            commands=300,
            rate=100,
            pause_s=3.0,
        ),
        _scenario(
            "restart",
            "broker restarted (stop_app/start_app)",
            broker_restarted,
            {"commands": 10_000, "rate": 250, "at": 0.3, "outage_s": 10.0, "detect_s": 2.0, "recover_s": 60.0},
            commands=300,
            rate=100,
            outage_s=4.0,
            detect_s=1.0,
            recover_s=30.0,
        ),
        _scenario(
            "redis",
            "Redis paused (CLIENT PAUSE), later killed and restarted empty",
            redis_faults,
            {"commands": 10_000, "rate": 250, "pause_at": 0.2, "pause_s": 10.0, "kill_at": 0.5, "down_s": 5.0},
            commands=300,
            rate=100,
            pause_s=3.0,
            down_s=2.0,
        ),
        _scenario(
            "mongo",
            "nx-27017 SIGKILLed and restarted on the same file",
            mongo_killed,
            {"commands": 10_000, "rate": 250, "at": 0.3, "down_s": 10.0},
            commands=300,
            rate=100,
            down_s=3.0,
        ),
        _scenario(
            "sigkill",
            "daemon SIGKILLed 3x, 3 replicas",
            daemon_sigkilled,
            {"commands": 10_000, "rate": 250, "replicas": 3, "kills": 3, "between": (0.1, 0.7), "seed": 7},
            commands=500,
            rate=60,
            config=_SHORT_LEASES,
        ),
        _scenario(
            "downstream",
            "downstream latency, resets, blackhole (TCP proxy)",
            downstream_faults,
            {
                "commands": 10_000,
                "rate": 250,
                "at": [0.1, 0.35, 0.6],
                "latency_ms": 800.0,
                "jitter_ms": 400.0,
                "latency_s": 10.0,
                "reset_probability": 0.3,
                "resets_s": 10.0,
                "blackhole_s": 8.0,
            },
            # 800 at 60/s: sending lasts past the blackhole's end (~11.7 s); with 500 it ended at 8.3 s, and when
            # the latency backlog drained early the blackhole started after the last command and met no traffic
            commands=800,
            rate=60,
            latency_s=3.0,
            resets_s=3.0,
            blackhole_s=3.0,
        ),
        _scenario(
            "poison",
            "poison mix into good traffic",
            poison_mix,
            {
                "good": 1000,
                "warmup": 100,
                "rate": 50,
                "seed": 8,
                "big_bytes": 2 * 1024 * 1024,
                "huge_bytes": 20 * 1024 * 1024,
                "check_p99": True,
                "rounds": 4,
                "mix": {
                    "invalid-json": 30,
                    "schema-violation": 30,
                    "missing-key": 30,
                    "too-large": 5,
                    REFUSED_AT_PUBLISH: 5,
                    "unknown-route": 15,
                    "unroutable": 15,
                    "always-500": 20,
                },
            },
            good=200,
            warmup=30,
            check_p99=False,
            rounds=2,
            mix={
                "invalid-json": 5,
                "schema-violation": 5,
                "missing-key": 5,
                "too-large": 1,
                REFUSED_AT_PUBLISH: 1,
                "unknown-route": 3,
                "unroutable": 3,
                "always-500": 5,
            },
        ),
        _scenario(
            "cluster",
            "RabbitMQ 3-node cluster: the daemon's node stopped, later the command queue's leader",
            cluster_node_lost,
            {"commands": 10_000, "rate": 250, "at": [0.25, 0.6], "down_s": 10.0, "recover_s": 90.0},
            # sending must outlast both stops and the restart between them (~15 s of rabbitmqctl on this box)
            commands=900,
            rate=30,
            at=[0.15, 0.4],
            down_s=3.0,
            recover_s=60.0,
        ),
        _scenario(
            "sentinel",
            "Redis primary SIGKILLed behind Sentinel (replica lagging): failover to the replica",
            redis_primary_failover,
            {"commands": 10_000, "rate": 250, "at": 0.4, "lag_s": 2.0, "copy_window": 1000, "recover_s": 60.0},
            # at a rate the daemon keeps up with, so that it writes records during the lag window at any speed
            commands=300,
            rate=30,
            lag_s=1.5,
            copy_window=300,  # every key again
            recover_s=30.0,
        ),
        _scenario(
            "low-traffic",
            "low-traffic outage: 503, then refused connections, default retry policy",
            low_traffic_outage,
            # 2 commands/s for 170 s: ~10 s healthy, 90 s of 503, 30 s refused, ~40 s healthy
            {"commands": 340, "rate": 2, "at": 0.06, "error_s": 90.0, "refused_s": 30.0, "max_calls": 10},
            # the same phases scaled down ~8x (the sending still spans the whole outage)
            commands=60,
            rate=2,
            at=0.08,
            error_s=11.0,
            refused_s=4.0,
        ),
    )
}


def size_of(params: Params) -> dict[str, Any]:
    keys = ("commands", "good", "rate", "replicas", "kills", "pause_s", "outage_s", "down_s", "lag_s", "mix")
    return {k: params[k] for k in keys if k in params}


def run_scenario(
    name: str, base: Path, *, short: bool = False, keep_data: bool = False, rabbit: PrivateRabbit | None = None
) -> ScenarioResult:
    """Run one scenario in ``base`` (its services' files and logs); never raises for a scenario failure.
    ``rabbit``: a running private node to share (a virtual host per scenario) instead of one of its own."""
    scenario = SCENARIOS[name]
    params = scenario.short if short else scenario.full
    result = ScenarioResult(name, scenario.title, size_of(params))
    began = time.monotonic()
    try:
        scenario.fn(lambda options=None: Stack(base, options, rabbit), params, result)
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.details["traceback"] = traceback.format_exc()[-4000:]
    finally:
        result.seconds = time.monotonic() - began
        if not keep_data:
            # the brokers' and stores' data are large and only interesting while running; logs stay
            for mnesia in (base / "rabbitmq").glob("**/mnesia"):
                shutil.rmtree(mnesia, ignore_errors=True)
            for db in (base / "mongo").glob("*.db*"):
                db.unlink(missing_ok=True)
    return result
