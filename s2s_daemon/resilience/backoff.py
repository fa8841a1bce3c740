"""The one backoff policy: how long to wait after ``n`` failures before trying again.

Used for in-process retries and retry-delayed redeliveries (``retry``, ``client``), for the outbox relay's
publish retries, and for the redelivery ladder of the command pipeline. A policy is a ceiling per failure
count, grown geometrically (``initial * multiplier**(n-1)``, capped at ``max_delay``) or read from a fixed
ladder of ``steps`` (the last step repeats), and a draw below it: uniform in ``[ceiling * (1 - jitter),
ceiling]``, so clients that failed together do not retry together. ``jitter=1`` is full jitter (no lower
bound), ``0`` the ceiling itself (the delay-queue ladder, whose rungs are whole queues). A downstream's retry
policy keeps a lower bound (``retry.jitter`` 0.5 by default): without one, ten attempts may all come within a
second and no retry horizon can be promised.
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
    jitter: float = 1.0  # the randomised fraction of the ceiling: 1 = full jitter, 0 = none

    @classmethod
    def exponential(cls, initial: float, multiplier: float, max_delay: float, jitter: float = 1.0) -> Backoff:
        """A draw below ``min(max_delay, initial * multiplier**(n-1))``; full jitter unless told otherwise."""
        if not 0.0 <= jitter <= 1.0:
            raise ValueError(f"jitter is a fraction in [0, 1], got {jitter}")
        return cls(initial, multiplier, max_delay, jitter=jitter)

    @classmethod
    def for_retries(cls, settings: RetrySettings) -> Backoff:
        """A downstream's retry policy (``downstreams.<name>.retry``): its fixed ``schedule`` when it has one."""
        if settings.schedule:
            return cls.ladder(settings.schedule)
        return cls.exponential(settings.initial_delay, settings.multiplier, settings.max_delay, settings.jitter)

    @classmethod
    def ladder(cls, steps: Sequence[float]) -> Backoff:
        """Exactly ``steps[n-1]`` after ``n`` failures, the last step once they run out; no jitter."""
        if not steps:
            raise ValueError("a ladder needs at least one step")
        return cls(steps=tuple(steps), jitter=0.0)

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

    def floor(self, failures: int) -> float:
        """The shortest wait after ``failures`` failures (1-based)."""
        return self.ceiling(failures) * (1.0 - self.jitter)

    def wait(self, failures: int, rng: random.Random = _RNG) -> float:
        """The wait after ``failures`` failures (1-based): a uniform draw between the floor and the ceiling."""
        cap = self.ceiling(failures)
        return rng.uniform(cap * (1.0 - self.jitter), cap) if self.jitter else cap
