"""Retry policy: full-jitter exponential backoff, Retry-After, deadlines, a retry budget.

``decide_retry`` is the single source of truth: a pure function of the attempt, the time spent, the
outcome and the budget, returning a ``RetryDecision``. Short waits (``<= in_process_max_wait``) are meant to
happen in-process; longer ones become delayed redeliveries through the broker, so a consumer slot is never
held for a long sleep.

``call_with_retries`` makes the first attempt itself and drives the retries with stamina (>= 25.2): its ``on=``
backoff hook may return a float, which replaces stamina's own backoff, so the hook simply asks ``decide_retry``
and returns its delay (retry now-ish) or False (stop). stamina contributes the loop, the sleep, its
instrumentation hooks and its test mode: under ``stamina.set_testing(True, attempts=n)`` nothing sleeps
(``set_testing`` also caps the attempts at ``n``, so pass at least ``settings.max_attempts``). stamina's own
attempts, timeout and backoff parameters are not used; every limit lives in ``decide_retry``.

The budget gates a retry when it runs, as Envoy does: an in-process retry takes its slot before sleeping
and holds it through the attempt; a broker-delayed retry takes its slot when it comes back
(``call_with_retries(previous_attempts=n)``). So the budget's concurrency floor counts retries actually in
flight, not messages parked in a delay queue.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Generic, Protocol, TypeVar

import stamina

from s2s_daemon.observability.logging import get_logger
from s2s_daemon.resilience.backoff import Backoff
from s2s_daemon.resilience.budget import RetryBudget
from s2s_daemon.settings import RetrySettings

__all__ = [
    "AttemptOutcome",
    "RetryDecision",
    "RetryReason",
    "RetryResult",
    "call_with_retries",
    "decide_retry",
    "outage_horizon",
]

log = get_logger("s2s.retry")


class RetryReason(StrEnum):
    """Why a decision was taken (log field / metric label)."""

    BACKOFF = "backoff"
    RETRY_AFTER = "retry-after"
    NOT_RETRYABLE = "not-retryable"
    ATTEMPTS_EXHAUSTED = "attempts-exhausted"
    MAX_ELAPSED = "max-elapsed"
    DEADLINE = "deadline"
    BUDGET = "budget"
    STOPPED = "stopped"  # stamina ended the loop itself: test mode or ``stamina.set_active(False)``


@dataclass(frozen=True, slots=True)
class RetryDecision:
    """Retry or not; if so, after ``delay`` seconds, in-process or through a delayed redelivery."""

    retry: bool
    delay: float
    in_process: bool
    reason: str


def _stop(reason: RetryReason) -> RetryDecision:
    return RetryDecision(retry=False, delay=0.0, in_process=False, reason=reason)


def decide_retry(
    attempt: int,
    elapsed: float,
    *,
    retryable: bool,
    retry_after: float | None,
    deadline_remaining: float | None,
    budget_ok: bool,
    settings: RetrySettings,
    rng: random.Random,
) -> RetryDecision:
    """Whether to retry after failed attempt ``attempt`` (1-based), ``elapsed`` seconds after the first.

    Checks in order: retryable, attempts left, the delay (backoff, or Retry-After when larger: never sooner
    than the server asked) fits in ``max_elapsed`` and ends before the deadline, then the budget. The budget
    comes last so a caller may ask with ``budget_ok=True`` and consult the budget only when a retry is due.
    """
    if not retryable:
        return _stop(RetryReason.NOT_RETRYABLE)
    if attempt >= settings.max_attempts:
        return _stop(RetryReason.ATTEMPTS_EXHAUSTED)
    delay = Backoff.for_retries(settings).wait(attempt, rng)
    reason = RetryReason.BACKOFF
    if retry_after is not None and retry_after > delay:
        delay, reason = retry_after, RetryReason.RETRY_AFTER
    if elapsed + delay > settings.max_elapsed:
        return _stop(RetryReason.MAX_ELAPSED)
    if deadline_remaining is not None and delay >= deadline_remaining:
        return _stop(RetryReason.DEADLINE)
    if not budget_ok:
        return _stop(RetryReason.BUDGET)
    return RetryDecision(retry=True, delay=delay, in_process=delay <= settings.in_process_max_wait, reason=reason)


def outage_horizon(settings: RetrySettings) -> float:
    """Seconds of a downstream outage that a command whose first attempt met its start is sure to outlive.

    On a retryable outcome a command fails only after its last attempt, or when the next wait would end past
    ``max_elapsed``. Attempt ``k`` comes no sooner than the sum of the shortest waits (``Backoff.floor``) before
    it, and the wait after it is at most its ceiling. An open breaker and the delay queues' rungs only ever wait
    longer; a ``Retry-After`` beyond what ``max_elapsed`` allows, or a caller's ``x-deadline``, end it sooner.
    With full jitter (``jitter: 1``) there is no shortest wait and the horizon is 0.
    """
    backoff = Backoff.for_retries(settings)
    horizon, attempt_at = settings.max_elapsed, 0.0
    for n in range(1, settings.max_attempts):
        # attempt n (no sooner than ``attempt_at``) is the last if its wait would end past max_elapsed
        horizon = min(horizon, max(attempt_at, settings.max_elapsed - backoff.ceiling(n)))
        attempt_at += backoff.floor(n)
    return math.floor(min(horizon, attempt_at) * 1000) / 1000  # whole milliseconds, never rounded up


class AttemptOutcome(Protocol):
    """What ``call_with_retries`` needs from an attempt's result (``client.CallOutcome`` fits)."""

    @property
    def ok(self) -> bool: ...

    @property
    def retryable(self) -> bool: ...

    @property
    def retry_after(self) -> float | None: ...


OutcomeT = TypeVar("OutcomeT", bound=AttemptOutcome)


@dataclass(frozen=True, slots=True)
class RetryResult(Generic[OutcomeT]):
    """How the retried call ended.

    ``outcome`` is the last attempt's result; None only when the budget refused a redelivered retry before
    any attempt was made. ``attempts`` counts every attempt, earlier deliveries included. ``decision`` is
    None on success; otherwise why the loop stopped. ``decision.retry and not decision.in_process`` means:
    redeliver through the broker after ``decision.delay`` seconds.
    """

    outcome: OutcomeT | None
    attempts: int
    decision: RetryDecision | None


class _Failed(Exception):  # internal signal to stamina; never escapes this module
    def __init__(self, outcome: AttemptOutcome) -> None:
        super().__init__("attempt failed")
        self.outcome = outcome


async def call_with_retries(
    attempt: Callable[[int], Awaitable[OutcomeT]],
    *,
    settings: RetrySettings,
    budget: RetryBudget | None = None,
    rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
    time_left: float | None = None,
    previous_attempts: int = 0,
    previous_elapsed: float = 0.0,
    on_retry: Callable[[int, RetryDecision], None] | None = None,
) -> RetryResult[OutcomeT]:
    """Call ``attempt(n)`` (``n`` = 1-based attempt number) and retry in-process while ``decide_retry`` says so.

    ``time_left`` is the seconds until the command's deadline; ``previous_attempts``/``previous_elapsed``
    carry the count and time of earlier deliveries of the same command. With ``previous_attempts == 0`` a
    request is recorded in the budget; otherwise the first attempt here is itself a retry and needs a budget
    slot. ``on_retry(n, decision)`` is called when an in-process retry after attempt ``n`` is scheduled
    (an exception in it is logged and ignored).
    Exceptions raised by ``attempt`` are not retried and propagate.
    """
    rng = rng if rng is not None else random.Random()
    started = clock()
    deadline = None if time_left is None else started + time_left
    number = previous_attempts
    holding = False  # a budget slot taken for the next attempt
    last: OutcomeT | None = None
    final: RetryDecision | None = None

    if budget is not None:
        if previous_attempts == 0:
            budget.record_request()
        elif budget.try_acquire_retry():
            holding = True
        else:
            return RetryResult(None, previous_attempts, _stop(RetryReason.BUDGET))

    def backoff_hook(exc: Exception) -> bool | float:
        nonlocal holding, final
        if not isinstance(exc, _Failed):
            return False
        now = clock()
        decision = decide_retry(
            number,
            previous_elapsed + (now - started),
            retryable=exc.outcome.retryable,
            retry_after=exc.outcome.retry_after,
            deadline_remaining=None if deadline is None else deadline - now,
            budget_ok=True,
            settings=settings,
            rng=rng,
        )
        if decision.retry and decision.in_process and budget is not None:
            if budget.try_acquire_retry():
                holding = True
            else:
                decision = _stop(RetryReason.BUDGET)
        final = decision
        if decision.retry and decision.in_process:
            if on_retry is not None:
                try:
                    on_retry(number, decision)
                except Exception:
                    # An observer must never change the retry (STYLE: after-hooks log and carry on).
                    log.warning("retry.hook_failed", attempt=number, exc_info=True)
            return decision.delay
        return False

    async def one_attempt() -> OutcomeT:
        nonlocal number, holding, last
        number += 1
        try:
            outcome = await attempt(number)
        finally:
            if holding and budget is not None:
                holding = False
                budget.retry_done()
        last = outcome
        if not outcome.ok:
            raise _Failed(outcome)
        return outcome

    try:
        # The first attempt runs outside stamina's loop (most calls succeed at once, and the loop costs about
        # a third of a successful call's CPU); a failed one is replayed as the loop's first try, so the loop
        # decides, sleeps and counts exactly as if it had made that attempt itself.
        try:
            return RetryResult(await one_attempt(), number, None)
        except _Failed as failed:
            replay: _Failed | None = failed
        async for try_ in stamina.retry_context(on=backoff_hook, attempts=None, timeout=None):
            with try_:
                if replay is not None:
                    first, replay = replay, None
                    raise first
                return RetryResult(await one_attempt(), number, None)
    except _Failed:
        if final is None or (final.retry and final.in_process):
            final = _stop(RetryReason.STOPPED)
        return RetryResult(last, number, final)
    finally:
        if holding and budget is not None:
            budget.retry_done()
    raise AssertionError("unreachable: stamina ends with a result or the last exception")  # pragma: no cover
