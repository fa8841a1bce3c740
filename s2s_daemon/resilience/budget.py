"""An Envoy-style retry budget: retries may add at most a fraction of the normal traffic.

A retry is allowed when fewer than ``min_retry_concurrency`` retries are active (the floor that keeps
retries possible at low traffic), or when the retries of the sliding window stay below ``budget_percent``
of the window's requests (first attempts). A granted retry counts in the window at once and stays active
until ``retry_done()``. So during an outage the extra load is bounded by the floor plus the percentage,
however many attempts the retry policy would like.

The window is ``window`` seconds rounded up to whole seconds, kept as 1-second buckets on an injectable
clock. Not thread-safe; use it from one event loop.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from s2s_daemon.settings import RetryBudgetSettings

__all__ = ["BudgetSnapshot", "RetryBudget"]


@dataclass(frozen=True, slots=True)
class BudgetSnapshot:
    requests_in_window: int
    retries_in_window: int
    active_retries: int
    granted_total: int
    refused_total: int


class RetryBudget:
    """Counts requests and retries over a sliding window and decides whether one more retry may go."""

    def __init__(
        self,
        budget_percent: float = 20.0,
        min_retry_concurrency: int = 3,
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # Validated through the settings model so a bad value fails the same way from code and config.
        settings = RetryBudgetSettings(
            budget_percent=budget_percent, min_retry_concurrency=min_retry_concurrency, window=window
        )
        self.budget_percent = settings.budget_percent
        self.min_retry_concurrency = settings.min_retry_concurrency
        self._seconds = math.ceil(settings.window)
        self._clock = clock
        # [epoch second, requests, retries], oldest first
        self._buckets: deque[list[int]] = deque()
        self._requests = 0
        self._retries = 0
        self.active_retries = 0
        self.granted_total = 0
        self.refused_total = 0

    @classmethod
    def from_settings(cls, settings: RetryBudgetSettings, clock: Callable[[], float] = time.monotonic) -> RetryBudget:
        return cls(settings.budget_percent, settings.min_retry_concurrency, settings.window, clock)

    def record_request(self) -> None:
        """Count one first attempt (never a retry)."""
        self._bucket()[1] += 1
        self._requests += 1

    def try_acquire_retry(self) -> bool:
        """True if a retry may go now; then it counts as active until ``retry_done()``."""
        self._expire(math.floor(self._clock()))
        # Integer-friendly form of retries < budget_percent / 100 * requests (no float rounding at the edge).
        if self.active_retries < self.min_retry_concurrency or self._retries * 100 < (
            self.budget_percent * self._requests
        ):
            self._bucket()[2] += 1
            self._retries += 1
            self.active_retries += 1
            self.granted_total += 1
            return True
        self.refused_total += 1
        return False

    def retry_done(self) -> None:
        """A granted retry has finished (whatever its outcome)."""
        if self.active_retries <= 0:
            raise RuntimeError("retry_done() without a granted retry")
        self.active_retries -= 1

    @property
    def requests_in_window(self) -> int:
        self._expire(math.floor(self._clock()))
        return self._requests

    @property
    def retries_in_window(self) -> int:
        self._expire(math.floor(self._clock()))
        return self._retries

    def snapshot(self) -> BudgetSnapshot:
        return BudgetSnapshot(
            self.requests_in_window,
            self.retries_in_window,
            self.active_retries,
            self.granted_total,
            self.refused_total,
        )

    def _expire(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self._seconds:
            _, requests, retries = self._buckets.popleft()
            self._requests -= requests
            self._retries -= retries

    def _bucket(self) -> list[int]:
        second = math.floor(self._clock())
        self._expire(second)
        # A clock that steps back lands in the newest bucket rather than reordering the window.
        if not self._buckets or self._buckets[-1][0] < second:
            self._buckets.append([second, 0, 0])
        return self._buckets[-1]
