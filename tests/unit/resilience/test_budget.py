"""The Envoy-style retry budget: examples, plus a stateful property test against a reference model."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from fractions import Fraction

import pytest
from hypothesis import settings as hyp_settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from pydantic import ValidationError

from s2s_daemon.resilience.budget import BudgetSnapshot, RetryBudget
from s2s_daemon.settings import RetryBudgetSettings


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_floor_allows_min_retry_concurrency_without_traffic() -> None:
    """With no requests at all, exactly min_retry_concurrency retries may be active at once."""
    budget = RetryBudget(budget_percent=20.0, min_retry_concurrency=3, clock=FakeClock())
    assert [budget.try_acquire_retry() for _ in range(4)] == [True, True, True, False]
    budget.retry_done()
    assert budget.try_acquire_retry()
    assert budget.snapshot() == BudgetSnapshot(0, 4, 3, 4, 1)


def test_percentage_of_requests_bounds_retries_beyond_the_floor() -> None:
    """Without a floor, retries in the window stay below budget_percent of the window's requests."""
    budget = RetryBudget(budget_percent=20.0, min_retry_concurrency=0, clock=FakeClock())
    for _ in range(10):
        budget.record_request()
    assert [budget.try_acquire_retry() for _ in range(3)] == [True, True, False]
    budget.retry_done()
    budget.retry_done()
    assert not budget.try_acquire_retry()  # finished retries still count in the window
    assert budget.refused_total == 2


def test_floor_retries_count_against_the_percentage() -> None:
    """Retries granted by the floor are retries in the window too."""
    budget = RetryBudget(budget_percent=50.0, min_retry_concurrency=1, clock=FakeClock())
    for _ in range(2):
        budget.record_request()
    assert budget.try_acquire_retry()  # floor: 0 active
    assert not budget.try_acquire_retry()  # 1 active, 1 retry already = 50 % of 2
    budget.retry_done()
    assert budget.try_acquire_retry()  # floor again


def test_window_expiry_restores_the_budget() -> None:
    """Requests and retries leave the window after `window` whole seconds."""
    clock = FakeClock()
    budget = RetryBudget(budget_percent=100.0, min_retry_concurrency=0, window=2.5, clock=clock)
    budget.record_request()
    assert budget.try_acquire_retry()
    budget.retry_done()
    clock.now += 1.0
    budget.record_request()
    assert budget.try_acquire_retry()
    budget.retry_done()
    assert not budget.try_acquire_retry()
    clock.now += 2.0  # second 1003: the window is 3 whole seconds, bucket 1000 is out
    assert (budget.requests_in_window, budget.retries_in_window) == (1, 1)
    clock.now += 1.0
    assert (budget.requests_in_window, budget.retries_in_window) == (0, 0)


def test_zero_percent_leaves_only_the_floor() -> None:
    """budget_percent=0 allows no retry beyond the concurrency floor, whatever the traffic."""
    budget = RetryBudget(budget_percent=0.0, min_retry_concurrency=1, clock=FakeClock())
    for _ in range(100):
        budget.record_request()
    assert budget.try_acquire_retry()
    assert not budget.try_acquire_retry()


def test_retry_done_without_a_grant_is_a_bug() -> None:
    """Releasing more retries than were granted raises instead of inflating the floor."""
    budget = RetryBudget(clock=FakeClock())
    with pytest.raises(RuntimeError, match="without a granted retry"):
        budget.retry_done()


def test_settings_validate_and_build_a_budget() -> None:
    """RetryBudgetSettings is frozen and validated; from_settings and the constructor agree."""
    settings = RetryBudgetSettings()
    assert (settings.budget_percent, settings.min_retry_concurrency, settings.window) == (20.0, 3, 10.0)
    assert all(f.description for f in RetryBudgetSettings.model_fields.values())
    with pytest.raises(ValidationError):
        RetryBudgetSettings(budget_percent=150.0)
    with pytest.raises(ValidationError):
        RetryBudget(window=0.5)
    with pytest.raises(ValidationError):
        RetryBudgetSettings(extra=1)  # type: ignore[call-arg]
    budget = RetryBudget.from_settings(RetryBudgetSettings(min_retry_concurrency=1), FakeClock())
    assert budget.min_retry_concurrency == 1


# -- property: the budget against a reference model --------------------------------------------------


@dataclass
class ModelBudget:
    percent: float
    floor: int
    seconds: int
    events: list[tuple[int, str]] = field(default_factory=list)
    active: int = 0

    def in_window(self, now: float, kind: str) -> int:
        return sum(1 for second, k in self.events if k == kind and second > math.floor(now) - self.seconds)

    def acquire(self, now: float) -> bool:
        retries, requests = self.in_window(now, "retry"), self.in_window(now, "request")
        if self.active < self.floor or retries < Fraction(self.percent) / 100 * requests:
            self.events.append((math.floor(now), "retry"))
            self.active += 1
            return True
        return False


class BudgetMachine(RuleBasedStateMachine):
    """Random requests, retries, completions and clock steps; the budget must match the model."""

    @initialize(
        percent=st.one_of(st.sampled_from([0.0, 10.0, 20.0, 50.0, 100.0]), st.integers(0, 100).map(float)),
        floor=st.integers(0, 4),
        window=st.sampled_from([1.0, 2.0, 2.5, 5.0]),
    )
    def setup(self, percent: float, floor: int, window: float) -> None:
        self.clock = FakeClock()
        self.budget = RetryBudget(percent, floor, window, self.clock)
        self.model = ModelBudget(percent, floor, math.ceil(window))
        self.refused = 0

    @rule()
    def request(self) -> None:
        self.budget.record_request()
        self.model.events.append((math.floor(self.clock.now), "request"))

    @rule()
    def retry(self) -> None:
        active_before = self.budget.active_retries
        granted = self.budget.try_acquire_retry()
        assert granted == self.model.acquire(self.clock.now)
        self.refused += not granted
        if granted and active_before >= self.budget.min_retry_concurrency:
            # Beyond the floor, a grant keeps retries within budget_percent of the requests.
            limit = Fraction(self.budget.budget_percent) / 100 * self.budget.requests_in_window
            assert self.budget.retries_in_window <= math.ceil(limit)
            assert self.budget.retries_in_window - 1 < limit

    @precondition(lambda self: self.model.active > 0)
    @rule()
    def done(self) -> None:
        self.budget.retry_done()
        self.model.active -= 1

    @rule(seconds=st.sampled_from([0.25, 0.5, 1.0, 3.0]))
    def advance(self, seconds: float) -> None:
        self.clock.now += seconds

    @invariant()
    def counters_match(self) -> None:
        now = self.clock.now
        assert self.budget.requests_in_window == self.model.in_window(now, "request")
        assert self.budget.retries_in_window == self.model.in_window(now, "retry")
        assert self.budget.active_retries == self.model.active
        assert self.budget.refused_total == self.refused


TestBudgetAgainstModel = BudgetMachine.TestCase
TestBudgetAgainstModel.settings = hyp_settings(max_examples=300, stateful_step_count=60, deadline=None)
