"""The one backoff policy: geometric ceilings with full jitter, or a fixed ladder."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2s_daemon.resilience.backoff import Backoff


class Top(random.Random):
    def uniform(self, a: float, b: float) -> float:
        return b


def test_the_relays_publish_backoff_keeps_its_old_ceilings() -> None:
    """0.4 s doubling to 60 s: the ceilings the relay used (0.2 * 2**attempts, capped at 60 s)."""
    backoff = Backoff.exponential(initial=0.4, multiplier=2.0, max_delay=60.0)
    assert [backoff.wait(n, Top()) for n in range(1, 11)] == [min(60.0, 0.2 * 2**n) for n in range(1, 11)]


@given(failures=st.integers(1, 5000), rng=st.randoms(use_true_random=False))
def test_full_jitter_stays_below_the_ceiling(failures: int, rng: random.Random) -> None:
    """A draw is in [0, ceiling], even where the geometric ceiling overflows."""
    backoff = Backoff.exponential(0.1, 10.0, 30.0)
    assert 0.0 <= backoff.wait(failures, rng) <= backoff.ceiling(failures) <= 30.0


def test_a_ladder_is_exact_and_repeats_its_last_step() -> None:
    """No jitter on a ladder: step n after n failures, the last one after that."""
    ladder = Backoff.ladder((1, 2, 5))
    assert [ladder.wait(n) for n in range(1, 6)] == [1, 2, 5, 5, 5]
    with pytest.raises(ValueError, match="1-based"):
        ladder.wait(0)
    with pytest.raises(ValueError, match="at least one step"):
        Backoff.ladder(())
