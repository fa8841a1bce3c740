"""Breaker verdicts shared through Redis: enough distinct replicas open everyone; one alone does not."""

from __future__ import annotations

import uuid

import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from s2s_daemon.resilience.breaker import BreakerState, CircuitBreaker
from s2s_daemon.resilience.shared import SharedBreakerState
from s2s_daemon.settings import BreakerSettings

pytestmark = pytest.mark.integration


def _replica(redis: Redis, prefix: str, owner: str) -> tuple[CircuitBreaker, SharedBreakerState]:
    breaker = CircuitBreaker("service-a", BreakerSettings(wait_in_open=30.0, shared=True))
    return breaker, SharedBreakerState(redis, prefix, "service-a", breaker, owner, min_reporters=2)


async def test_one_bad_replica_does_not_trip_the_others_two_do() -> None:
    """One replica reporting OPEN leaves the rest closed; a second distinct reporter opens every replica."""
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    redis = Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        (a, sa), (b, sb), (c, sc) = (_replica(redis, prefix, o) for o in ("a", "b", "c"))
        a.force_open()
        for shared in (sa, sb, sc):
            await shared.sync_once()
        assert (a.state, b.state, c.state) == (BreakerState.OPEN, BreakerState.CLOSED, BreakerState.CLOSED)
        assert sc.reporters == 1

        b.force_open()
        await sb.sync_once()
        await sc.sync_once()
        assert c.state is BreakerState.OPEN
        assert sc.reporters >= 2
    finally:
        await redis.delete(f"{prefix}breaker:service-a")
        await redis.aclose()


async def test_redis_down_leaves_the_local_breaker_in_charge(unused_port: int) -> None:
    """With Redis unreachable a sync fails loudly to the poller and the local breaker keeps working."""
    redis = Redis.from_url(f"redis://127.0.0.1:{unused_port}/0", socket_connect_timeout=0.5)
    breaker, shared = _replica(redis, "x:", "a")
    try:
        with pytest.raises((RedisError, OSError)):
            await shared.sync_once()
        assert breaker.try_acquire() is not None
        assert breaker.state is BreakerState.CLOSED
    finally:
        await redis.aclose()
