"""The one backoff policy: how long to wait after ``n`` failures before trying again.

Used for in-process retries and retry-delayed redeliveries (``retry``, ``client``), for the outbox relay's
publish retries, and for the redelivery ladder of the command pipeline. A policy is a ceiling per failure
count, grown geometrically (``initial * multiplier**(n-1)``, capped at ``max_delay``) or read from a fixed
ladder of ``steps`` (the last step repeats), and a draw below it: full jitter (uniform in ``[0, ceiling]``,
so clients that failed together do not retry together) or the ceiling itself when ``jitter`` is off (the
delay-queue ladder, whose rungs are whole queues).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from s2s_daemon.settings import RetrySettings

__all__ = ["Backoff"]

_RNG = random.Random()


@dataclass(frozen=True, slots=True)
class Backoff:
    initial: float = 0.1
    multiplier: float = 2.0
    max_delay: float = 10.0
    steps: tuple[float, ...] = ()
    jitter: bool = True

    @classmethod
    def exponential(cls, initial: float, multiplier: float, max_delay: float) -> Backoff:
        """Full jitter below ``min(max_delay, initial * multiplier**(n-1))``."""
        return cls(initial, multiplier, max_delay)

    @classmethod
    def for_retries(cls, settings: RetrySettings) -> Backoff:
        """A downstream's retry policy (``downstreams.<name>.retry``): its fixed ``schedule`` when it has one."""
        if settings.schedule:
            return cls.ladder(settings.schedule)
        return cls(settings.initial_delay, settings.multiplier, settings.max_delay)

    @classmethod
    def ladder(cls, steps: Sequence[float]) -> Backoff:
        """Exactly ``steps[n-1]`` after ``n`` failures, the last step once they run out; no jitter."""
        if not steps:
            raise ValueError("a ladder needs at least one step")
        return cls(steps=tuple(steps), jitter=False)

    def ceiling(self, failures: int) -> float:
        """The longest wait after ``failures`` failures (1-based)."""
        if failures < 1:
            raise ValueError(f"failures is 1-based, got {failures}")
        if self.steps:
            return self.steps[min(failures, len(self.steps)) - 1]
        try:
            return min(self.max_delay, self.initial * self.multiplier ** (failures - 1))
        except OverflowError:
            return self.max_delay

    def wait(self, failures: int, rng: random.Random = _RNG) -> float:
        """The wait after ``failures`` failures (1-based): a full-jitter draw below the ceiling, or the ceiling."""
        cap = self.ceiling(failures)
        return rng.uniform(0.0, cap) if self.jitter else cap
