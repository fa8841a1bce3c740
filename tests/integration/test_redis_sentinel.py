"""Redis through Sentinel: the daemon's one Redis factory finds the primary through the sentinels and follows a
failover. Private redis-server processes (a primary, a replica, three sentinels) on free ports."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from s2s_daemon.errors import ConfigError
from s2s_daemon.idempotency import RedisConnector
from s2s_daemon.settings import load_settings
from tests.harness.chaos.processes import stop_all
from tests.harness.chaos.sentinel import PRIMARY_NAME, PrivateSentinels

pytestmark = pytest.mark.integration


@pytest.fixture
def sentinels(tmp_path: Path) -> Iterator[PrivateSentinels]:
    group = PrivateSentinels(tmp_path / "redis")
    try:
        yield group.start()
    finally:
        group.stop()
        stop_all()


async def test_client_follows_the_primary_through_a_failover(sentinels: PrivateSentinels) -> None:
    """Writes go to the primary the sentinels name; after it is killed they go to the promoted replica."""
    settings = load_settings(
        redis_url="redis://127.0.0.1:1/0",  # host and port unused with Sentinel
        redis_sentinel={"addresses": sentinels.addresses, "primary_name": PRIMARY_NAME},
    )
    connector = RedisConnector(settings)
    assert connector.describe() == f"sentinel primary {PRIMARY_NAME!r} via {','.join(sentinels.addresses)}"
    client = connector.client()
    try:
        await client.set("k", "before")
        assert (await client.info("server"))["tcp_port"] == sentinels.primary.port
        sentinels.kill_primary()
        await asyncio.to_thread(sentinels.wait_failover, 60)
        for _ in range(100):  # the pool's old connections fail once, then it asks the sentinels again
            with contextlib.suppress(RedisConnectionError, RedisTimeoutError, ReadOnlyError):
                await client.set("k", "after")
                break
            await asyncio.sleep(0.2)
        assert await client.get("k") == b"after"
        assert (await client.info("server"))["tcp_port"] == sentinels.replica.port
    finally:
        await connector.aclose()


def test_bad_sentinel_settings_are_named() -> None:
    """A sentinel address that is not host:port, or a missing primary name, stops the start naming the key."""
    with pytest.raises(ConfigError, match=r"redis_sentinel\.addresses: Value error, \[1\] 'nowhere' is not host:port"):
        load_settings(redis_sentinel={"addresses": ["a:26379", "nowhere"], "primary_name": "m"})
    with pytest.raises(ConfigError, match=r"redis_sentinel\.primary_name: Field required"):
        load_settings(redis_sentinel={"addresses": ["a:26379"]})
