"""The circuit breaker: example transitions, plus a stateful property test against a reference model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pydantic import ValidationError

from s2s_daemon.resilience.breaker import (
    BreakerState,
    CallRecord,
    CircuitBreaker,
    Permit,
    Transition,
    is_failure,
)
from s2s_daemon.settings import BreakerSettings

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make(**overrides: Any) -> tuple[CircuitBreaker, FakeClock, list[Transition]]:
    base: dict[str, Any] = {
        "window_size": 10,
        "minimum_calls": 4,
        "failure_rate_threshold": 50.0,
        "slow_call_duration": 1.0,
        "wait_in_open": 5.0,
        "permitted_half_open_calls": 2,
        "consecutive_failures": 0,  # the window's trigger alone; the streak has examples of its own
    }
    clock = FakeClock()
    transitions: list[Transition] = []
    breaker = CircuitBreaker("svc", BreakerSettings(**(base | overrides)), clock, transitions.append)
    return breaker, clock, transitions


def call(breaker: CircuitBreaker, *, failure: bool = False, duration: float = 0.01) -> bool:
    permit = breaker.try_acquire()
    if permit is None:
        return False
    permit.record(CallRecord(failure=failure, duration=duration))
    return True


def trip(breaker: CircuitBreaker) -> None:
    while breaker.state is CLOSED:
        assert call(breaker, failure=True)


# -- examples ------------------------------------------------------------------------------------------


def test_defaults_match_the_documented_policy() -> None:
    """The settings defaults are the documented resilience4j-like policy."""
    s = BreakerSettings()
    assert (s.window_type, s.window_size, s.minimum_calls) == ("count", 50, 20)
    assert (s.failure_rate_threshold, s.slow_call_duration, s.slow_call_rate_threshold) == (50.0, 2.0, 100.0)
    assert (s.wait_in_open, s.permitted_half_open_calls, s.count_429_as_failure) == (10.0, 5, True)
    assert s.consecutive_failures == 5
    assert all(f.description for f in BreakerSettings.model_fields.values())


def test_settings_reject_unknown_keys_and_an_unreachable_minimum() -> None:
    """Unknown keys and a count window smaller than minimum_calls fail validation."""
    with pytest.raises(ValidationError, match="extra"):
        BreakerSettings(window=3)  # type: ignore[call-arg]
    with pytest.raises(ValidationError, match="minimum_calls"):
        BreakerSettings(window_size=5, minimum_calls=6)
    assert BreakerSettings(window_type="time", window_size=5, minimum_calls=6).minimum_calls == 6


def test_closed_stays_closed_below_minimum_calls() -> None:
    """Failures alone do not open the breaker until the window holds minimum_calls."""
    breaker, _, transitions = make()
    for _ in range(3):
        assert call(breaker, failure=True)
    assert breaker.state is CLOSED
    assert transitions == []
    snap = breaker.metrics_snapshot()
    assert (snap.calls, snap.failures, snap.failure_rate) == (3, 3, 100.0)


def test_closed_opens_when_failure_rate_reaches_threshold() -> None:
    """CLOSED -> OPEN at minimum_calls with a failure rate equal to the threshold (>=)."""
    breaker, clock, transitions = make()
    for failure in (False, True, False):
        call(breaker, failure=failure)
    assert breaker.state is CLOSED
    call(breaker, failure=True)  # 2 of 4 = 50 %
    assert breaker.state is OPEN
    assert transitions == [Transition("svc", CLOSED, OPEN, 50.0, 0.0, 4, clock.now)]
    assert breaker.metrics_snapshot().calls == 0  # the window reset on the transition


def test_failures_in_a_row_open_it_below_minimum_calls() -> None:
    """At low traffic: consecutive_failures failed calls in a row open the breaker, whatever the window holds."""
    breaker, clock, transitions = make(minimum_calls=10, consecutive_failures=3)
    for _ in range(2):
        call(breaker, failure=True)
    assert breaker.state is CLOSED
    call(breaker, failure=True)
    assert breaker.state is OPEN
    assert transitions == [Transition("svc", CLOSED, OPEN, 100.0, 0.0, 3, clock.now)]


def test_a_success_breaks_the_streak_and_ignored_calls_do_not() -> None:
    """A success restarts the count; a released permit (an ignored 4xx) neither counts nor restarts it."""
    breaker, _, _ = make(minimum_calls=10, consecutive_failures=3)
    for failure in (True, True, False, True, True):
        call(breaker, failure=failure)
    assert breaker.state is CLOSED
    permit = breaker.try_acquire()
    assert permit is not None
    permit.release()
    call(breaker, failure=True)
    assert breaker.state is OPEN


def test_zero_turns_the_streak_trigger_off() -> None:
    """consecutive_failures 0: only the window's rates open the breaker."""
    breaker, _, _ = make(minimum_calls=10, consecutive_failures=0)
    for _ in range(9):
        call(breaker, failure=True)
    assert breaker.state is CLOSED
    call(breaker, failure=True)
    assert breaker.state is OPEN


def test_closed_opens_on_slow_calls_alone() -> None:
    """CLOSED -> OPEN when the slow-call rate reaches its threshold, even if every call succeeded."""
    breaker, _, transitions = make(slow_call_rate_threshold=75.0)
    for duration in (1.5, 1.5, 0.5):
        call(breaker, duration=duration)
    assert breaker.state is CLOSED
    call(breaker, duration=1.01)  # 3 of 4 slow = 75 %
    assert breaker.state is OPEN
    assert (transitions[0].failure_rate, transitions[0].slow_rate) == (0.0, 75.0)


def test_a_call_at_exactly_the_slow_duration_is_not_slow() -> None:
    """Slow means strictly longer than slow_call_duration."""
    breaker, _, _ = make(slow_call_rate_threshold=100.0)
    for _ in range(4):
        call(breaker, duration=1.0)
    assert breaker.state is CLOSED
    assert breaker.metrics_snapshot().slow == 0


def test_count_window_forgets_the_oldest_calls() -> None:
    """A count window holds only the last window_size outcomes."""
    breaker, _, _ = make(window_size=4, minimum_calls=4, failure_rate_threshold=75.0)
    for failure in (True, True, False, False):
        call(breaker, failure=failure)
    call(breaker, failure=False)  # evicts one failure: 1 of 4
    call(breaker, failure=True)  # evicts the other: 1 of 4
    snap = breaker.metrics_snapshot()
    assert (snap.calls, snap.failures, breaker.state) == (4, 1, CLOSED)


def test_time_window_expires_old_buckets() -> None:
    """A time window drops calls recorded window_size seconds or more ago (1-second buckets)."""
    breaker, clock, _ = make(window_type="time", window_size=10, minimum_calls=4)
    for _ in range(3):
        call(breaker, failure=True)
    clock.advance(9.5)  # 1000.0 + 9.5: second 1009, bucket 1000 still inside (1000 > 1009 - 10)
    assert breaker.metrics_snapshot().calls == 3
    clock.advance(0.5)  # second 1010: bucket 1000 is out
    assert breaker.metrics_snapshot().calls == 0
    call(breaker, failure=True)
    assert breaker.state is CLOSED  # one fresh failure is below minimum_calls


def test_time_window_opens_on_calls_within_the_window() -> None:
    """A time window opens once enough recent calls fail, however they are spread inside it."""
    breaker, clock, _ = make(window_type="time", window_size=10, minimum_calls=4)
    for _ in range(3):
        call(breaker, failure=True)
        clock.advance(3.0)
    assert breaker.state is CLOSED
    call(breaker, failure=True)  # calls at 1000, 1003, 1006, 1009: all inside
    assert breaker.state is OPEN


def test_open_rejects_until_the_wait_has_elapsed() -> None:
    """OPEN rejects every call and counts down seconds_until_half_open."""
    breaker, clock, _ = make()
    trip(breaker)
    assert breaker.try_acquire() is None
    assert breaker.seconds_until_half_open() == 5.0
    clock.advance(4.75)
    assert breaker.try_acquire() is None
    assert breaker.seconds_until_half_open() == pytest.approx(0.25)
    assert breaker.state is OPEN


def test_open_moves_to_half_open_on_the_first_acquire_after_the_wait() -> None:
    """OPEN -> HALF_OPEN happens in try_acquire once wait_in_open has passed, not by reading state."""
    breaker, clock, transitions = make()
    trip(breaker)
    clock.advance(5.0)
    assert breaker.state is OPEN
    assert breaker.seconds_until_half_open() == 0.0
    assert breaker.try_acquire() is not None
    assert breaker.state is HALF_OPEN
    assert transitions[-1] == Transition("svc", OPEN, HALF_OPEN, 0.0, 0.0, 0, clock.now)


def test_half_open_limits_probes_and_release_frees_a_slot() -> None:
    """HALF_OPEN lets permitted_half_open_calls probes through; a released permit frees its slot."""
    breaker, clock, _ = make(permitted_half_open_calls=2)
    trip(breaker)
    clock.advance(5.0)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    assert first is not None
    assert second is not None
    assert breaker.try_acquire() is None
    first.release()
    third = breaker.try_acquire()
    assert third is not None
    assert breaker.try_acquire() is None
    assert breaker.state is HALF_OPEN


def test_half_open_closes_when_all_probes_are_healthy() -> None:
    """HALF_OPEN -> CLOSED once every permitted probe completed below both thresholds."""
    breaker, clock, transitions = make(permitted_half_open_calls=2)
    trip(breaker)
    clock.advance(5.0)
    first, second = breaker.try_acquire(), breaker.try_acquire()
    assert first is not None
    assert second is not None
    first.record_success(0.1)
    assert breaker.state is HALF_OPEN  # one probe still in flight: no decision yet
    second.record_success(0.1)
    assert breaker.state is CLOSED
    assert transitions[-1].from_state is HALF_OPEN
    assert transitions[-1].calls == 2
    assert breaker.metrics_snapshot().calls == 0


def test_half_open_reopens_when_probes_fail() -> None:
    """HALF_OPEN -> OPEN when the probes' failure rate reaches the threshold; the wait starts again."""
    breaker, clock, transitions = make(permitted_half_open_calls=2)
    trip(breaker)
    clock.advance(5.0)
    assert call(breaker, failure=False)
    assert call(breaker, failure=True)  # 50 %
    assert breaker.state is OPEN
    assert transitions[-1] == Transition("svc", HALF_OPEN, OPEN, 50.0, 0.0, 2, clock.now)
    assert breaker.seconds_until_half_open() == 5.0


def test_half_open_reopens_when_probes_are_slow() -> None:
    """HALF_OPEN -> OPEN when the probes succeed but too slowly."""
    breaker, clock, _ = make(permitted_half_open_calls=2)
    trip(breaker)
    clock.advance(5.0)
    call(breaker, duration=3.0)
    call(breaker, duration=3.0)
    assert breaker.state is OPEN


def test_a_permit_from_before_a_transition_records_nothing() -> None:
    """A call permitted while CLOSED and finished after the breaker moved on is not counted."""
    breaker, clock, _ = make(permitted_half_open_calls=1)
    stale = breaker.try_acquire()
    assert stale is not None
    trip(breaker)
    clock.advance(5.0)
    probe = breaker.try_acquire()
    assert probe is not None
    stale.record_failure(10.0)
    assert breaker.state is HALF_OPEN
    assert breaker.metrics_snapshot().calls == 0
    assert breaker.try_acquire() is None  # the stale outcome neither used nor freed the probe slot
    probe.record_success(0.1)
    assert breaker.state is CLOSED


def test_a_permit_reports_once() -> None:
    """Only the first record/release of a permit counts; release after record is a no-op."""
    breaker, _, _ = make()
    permit = breaker.try_acquire()
    assert permit is not None
    permit.record_failure(0.1)
    permit.record_failure(0.1)
    permit.release()
    assert permit.done
    assert breaker.metrics_snapshot().calls == 1


def test_force_open_and_force_closed() -> None:
    """Admin overrides move the state at once, reset the window, and report whether anything changed."""
    breaker, clock, transitions = make()
    call(breaker, failure=True)
    assert breaker.force_open()
    assert not breaker.force_open()
    assert breaker.state is OPEN
    assert transitions[-1] == Transition("svc", CLOSED, OPEN, 100.0, 0.0, 1, clock.now)
    assert breaker.try_acquire() is None
    assert breaker.force_closed()
    assert not breaker.force_closed()
    assert breaker.state is CLOSED
    assert breaker.metrics_snapshot().calls == 0


def test_a_failing_transition_hook_does_not_break_the_breaker() -> None:
    """An exception in on_transition is logged and the state change still happens."""

    def boom(_: Transition) -> None:
        raise RuntimeError("observer bug")

    breaker = CircuitBreaker("svc", BreakerSettings(window_size=1, minimum_calls=1), FakeClock(), boom)
    call(breaker, failure=True)
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    ("status", "error", "count_429", "expected"),
    [
        (200, None, True, False),
        (204, None, True, False),
        (304, None, True, False),
        (400, None, True, None),
        (404, None, True, None),
        (409, None, True, None),
        (422, None, True, None),
        (408, None, True, True),
        (429, None, True, True),
        (429, None, False, None),
        (500, None, True, True),
        (501, None, True, True),
        (503, None, True, True),
        (None, "timeout", True, True),
        (None, "connect", True, True),
        (200, "read-error", True, True),
    ],
)
def test_is_failure_maps_http_outcomes(
    status: int | None, error: str | None, count_429: bool, expected: bool | None
) -> None:
    """5xx, 408, transport errors fail; other 4xx are ignored; 429 follows count_429_as_failure."""
    settings = BreakerSettings(count_429_as_failure=count_429)
    assert is_failure(status, error, settings) is expected


def test_is_failure_needs_something_to_judge() -> None:
    """Neither a status nor an error is a caller bug."""
    with pytest.raises(ValueError, match="status code or an error"):
        is_failure(None, None, BreakerSettings())


# -- property: the breaker against a reference model -----------------------------------------------------


@dataclass
class ModelBreaker:
    """The specification, written plainly: lists and recomputation, exact rational rates."""

    s: BreakerSettings
    state: BreakerState = CLOSED
    epoch: int = 0
    opened_at: float = 0.0
    calls: list[tuple[int, bool, bool]] = field(default_factory=list)  # (second, failure, slow) in CLOSED
    probes: list[tuple[bool, bool]] = field(default_factory=list)
    probes_issued: int = 0
    streak: int = 0  # failures in a row while CLOSED
    transitions: list[tuple[BreakerState, BreakerState]] = field(default_factory=list)

    def over(self, outcomes: list[tuple[bool, bool]]) -> bool:
        n = len(outcomes)
        failures = sum(f for f, _ in outcomes)
        slow = sum(sl for _, sl in outcomes)
        return Fraction(100 * failures, n) >= Fraction(self.s.failure_rate_threshold) or Fraction(
            100 * slow, n
        ) >= Fraction(self.s.slow_call_rate_threshold)

    def window(self, now: float) -> list[tuple[bool, bool]]:
        if self.s.window_type == "count":
            kept = self.calls[-self.s.window_size :]
        else:
            kept = [c for c in self.calls if c[0] > math.floor(now) - self.s.window_size]
        return [(f, sl) for _, f, sl in kept]

    def go(self, to: BreakerState, now: float) -> None:
        self.transitions.append((self.state, to))
        self.state, self.epoch = to, self.epoch + 1
        self.calls, self.probes, self.probes_issued, self.streak = [], [], 0, 0
        if to is OPEN:
            self.opened_at = now

    def acquire(self, now: float) -> int | None:
        if self.state is OPEN:
            if now - self.opened_at < self.s.wait_in_open:
                return None
            self.go(HALF_OPEN, now)
        if self.state is HALF_OPEN:
            if self.probes_issued == self.s.permitted_half_open_calls:
                return None
            self.probes_issued += 1
        return self.epoch

    def record(self, epoch: int, failure: bool, duration: float, now: float) -> None:
        if epoch != self.epoch:
            return
        slow = duration > self.s.slow_call_duration
        if self.state is CLOSED:
            self.calls.append((math.floor(now), failure, slow))
            self.streak = self.streak + 1 if failure else 0
            window = self.window(now)
            in_a_row = self.s.consecutive_failures
            if (len(window) >= self.s.minimum_calls and self.over(window)) or (in_a_row and self.streak >= in_a_row):
                self.go(OPEN, now)
        else:
            self.probes.append((failure, slow))
            if len(self.probes) == self.s.permitted_half_open_calls:
                self.go(OPEN if self.over(self.probes) else CLOSED, now)

    def release(self, epoch: int) -> None:
        if epoch == self.epoch and self.state is HALF_OPEN:
            self.probes_issued -= 1


# Whole and half percents are exact in binary, so the model's exact rates and the float rates agree; the
# sampled ones are rates small windows actually hit, to exercise the ">=" edge.
thresholds = st.one_of(st.sampled_from([25.0, 50.0, 75.0, 100.0]), st.integers(2, 200).map(lambda n: n / 2))

breaker_settings = st.builds(
    lambda window_type, size, minimum, failure_t, slow_t, wait, probes, in_a_row: BreakerSettings(
        window_type=window_type,
        window_size=size,
        minimum_calls=min(minimum, size) if window_type == "count" else minimum,
        failure_rate_threshold=failure_t,
        slow_call_duration=1.0,
        slow_call_rate_threshold=slow_t,
        wait_in_open=wait,
        permitted_half_open_calls=probes,
        consecutive_failures=in_a_row,
    ),
    window_type=st.sampled_from(["count", "time"]),
    size=st.integers(1, 8),
    minimum=st.integers(1, 6),
    failure_t=thresholds,
    slow_t=thresholds,
    wait=st.sampled_from([0.5, 1.0, 3.0]),
    probes=st.integers(1, 4),
    in_a_row=st.integers(0, 4),
)


class BreakerMachine(RuleBasedStateMachine):
    """Drives the real breaker and the model with the same operations and compares them at every step."""

    @initialize(settings=breaker_settings)
    def setup(self, settings: BreakerSettings) -> None:
        self.clock = FakeClock()
        self.seen: list[Transition] = []
        self.breaker = CircuitBreaker("prop", settings, self.clock, self.seen.append)
        self.model = ModelBreaker(settings)
        self.permits: list[tuple[Permit, int]] = []
        self.half_open_granted = 0

    @rule()
    def acquire(self) -> None:
        before = self.breaker.state
        permit = self.breaker.try_acquire()
        epoch = self.model.acquire(self.clock.now)
        assert (permit is None) == (epoch is None)
        if before is OPEN and self.breaker.state is HALF_OPEN:
            self.half_open_granted = 0
        if permit is not None and epoch is not None:
            self.permits.append((permit, epoch))
            if self.breaker.state is HALF_OPEN:
                self.half_open_granted += 1

    @precondition(lambda self: self.permits)
    @rule(data=st.data(), failure=st.booleans(), duration=st.sampled_from([0.0, 0.5, 1.0, 1.5, 30.0]))
    def record(self, data: st.DataObject, failure: bool, duration: float) -> None:
        permit, epoch = self.permits.pop(data.draw(st.integers(0, len(self.permits) - 1)))
        permit.record(CallRecord(failure, duration))
        self.model.record(epoch, failure, duration, self.clock.now)

    @precondition(lambda self: self.permits)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        permit, epoch = self.permits.pop(data.draw(st.integers(0, len(self.permits) - 1)))
        was_half_open = self.breaker.state is HALF_OPEN and epoch == self.model.epoch
        permit.release()
        self.model.release(epoch)
        if was_half_open:
            self.half_open_granted -= 1

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 2.5, 10.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @invariant()
    def same_state_and_metrics(self) -> None:
        assert self.breaker.state is self.model.state
        snap = self.breaker.metrics_snapshot()
        if self.model.state is CLOSED:
            expected = self.model.window(self.clock.now)
        elif self.model.state is HALF_OPEN:
            expected = self.model.probes
        else:
            expected = []
        assert snap.calls == len(expected)
        assert snap.failures == sum(f for f, _ in expected)
        assert snap.slow == sum(sl for _, sl in expected)

    @invariant()
    def half_open_never_exceeds_permitted_probes(self) -> None:
        if self.breaker.state is HALF_OPEN:
            assert 0 <= self.half_open_granted <= self.breaker.settings.permitted_half_open_calls

    @invariant()
    def transitions_follow_the_rules(self) -> None:
        assert [(t.from_state, t.to_state) for t in self.seen] == self.model.transitions
        s = self.breaker.settings
        opened_at = math.nan
        for t in self.seen:
            over = t.failure_rate >= s.failure_rate_threshold or t.slow_rate >= s.slow_call_rate_threshold
            if (t.from_state, t.to_state) == (CLOSED, OPEN):
                assert (t.calls >= s.minimum_calls and over) or s.consecutive_failures
            elif t.from_state is HALF_OPEN:
                assert t.calls == s.permitted_half_open_calls
                assert over == (t.to_state is OPEN)
            else:
                assert (t.from_state, t.to_state) == (OPEN, HALF_OPEN)
                assert t.at - opened_at >= s.wait_in_open
            if t.to_state is OPEN:
                opened_at = t.at


TestBreakerAgainstModel = BreakerMachine.TestCase
TestBreakerAgainstModel.settings = hyp_settings(max_examples=300, stateful_step_count=60, deadline=None)
