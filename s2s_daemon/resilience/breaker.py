"""A circuit breaker with resilience4j semantics, driven by an injectable clock.

States: CLOSED -> OPEN -> HALF_OPEN -> CLOSED, and HALF_OPEN -> OPEN.

- CLOSED: every call is permitted and its outcome goes into a sliding window (the last ``window_size``
  calls, or the calls of the last ``window_size`` seconds in 1-second buckets). The breaker opens exactly
  when the window holds at least ``minimum_calls`` and the failure rate or the slow-call rate reaches its
  threshold (``>=``, in percent), or when the last ``consecutive_failures`` calls all failed (0: never), which
  opens it at low traffic, where the window would take minutes to hold ``minimum_calls``. A call is slow when it
  took longer than ``slow_call_duration``.
- OPEN: every call is rejected until ``wait_in_open`` seconds have passed; the next ``try_acquire`` then
  moves to HALF_OPEN (no background timer, as resilience4j without automatic transition).
- HALF_OPEN: at most ``permitted_half_open_calls`` probes are let through. Once all of them have completed,
  their failure and slow-call rates decide: both below the thresholds -> CLOSED, otherwise -> OPEN.
  A released permit (the call was not made or its outcome is ignored) frees its probe slot.

Every transition resets the window and starts a new generation: a permit taken before a transition
records nothing afterwards, so a slow call started while CLOSED can never count as a half-open probe.

The breaker decides nothing about HTTP: the caller says what a failure is (``is_failure`` is the default
mapping). It is not thread-safe; use it from one event loop.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from s2s_daemon.observability.logging import get_logger
from s2s_daemon.settings import BreakerSettings

__all__ = [
    "BreakerMetrics",
    "BreakerState",
    "CallRecord",
    "CircuitBreaker",
    "Permit",
    "Transition",
    "is_failure",
]

log = get_logger("s2s.breaker")

Clock = Callable[[], float]


class BreakerState(StrEnum):
    """Breaker states; the values are metric labels."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class CallRecord:
    """The outcome of one permitted call: did it fail, and how long did it take (seconds)."""

    failure: bool
    duration: float


@dataclass(frozen=True, slots=True)
class Transition:
    """One state change, with the rates (percent) and call count that caused it."""

    name: str
    from_state: BreakerState
    to_state: BreakerState
    failure_rate: float
    slow_rate: float
    calls: int
    at: float


@dataclass(frozen=True, slots=True)
class BreakerMetrics:
    """What the current state has seen: the window when CLOSED, the probes when HALF_OPEN."""

    state: BreakerState
    calls: int
    failures: int
    slow: int
    failure_rate: float
    slow_rate: float


def is_failure(status_code: int | None, error: str | None, settings: BreakerSettings) -> bool | None:
    """Default mapping of an HTTP outcome: True = failure, False = success, None = ignore it.

    ``error`` names a transport problem (timeout, connect error, ...): always a failure. Otherwise the
    status decides: 5xx and 408 are failures, 429 per ``count_429_as_failure`` (ignored when false), other
    4xx are the caller's fault and are ignored (they say nothing about the downstream's health).
    """
    if error is not None:
        return True
    if status_code is None:
        raise ValueError("is_failure() needs a status code or an error")
    if status_code >= 500 or status_code == 408:
        return True
    if status_code == 429:
        return True if settings.count_429_as_failure else None
    if status_code >= 400:
        return None
    return False


def _rate(part: int, whole: int) -> float:
    return part * 100.0 / whole if whole else 0.0


class _CountWindow:
    """The outcomes of the last ``size`` calls."""

    __slots__ = ("_outcomes", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._outcomes: deque[tuple[bool, bool]] = deque(maxlen=size)
        self.calls = self.failures = self.slow = 0

    def add(self, failure: bool, slow: bool, now: float) -> None:
        if len(self._outcomes) == self._outcomes.maxlen:
            old_failure, old_slow = self._outcomes[0]
            self.calls -= 1
            self.failures -= old_failure
            self.slow -= old_slow
        self._outcomes.append((failure, slow))
        self.calls += 1
        self.failures += failure
        self.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        return self.calls, self.failures, self.slow


class _TimeWindow:
    """The outcomes of the calls recorded in the last ``size`` whole seconds (1-second buckets)."""

    __slots__ = ("_buckets", "_size", "calls", "failures", "slow")

    def __init__(self, size: int) -> None:
        self._size = size
        # [epoch second, calls, failures, slow], oldest first
        self._buckets: deque[list[int]] = deque()
        self.calls = self.failures = self.slow = 0

    def _expire(self, second: int) -> None:
        while self._buckets and self._buckets[0][0] <= second - self._size:
            _, calls, failures, slow = self._buckets.popleft()
            self.calls -= calls
            self.failures -= failures
            self.slow -= slow

    def add(self, failure: bool, slow: bool, now: float) -> None:
        second = math.floor(now)
        self._expire(second)
        # A clock that steps back lands in the newest bucket rather than reordering the window.
        if not self._buckets or self._buckets[-1][0] < second:
            self._buckets.append([second, 0, 0, 0])
        bucket = self._buckets[-1]
        bucket[1] += 1
        bucket[2] += failure
        bucket[3] += slow
        self.calls += 1
        self.failures += failure
        self.slow += slow

    def totals(self, now: float) -> tuple[int, int, int]:
        self._expire(math.floor(now))
        return self.calls, self.failures, self.slow


class Permit:
    """Permission for one call. Report it once: ``record`` (or a shortcut) or ``release``; later calls
    are no-ops, so ``release()`` in a ``finally`` after ``record_*`` is safe."""

    __slots__ = ("_breaker", "_done", "_generation")

    def __init__(self, breaker: CircuitBreaker, generation: int) -> None:
        self._breaker = breaker
        self._generation = generation
        self._done = False

    @property
    def done(self) -> bool:
        return self._done

    def record(self, outcome: CallRecord) -> None:
        """Count the call's outcome in the breaker."""
        if not self._done:
            self._done = True
            self._breaker._record(self._generation, outcome)

    def record_success(self, duration: float) -> None:
        self.record(CallRecord(failure=False, duration=duration))

    def record_failure(self, duration: float) -> None:
        self.record(CallRecord(failure=True, duration=duration))

    def release(self) -> None:
        """The call was not made, or its outcome is ignored: free a half-open slot, count nothing."""
        if not self._done:
            self._done = True
            self._breaker._release(self._generation)


class CircuitBreaker:
    """One breaker (usually one per downstream); see the module docstring for the semantics."""

    def __init__(
        self,
        name: str,
        settings: BreakerSettings,
        clock: Clock = time.monotonic,
        on_transition: Callable[[Transition], None] | None = None,
    ) -> None:
        self.name = name
        self.settings = settings
        self._clock = clock
        self._on_transition = on_transition
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._opened_at = 0.0
        self._window = self._new_window()
        self._failures_in_a_row = 0
        self._probes_issued = 0
        self._probes_done = 0
        self._probe_failures = 0
        self._probe_slow = 0

    @property
    def state(self) -> BreakerState:
        """The current state. Reading it never transitions (OPEN -> HALF_OPEN happens in try_acquire)."""
        return self._state

    def try_acquire(self) -> Permit | None:
        """A permit for one call, or None when the breaker rejects it."""
        if self._state is BreakerState.OPEN:
            if self._clock() - self._opened_at < self.settings.wait_in_open:
                return None
            self._transition(BreakerState.OPEN, BreakerState.HALF_OPEN, (0, 0, 0))
        if self._state is BreakerState.HALF_OPEN:
            if self._probes_issued >= self.settings.permitted_half_open_calls:
                return None
            self._probes_issued += 1
        return Permit(self, self._generation)

    def seconds_until_half_open(self) -> float:
        """Seconds until an OPEN breaker lets probes through; 0.0 when not OPEN or the wait is over."""
        if self._state is not BreakerState.OPEN:
            return 0.0
        return max(0.0, self._opened_at + self.settings.wait_in_open - self._clock())

    def metrics_snapshot(self) -> BreakerMetrics:
        calls, failures, slow = self._totals()
        return BreakerMetrics(self._state, calls, failures, slow, _rate(failures, calls), _rate(slow, calls))

    def force_open(self) -> bool:
        """Admin: open now (the usual wait applies before probes). False if already OPEN."""
        if self._state is BreakerState.OPEN:
            return False
        self._transition(self._state, BreakerState.OPEN, self._totals())
        return True

    def force_closed(self) -> bool:
        """Admin: close now with an empty window. False if already CLOSED."""
        if self._state is BreakerState.CLOSED:
            return False
        self._transition(self._state, BreakerState.CLOSED, self._totals())
        return True

    # -- internals ---------------------------------------------------------------------------------

    def _new_window(self) -> _CountWindow | _TimeWindow:
        if self.settings.window_type == "count":
            return _CountWindow(self.settings.window_size)
        return _TimeWindow(self.settings.window_size)

    def _totals(self) -> tuple[int, int, int]:
        if self._state is BreakerState.CLOSED:
            return self._window.totals(self._clock())
        if self._state is BreakerState.HALF_OPEN:
            return self._probes_done, self._probe_failures, self._probe_slow
        return 0, 0, 0

    def _over_threshold(self, calls: int, failures: int, slow: int) -> bool:
        s = self.settings
        return _rate(failures, calls) >= s.failure_rate_threshold or _rate(slow, calls) >= s.slow_call_rate_threshold

    def _record(self, generation: int, outcome: CallRecord) -> None:
        if generation != self._generation:
            return  # taken before the last transition: that window is gone
        slow = outcome.duration > self.settings.slow_call_duration
        if self._state is BreakerState.CLOSED:
            now = self._clock()
            self._window.add(outcome.failure, slow, now)
            self._failures_in_a_row = self._failures_in_a_row + 1 if outcome.failure else 0
            totals = self._window.totals(now)
            in_a_row = self.settings.consecutive_failures
            if (totals[0] >= self.settings.minimum_calls and self._over_threshold(*totals)) or (
                in_a_row and self._failures_in_a_row >= in_a_row
            ):
                self._transition(BreakerState.CLOSED, BreakerState.OPEN, totals)
        elif self._state is BreakerState.HALF_OPEN:
            self._probes_done += 1
            self._probe_failures += outcome.failure
            self._probe_slow += slow
            if self._probes_done >= self.settings.permitted_half_open_calls:
                totals = (self._probes_done, self._probe_failures, self._probe_slow)
                target = BreakerState.OPEN if self._over_threshold(*totals) else BreakerState.CLOSED
                self._transition(BreakerState.HALF_OPEN, target, totals)

    def _release(self, generation: int) -> None:
        if generation == self._generation and self._state is BreakerState.HALF_OPEN:
            self._probes_issued -= 1

    def _transition(self, from_state: BreakerState, to_state: BreakerState, totals: tuple[int, int, int]) -> None:
        now = self._clock()
        self._state = to_state
        self._generation += 1
        self._window = self._new_window()
        self._failures_in_a_row = 0
        self._probes_issued = self._probes_done = self._probe_failures = self._probe_slow = 0
        if to_state is BreakerState.OPEN:
            self._opened_at = now
        if self._on_transition is None:
            return
        calls, failures, slow = totals
        event = Transition(self.name, from_state, to_state, _rate(failures, calls), _rate(slow, calls), calls, now)
        try:
            self._on_transition(event)
        except Exception:
            # An observer must never break the state machine (STYLE: after-hooks log and carry on).
            log.warning("breaker.transition_hook_failed", breaker=self.name, exc_info=True)
