"""The idempotency store's Redis calls of one loop turn share one pipeline, and each caller gets its own answer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from redis.asyncio import Redis

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.idempotency import ClaimState, IdempotencyStore
from tests.privateredis import PrivateRedis, private_redis

pytestmark = pytest.mark.integration

CLIENT_NAME = "s2s-store-test"


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[PrivateRedis]:
    with private_redis(tmp_path / "redis") as redis_server:
        yield redis_server


@pytest.fixture
async def redis(server: PrivateRedis) -> AsyncIterator[Redis]:
    client = Redis.from_url(server.url, client_name=CLIENT_NAME)
    yield client
    await client.aclose()


async def _connections(redis: Redis) -> int:
    clients = await redis.client_list()
    return sum(1 for client in clients if client.get("name") == CLIENT_NAME)


@pytest.mark.timeout(60)
async def test_concurrent_claims_share_one_connection_and_get_their_own_answers(redis: Redis) -> None:
    """Twenty claims in one loop turn: one connection (one pipeline) serves them all; a fresh key is claimed,
    our own key again is ours, a key done before is done with its fingerprint, a key held elsewhere in flight;
    then the completions, also together, turn every claimed key into done."""
    store = IdempotencyStore(redis, "t:", lease_ms=30_000, done_ttl_ms=60_000)
    await redis.set("t:ds:done-before", "d|fp-old")
    await redis.set("t:ds:elsewhere", "f|other-owner|fp-x", px=30_000)
    keys = [f"k{i}" for i in range(17)]

    claims = await asyncio.gather(
        *(store.claim("ds", key, "owner-1", "fp") for key in keys),
        store.claim("ds", "k0", "owner-1", "fp"),
        store.claim("ds", "done-before", "owner-1", "fp"),
        store.claim("ds", "elsewhere", "owner-1", "fp"),
    )

    assert await _connections(redis) == 1, "the concurrent claims went out on one connection"
    assert [c.state for c in claims[:17]] == [ClaimState.CLAIMED] * 17
    assert claims[17].state is ClaimState.OURS
    assert (claims[18].state, claims[18].fingerprint) == (ClaimState.DONE, "fp-old")
    assert (claims[19].state, claims[19].fingerprint) == (ClaimState.IN_FLIGHT, "fp-x")
    tokens = [c.token for c in claims[:17]]
    assert all(token is not None for token in tokens)
    done = await asyncio.gather(*(store.complete("ds", k, t or "", "fp") for k, t in zip(keys, tokens, strict=True)))
    assert all(done)
    assert await redis.get("t:ds:k5") == b"d|fp"
    assert await _connections(redis) == 1


@pytest.mark.timeout(60)
async def test_a_redis_that_forgot_the_scripts_is_taught_them_again(redis: Redis) -> None:
    """After SCRIPT FLUSH (as after a restart), the next claims load the scripts and are answered."""
    store = IdempotencyStore(redis, "t:", lease_ms=30_000, done_ttl_ms=60_000)
    assert (await store.claim("ds", "before", "o", "fp")).state is ClaimState.CLAIMED
    await redis.script_flush()
    claims = await asyncio.gather(store.claim("ds", "a", "o", "fp"), store.claim("ds", "before", "o", "fp"))
    assert [c.state for c in claims] == [ClaimState.CLAIMED, ClaimState.OURS]


@pytest.mark.timeout(60)
async def test_an_unreachable_redis_fails_every_caller_of_the_batch(server: PrivateRedis, redis: Redis) -> None:
    """Redis gone: each concurrent claim raises DependencyUnavailable (the pipeline fails closed)."""
    store = IdempotencyStore(redis, "t:", lease_ms=30_000, done_ttl_ms=60_000)
    server.kill()
    results = await asyncio.gather(*(store.claim("ds", f"k{i}", "o", "fp") for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, DependencyUnavailable) for r in results), results
