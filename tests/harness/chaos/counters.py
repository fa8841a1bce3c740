"""Jepsen-style counters for one scenario, computed from what the harness saw.

Definitions (every count is of distinct command ids unless it says otherwise):

* **attempted**: commands the publisher tried to publish.
* **sent**: publishes the broker confirmed.
* **indeterminate**: publishes that broke off (connection lost, nack) before a confirm; never re-sent.
* **replied**: commands with at least one reply; **succeeded** / **failed** by the first reply's status.
* **dead-lettered**: commands with an entry in the daemon's DLQ.
* **lost**: sent commands with neither a reply nor a DLQ entry after quiescence.
* **recovered**: indeterminate commands that got a reply or a DLQ entry anyway.
* **duplicated replies**: replies beyond the first per command (the daemon re-sends a stored reply to a
  redelivered duplicate; consumers drop it by its message_id).
* **duplicate effects**: the demo service-a's effects minus the distinct command keys of ours that reached it
  (a key the daemon invented or changed counts as a duplicate).
* **re-calls**: downstream calls beyond one per key; the demo absorbed them through the Idempotency-Key
  (retries after a timeout or reset, a call repeated after a crash before the outbox write). Informational.
* **recover s**: the longest time, over the scenario's faults, from the fault's end until the reply rate over a
  1-second window is back to half the rate before the first fault (or, if the backlog ran out first, until the
  last answer).
* **drain s**: from the end of the last fault to the last answer.
"""

from __future__ import annotations

import bisect
import math
from dataclasses import asdict, dataclass
from typing import Any

from tests.harness.chaos.producer import Journal

__all__ = ["Counters", "FaultWindow", "count", "latencies", "percentile", "recovery_seconds", "sum_counters"]


@dataclass(frozen=True, slots=True)
class FaultWindow:
    name: str
    start: float  # time.monotonic()
    end: float


@dataclass(frozen=True, slots=True)
class Counters:
    attempted: int
    sent: int
    indeterminate: int
    replied: int
    succeeded: int
    failed: int
    lost: int
    duplicated_replies: int
    dead_lettered: int
    recovered: int
    effects: int
    distinct_keys: int
    duplicate_effects: int
    recalls: int
    recover_s: float | None
    drain_s: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def recovery_seconds(
    answer_times: list[float],
    faults: list[FaultWindow],
    *,
    baseline_s: float = 5.0,
    window: float = 1.0,
    threshold: float = 0.5,
    step: float = 0.1,
) -> float | None:
    """See the module docstring; None without faults or answers."""
    if not faults or not answer_times:
        return None
    times = sorted(answer_times)
    first = min(f.start for f in faults)
    lo = max(times[0], first - baseline_s)
    before = bisect.bisect_left(times, first) - bisect.bisect_left(times, lo)
    if before >= 5 and first - lo > 0:
        baseline = before / (first - lo)
    else:  # no history before the fault (a short run): the run's mean rate stands in
        span = max(times[-1] - times[0], window)
        baseline = len(times) / span
    needed = threshold * baseline * window
    worst = 0.0
    for fault in faults:
        t = fault.end
        recovered_at = None
        while t <= times[-1]:
            n = bisect.bisect_left(times, t + window) - bisect.bisect_left(times, t)
            if n >= needed:
                recovered_at = t
                break
            t += step
        if recovered_at is None:
            recovered_at = max(fault.end, times[-1])
        worst = max(worst, recovered_at - fault.end)
    return round(worst, 2)


def count(journal: Journal, demo_stats: dict[str, Any] | None, faults: list[FaultWindow]) -> Counters:
    records = journal.records
    attempted = {cid for cid, r in records.items() if r.first_attempt is not None}
    sent = {cid for cid, r in records.items() if r.confirmed_at is not None}
    indeterminate = {cid for cid, r in records.items() if r.indeterminate}
    replied = set(journal.replies)
    dead = set(journal.dead)
    answered = replied | dead
    succeeded = sum(1 for replies in journal.replies.values() if replies[0].status == "succeeded")
    effects = distinct = recalls = duplicate_effects = 0
    if demo_stats is not None:
        keys = {r.command.key for cid, r in records.items() if cid in attempted and r.command.key}
        called = set(demo_stats.get("calls_by_key", {}))
        effects = int(demo_stats["effects"])
        distinct = len(called)
        recalls = int(demo_stats["calls"]) - distinct
        duplicate_effects = effects - len(called & keys)
    answer_times = [rs[0].at for rs in journal.replies.values()]
    answer_times += [ds[0].at for cid, ds in journal.dead.items() if cid not in replied]
    last_heal = max((f.end for f in faults), default=None)
    drain = None
    if last_heal is not None and answer_times:
        drain = round(max(0.0, max(answer_times) - last_heal), 2)
    return Counters(
        attempted=len(attempted),
        sent=len(sent),
        indeterminate=len(indeterminate),
        replied=len(replied),
        succeeded=succeeded,
        failed=len(replied) - succeeded,
        lost=len(sent - answered),
        duplicated_replies=sum(len(rs) - 1 for rs in journal.replies.values()),
        dead_lettered=len(dead),
        recovered=len(indeterminate & answered),
        effects=effects,
        distinct_keys=distinct,
        duplicate_effects=duplicate_effects,
        recalls=recalls,
        recover_s=recovery_seconds(answer_times, faults),
        drain_s=drain,
    )


def sum_counters(parts: list[Counters]) -> Counters:
    """Counters of consecutive phases added up (recovery and drain times: the worst phase's)."""
    if not parts:
        raise ValueError("nothing to add up")
    times = {"recover_s", "drain_s"}
    values: dict[str, Any] = {}
    for name in Counters.__dataclass_fields__:
        seen = [getattr(c, name) for c in parts]
        if name in times:
            present = [v for v in seen if v is not None]
            values[name] = max(present) if present else None
        else:
            values[name] = sum(seen)
    return Counters(**values)


def latencies(journal: Journal, kind: str = "good") -> list[float]:
    """Seconds from the first publish attempt to the first reply, for commands of ``kind``."""
    out = []
    for cid, replies in journal.replies.items():
        record = journal.records[cid]
        if record.command.kind == kind and record.first_attempt is not None:
            out.append(replies[0].at - record.first_attempt)
    return out
