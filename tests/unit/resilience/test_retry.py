"""Retry policy: backoff bounds, decide_retry, and the stamina-driven in-process loop."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import stamina
from hypothesis import given
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from pydantic import ValidationError

from s2s_daemon.resilience.backoff import Backoff
from s2s_daemon.resilience.budget import RetryBudget
from s2s_daemon.resilience.retry import (
    RetryDecision,
    RetryReason,
    call_with_retries,
    decide_retry,
    outage_horizon,
)
from s2s_daemon.settings import RetrySettings

PROPERTY = hyp_settings(max_examples=500, deadline=None)
# The mechanics below are shown on a short policy (the defaults before 0.x: four attempts within ~30 s, full
# jitter); the defaults themselves and their outage horizon are tested on their own.
SMALL = RetrySettings(max_attempts=4, initial_delay=0.1, max_delay=10.0, max_elapsed=30.0, jitter=1.0)


@pytest.fixture(autouse=True)
def _stamina_test_mode() -> Iterator[None]:
    """No real backoff sleeps and no global stamina instrumentation in these tests."""
    stamina.instrumentation.set_on_retry_hooks([])
    with stamina.set_testing(True, attempts=100):
        yield
    stamina.instrumentation.set_on_retry_hooks(None)


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass(frozen=True)
class Outcome:
    ok: bool
    retryable: bool = True
    retry_after: float | None = None


OK = Outcome(ok=True, retryable=False)
FAIL = Outcome(ok=False)
PERMANENT = Outcome(ok=False, retryable=False)


class Script:
    """An attempt function answering from a script; records the attempt numbers it was called with."""

    def __init__(self, *outcomes: Outcome, clock: FakeClock | None = None, takes: float = 0.0) -> None:
        self.outcomes = list(outcomes)
        self.calls: list[int] = []
        self.clock = clock
        self.takes = takes

    async def __call__(self, number: int) -> Outcome:
        self.calls.append(number)
        if self.clock is not None:
            self.clock.now += self.takes
        return self.outcomes.pop(0)


def decide(**overrides: object) -> RetryDecision:
    args: dict[str, object] = {
        "attempt": 1,
        "elapsed": 0.0,
        "retryable": True,
        "retry_after": None,
        "deadline_remaining": None,
        "budget_ok": True,
        "settings": SMALL,
        "rng": random.Random(7),
    } | overrides
    return decide_retry(**args)  # type: ignore[arg-type]


# -- the backoff policy (Backoff.for_retries) ----------------------------------------------------------------------

retry_settings = st.builds(
    RetrySettings,
    max_attempts=st.integers(1, 10),
    initial_delay=st.floats(0, 5),
    max_delay=st.floats(0, 60),
    multiplier=st.floats(1, 10),
    max_elapsed=st.floats(0.01, 120),
    in_process_max_wait=st.floats(0, 5),
)


@PROPERTY
@given(attempt=st.integers(1, 5000), settings=retry_settings, rng=st.randoms(use_true_random=False))
def test_backoff_stays_within_zero_and_the_cap(attempt: int, settings: RetrySettings, rng: random.Random) -> None:
    """Full jitter: the delay is in [0, min(max_delay, initial * multiplier^(attempt-1))], even on overflow."""
    delay = Backoff.for_retries(settings).wait(attempt, rng)
    try:
        cap = min(settings.max_delay, settings.initial_delay * settings.multiplier ** (attempt - 1))
    except OverflowError:
        cap = settings.max_delay
    assert 0.0 <= delay <= cap


def test_backoff_grows_then_caps() -> None:
    """The cap doubles per attempt from initial_delay until max_delay; attempt numbers start at 1."""
    settings = RetrySettings(initial_delay=1.0, multiplier=2.0, max_delay=5.0)

    class Top(random.Random):
        def uniform(self, a: float, b: float) -> float:
            return b

    assert [Backoff.for_retries(settings).wait(n, Top()) for n in range(1, 6)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    with pytest.raises(ValueError, match="1-based"):
        Backoff.for_retries(settings).wait(0, Top())


def test_settings_defaults_and_validation() -> None:
    """RetrySettings has the documented defaults, a description per field, and rejects nonsense."""
    s = RetrySettings()
    assert (s.max_attempts, s.initial_delay, s.max_delay, s.multiplier, s.jitter) == (10, 1.0, 120.0, 2.0, 0.5)
    assert (s.max_elapsed, s.in_process_max_wait) == (300.0, 1.0)
    assert all(f.description for f in RetrySettings.model_fields.values())
    with pytest.raises(ValidationError):
        RetrySettings(max_attempts=0)
    with pytest.raises(ValidationError):
        RetrySettings(multiplier=0.5)
    with pytest.raises(ValidationError, match="jitter"):
        RetrySettings(jitter=1.5)


def test_the_defaults_outlive_a_three_minute_outage() -> None:
    """With the defaults a command outlives a downstream outage of 180 s (the figure the docs state); the first
    retry stays in-process and the later ones go through the delay queues."""
    s = RetrySettings()
    assert outage_horizon(s) == 180.0
    backoff = Backoff.for_retries(s)
    assert backoff.ceiling(1) <= s.in_process_max_wait < backoff.floor(2) * 2
    assert sum(backoff.floor(n) for n in range(1, s.max_attempts)) >= 180.0


def test_full_jitter_promises_no_horizon() -> None:
    """Full jitter has no shortest wait: every attempt may come at once, so the horizon is 0."""
    assert outage_horizon(SMALL) == 0.0
    assert outage_horizon(RetrySettings(max_attempts=1)) == 0.0


@PROPERTY
@given(deadline=st.floats(0.01, 400), rng=st.randoms(use_true_random=False))
def test_with_the_defaults_a_deadline_still_wins(deadline: float, rng: random.Random) -> None:
    """The long default horizon never carries a command past its x-deadline: no retry is scheduled to start at or
    after it, and a permanent error is not retried at all."""
    s = RetrySettings()
    attempt, elapsed = 1, 0.0
    while True:
        d = decide_retry(
            attempt,
            elapsed,
            retryable=True,
            retry_after=None,
            deadline_remaining=deadline - elapsed,
            budget_ok=True,
            settings=s,
            rng=rng,
        )
        if not d.retry:
            break
        attempt, elapsed = attempt + 1, elapsed + d.delay
        assert elapsed < deadline
    assert decide(retryable=False, settings=s).reason == RetryReason.NOT_RETRYABLE


@PROPERTY
@given(settings=retry_settings, rng=st.randoms(use_true_random=False))
def test_no_retry_sequence_fails_before_the_horizon(settings: RetrySettings, rng: random.Random) -> None:
    """Whatever the draws, a command failing on every attempt is given up no sooner than the horizon."""
    horizon = outage_horizon(settings)
    attempt, elapsed = 1, 0.0
    while True:
        d = decide_retry(
            attempt,
            elapsed,
            retryable=True,
            retry_after=None,
            deadline_remaining=None,
            budget_ok=True,
            settings=settings,
            rng=rng,
        )
        if not d.retry:
            break
        attempt, elapsed = attempt + 1, elapsed + d.delay
    assert elapsed >= horizon - 1e-6


# -- decide_retry ------------------------------------------------------------------------------------


@PROPERTY
@given(
    attempt=st.integers(1, 12),
    elapsed=st.floats(0, 100),
    retryable=st.booleans(),
    retry_after=st.none() | st.floats(0, 100),
    deadline_remaining=st.none() | st.floats(-10, 100),
    budget_ok=st.booleans(),
    settings=retry_settings,
    rng=st.randoms(use_true_random=False),
)
def test_decide_retry_respects_every_limit(
    attempt: int,
    elapsed: float,
    retryable: bool,
    retry_after: float | None,
    deadline_remaining: float | None,
    budget_ok: bool,
    settings: RetrySettings,
    rng: random.Random,
) -> None:
    """A retry is never past the deadline, never sooner than Retry-After, and within every other limit."""
    d = decide_retry(
        attempt,
        elapsed,
        retryable=retryable,
        retry_after=retry_after,
        deadline_remaining=deadline_remaining,
        budget_ok=budget_ok,
        settings=settings,
        rng=rng,
    )
    if not d.retry:
        assert (d.delay, d.in_process) == (0.0, False)
        return
    assert retryable
    assert budget_ok
    assert attempt < settings.max_attempts
    assert d.delay >= 0.0
    if retry_after is not None:
        assert d.delay >= retry_after
    if deadline_remaining is not None:
        assert d.delay < deadline_remaining
    assert elapsed + d.delay <= settings.max_elapsed
    assert d.in_process == (d.delay <= settings.in_process_max_wait)
    assert d.delay <= max(settings.max_delay, retry_after or 0.0)


def test_not_retryable_stops_at_once() -> None:
    """A permanent outcome is never retried."""
    assert decide(retryable=False) == RetryDecision(False, 0.0, False, RetryReason.NOT_RETRYABLE)


def test_attempts_exhausted() -> None:
    """After max_attempts attempts there is no retry."""
    assert decide(attempt=3).retry
    assert decide(attempt=4).reason == RetryReason.ATTEMPTS_EXHAUSTED


def test_backoff_retry_is_in_process() -> None:
    """A short computed backoff is an in-process retry."""
    d = decide()
    assert d.retry
    assert d.in_process
    assert d.reason == RetryReason.BACKOFF
    assert 0.0 <= d.delay <= 0.1


def test_larger_retry_after_wins_and_may_go_through_the_broker() -> None:
    """Retry-After larger than the backoff sets the delay; beyond in_process_max_wait it is a redelivery."""
    assert decide(retry_after=3.0) == RetryDecision(True, 3.0, False, RetryReason.RETRY_AFTER)
    assert decide(retry_after=1.0) == RetryDecision(True, 1.0, True, RetryReason.RETRY_AFTER)  # edge: in-process


def test_smaller_retry_after_keeps_the_backoff() -> None:
    """Retry-After smaller than the computed backoff does not shorten the wait."""
    settings = RetrySettings(initial_delay=10.0, max_delay=10.0)
    plain = decide(settings=settings)
    with_header = decide(settings=settings, retry_after=0.0)
    assert with_header == plain
    assert with_header.reason == RetryReason.BACKOFF


def test_no_retry_past_the_deadline() -> None:
    """A delay reaching the deadline means no retry (reason deadline), also when Retry-After asks for it."""
    assert decide(retry_after=2.0, deadline_remaining=2.0).reason == RetryReason.DEADLINE
    assert decide(retry_after=2.0, deadline_remaining=2.5).retry
    assert decide(deadline_remaining=0.0).reason == RetryReason.DEADLINE


def test_no_retry_beyond_max_elapsed() -> None:
    """A retry that would start after max_elapsed is not scheduled."""
    assert decide(elapsed=29.0, retry_after=1.5).reason == RetryReason.MAX_ELAPSED
    assert decide(elapsed=29.0, retry_after=1.0).retry


def test_budget_is_checked_last() -> None:
    """A refused budget stops the retry, but only once every other limit allowed it."""
    assert decide(budget_ok=False).reason == RetryReason.BUDGET
    assert decide(budget_ok=False, attempt=4).reason == RetryReason.ATTEMPTS_EXHAUSTED


# -- call_with_retries -------------------------------------------------------------------------------


async def test_retries_until_success_and_balances_the_budget() -> None:
    """Retryable failures are retried in-process; one request and two retries are counted, none left active."""
    clock = FakeClock()
    budget = RetryBudget(clock=clock)
    script = Script(FAIL, FAIL, OK)
    seen: list[tuple[int, RetryDecision]] = []
    result = await call_with_retries(
        script, settings=SMALL, budget=budget, clock=clock, on_retry=lambda n, d: seen.append((n, d))
    )
    assert (result.outcome, result.attempts, result.decision) == (OK, 3, None)
    assert script.calls == [1, 2, 3]
    assert [n for n, _ in seen] == [1, 2]
    assert all(d.retry and d.in_process for _, d in seen)
    snap = budget.snapshot()
    assert (snap.requests_in_window, snap.retries_in_window, snap.active_retries) == (1, 2, 0)


async def test_permanent_failure_is_not_retried() -> None:
    """A non-retryable outcome ends the call after one attempt, with the outcome and the reason."""
    result = await call_with_retries(Script(PERMANENT), settings=SMALL)
    assert result.outcome == PERMANENT
    assert result.attempts == 1
    assert result.decision == RetryDecision(False, 0.0, False, RetryReason.NOT_RETRYABLE)


async def test_gives_up_after_max_attempts() -> None:
    """Every attempt failing ends with attempts-exhausted and the last outcome; budget slots are freed."""
    budget = RetryBudget(clock=FakeClock())
    result = await call_with_retries(
        Script(*[FAIL] * 3), settings=SMALL.model_copy(update={"max_attempts": 3}), budget=budget
    )
    assert (result.outcome, result.attempts) == (FAIL, 3)
    assert result.decision is not None
    assert result.decision.reason == RetryReason.ATTEMPTS_EXHAUSTED
    assert budget.active_retries == 0


async def test_long_retry_after_becomes_a_redelivery() -> None:
    """A wait longer than in_process_max_wait is handed back to the caller instead of sleeping."""
    busy = Outcome(ok=False, retry_after=30.0)
    result = await call_with_retries(Script(busy), settings=RetrySettings(max_elapsed=60.0))
    assert result.attempts == 1
    assert result.decision == RetryDecision(True, 30.0, False, RetryReason.RETRY_AFTER)


async def test_budget_refusal_stops_in_process_retries() -> None:
    """With the budget spent, a retryable failure is not retried and the refusal is counted."""
    budget = RetryBudget(budget_percent=0.0, min_retry_concurrency=0, clock=FakeClock())
    result = await call_with_retries(Script(FAIL), settings=SMALL, budget=budget)
    assert result.attempts == 1
    assert result.decision == RetryDecision(False, 0.0, False, RetryReason.BUDGET)
    assert budget.refused_total == 1


async def test_redelivered_retry_needs_a_budget_slot_before_calling() -> None:
    """A redelivered command's first attempt here is a retry: refused by the budget, nothing is called."""
    budget = RetryBudget(budget_percent=0.0, min_retry_concurrency=0, clock=FakeClock())
    script = Script(OK)
    result = await call_with_retries(script, settings=SMALL, budget=budget, previous_attempts=2)
    assert script.calls == []
    assert (result.outcome, result.attempts) == (None, 2)
    assert result.decision == RetryDecision(False, 0.0, False, RetryReason.BUDGET)
    assert budget.requests_in_window == 0


async def test_redelivered_retry_continues_the_attempt_count() -> None:
    """Attempt numbers and limits continue from earlier deliveries; the slot is released afterwards."""
    budget = RetryBudget(clock=FakeClock())
    script = Script(FAIL, FAIL)
    result = await call_with_retries(script, settings=SMALL, budget=budget, previous_attempts=2)
    assert script.calls == [3, 4]
    assert result.decision is not None
    assert result.decision.reason == RetryReason.ATTEMPTS_EXHAUSTED
    assert budget.snapshot().active_retries == 0
    assert budget.retries_in_window == 2


async def test_no_in_process_retry_past_the_deadline() -> None:
    """Time spent in attempts counts against time_left; a retry that cannot finish before it is not made."""
    clock = FakeClock()
    script = Script(FAIL, FAIL, clock=clock, takes=0.6)
    result = await call_with_retries(script, settings=RetrySettings(initial_delay=0.0), clock=clock, time_left=1.0)
    assert script.calls == [1, 2]  # 0.4 s left after attempt 1; after attempt 2 the deadline has passed
    assert result.decision is not None
    assert result.decision.reason == RetryReason.DEADLINE


async def test_previous_elapsed_counts_against_max_elapsed() -> None:
    """Time spent by earlier deliveries counts against max_elapsed."""
    result = await call_with_retries(
        Script(Outcome(ok=False, retry_after=0.5)), settings=RetrySettings(max_elapsed=10.0), previous_elapsed=9.6
    )
    assert result.decision is not None
    assert result.decision.reason == RetryReason.MAX_ELAPSED


async def test_stamina_test_mode_caps_attempts() -> None:
    """stamina.set_testing(attempts=n) ends the loop after n attempts, reported as stopped."""
    budget = RetryBudget(clock=FakeClock())
    with stamina.set_testing(True, attempts=2):
        result = await call_with_retries(Script(FAIL, FAIL), settings=SMALL, budget=budget)
    assert result.attempts == 2
    assert result.decision is not None
    assert result.decision.reason == RetryReason.STOPPED
    assert budget.active_retries == 0


async def test_errors_from_the_attempt_propagate_without_retry() -> None:
    """An exception raised by the attempt function is a bug, not an outcome: it is raised, not retried."""
    calls: list[int] = []

    async def broken(number: int) -> Outcome:
        calls.append(number)
        raise KeyError("bug")

    budget = RetryBudget(clock=FakeClock())
    with pytest.raises(KeyError):
        await call_with_retries(broken, settings=SMALL, budget=budget)
    assert calls == [1]
    assert budget.active_retries == 0


async def test_stamina_sleeps_for_the_decided_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """Outside test mode, stamina waits exactly the delay decide_retry chose (Retry-After here)."""
    slept: list[float] = []
    real_sleep = asyncio.sleep

    async def fake_sleep(delay: float) -> None:
        slept.append(delay)
        await real_sleep(0)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    with stamina.set_testing(False):
        result = await call_with_retries(
            Script(Outcome(ok=False, retry_after=0.75), OK), settings=RetrySettings(initial_delay=0.0)
        )
    assert result.attempts == 2
    assert slept == [0.75]


async def test_a_failing_on_retry_hook_does_not_stop_the_retry() -> None:
    """An exception in on_retry is logged; the retry still happens."""

    def boom(_: int, __: RetryDecision) -> None:
        raise RuntimeError("observer bug")

    result = await call_with_retries(Script(FAIL, OK), settings=SMALL, on_retry=boom)
    assert (result.outcome, result.attempts) == (OK, 2)
