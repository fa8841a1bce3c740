"""The Jepsen-style counters, computed from a hand-made journal (no services)."""

from __future__ import annotations

import pytest

from tests.harness.chaos.counters import FaultWindow, count, percentile, recovery_seconds, sum_counters
from tests.harness.chaos.producer import Command, DeadLetter, Journal, Reply


def _journal(n: int) -> Journal:
    journal = Journal()
    journal.add(Command(f"c{i}", "service-a.create-resource", b"{}", key=f"c{i}") for i in range(n))
    return journal


def _publish(journal: Journal, cid: str, *, confirmed: bool = True) -> None:
    journal.attempt(cid)
    if confirmed:
        journal.confirmed(cid)
    else:
        journal.broke(cid, ConnectionError("gone"))


def test_lost_recovered_and_duplicates() -> None:
    """Lost = confirmed with neither reply nor DLQ entry; recovered = unconfirmed but answered; a reply seen
    again after the harness's own reconnect is not a duplicate, a second reply is."""
    journal = _journal(5)
    for cid in ("c0", "c1", "c2"):
        _publish(journal, cid)
    _publish(journal, "c3", confirmed=False)
    _publish(journal, "c4", confirmed=False)
    journal.reply("c0", Reply(1.0, "succeeded", None, "m0"), redelivered=False)
    journal.reply("c0", Reply(1.1, "succeeded", None, "m0"), redelivered=True)  # our own redelivery
    journal.reply("c0", Reply(1.2, "succeeded", None, "m0"), redelivered=False)  # re-sent by the daemon
    journal.dead_letter("c1", DeadLetter(1.0, "schema-violation", {}, 1), redelivered=False)
    journal.reply("c3", Reply(1.0, "failed", "unavailable", "m3"), redelivered=False)
    journal.reply("zz", Reply(1.0, "succeeded", None, "mz"), redelivered=False)
    stats = {"calls": 4, "effects": 2, "calls_by_key": {"c0": 2, "c3": 1, "other": 1}}
    c = count(journal, stats, [])
    assert (c.attempted, c.sent, c.indeterminate) == (5, 3, 2)
    assert (c.replied, c.succeeded, c.failed, c.dead_lettered) == (2, 1, 1, 1)
    assert c.lost == 1  # c2
    assert c.recovered == 1  # c3
    assert c.duplicated_replies == 1
    assert journal.stray == 1
    assert c.recalls == 1
    assert c.duplicate_effects == 0  # two effects, two of our keys reached the downstream


def test_an_invented_key_counts_as_a_duplicate_effect() -> None:
    """An effect under a key we never sent (the daemon changed or invented it) is a duplicate effect."""
    journal = _journal(1)
    _publish(journal, "c0")
    journal.reply("c0", Reply(1.0, "succeeded", None, "m0"), redelivered=False)
    c = count(journal, {"calls": 2, "effects": 2, "calls_by_key": {"c0": 1, "random-uuid": 1}}, [])
    assert c.duplicate_effects == 1


def test_recovery_is_time_until_half_the_baseline_rate() -> None:
    """10 answers/s before the fault, none during it, 10/s again from 3 s after it ended: recovery = 3 s."""
    before = [i / 10 for i in range(100)]  # 0..9.9 s
    after = [16 + i / 10 for i in range(50)]  # fault 10..13 s, answers again from 16 s
    assert recovery_seconds(before + after, [FaultWindow("f", 10.0, 13.0)]) == pytest.approx(2.5, abs=0.15)


def test_recovery_when_the_backlog_ran_out() -> None:
    """Fewer answers left than the baseline rate needs: recovery is until the last answer."""
    times = [i / 10 for i in range(100)] + [14.0]
    assert recovery_seconds(times, [FaultWindow("f", 10.0, 12.0)]) == pytest.approx(2.0)
    assert recovery_seconds([], [FaultWindow("f", 1.0, 2.0)]) is None


def test_percentile_nearest_rank() -> None:
    """Nearest-rank percentiles; none of nothing."""
    assert percentile(list(range(1, 101)), 99) == 99
    assert percentile([0.5], 99) == 0.5
    assert percentile([], 50) is None


def test_phases_add_up() -> None:
    """Counters of consecutive phases sum; recovery and drain take the worst phase."""
    journal = _journal(2)
    for cid in ("c0", "c1"):
        _publish(journal, cid)
    journal.reply("c0", Reply(1.0, "succeeded", None, "m0"), redelivered=False)
    one = count(journal, {"calls": 1, "effects": 1, "calls_by_key": {"c0": 1}}, [FaultWindow("f", 0.5, 0.6)])
    two = count(journal, {"calls": 1, "effects": 1, "calls_by_key": {"c0": 1}}, [])
    total = sum_counters([one, two])
    assert (total.sent, total.replied, total.lost, total.effects) == (4, 2, 2, 2)
    assert total.drain_s == one.drain_s
    with pytest.raises(ValueError, match="nothing"):
        sum_counters([])
