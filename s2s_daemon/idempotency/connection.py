"""The one place the daemon's Redis client is built: straight from ``redis_url``, or through Redis Sentinel.

Every Redis user (idempotency records, shared breaker state, the stale-read cache, the command API's
submissions) gets the client built here, injected by the composition root.

With Sentinel, redis-py's ``redis.asyncio.sentinel`` asks the sentinels for the primary's address on every new
connection; after a failover the old primary's connections fail (closed, or ``READONLY`` once it is demoted
to a replica), the pool reconnects and finds the new primary. Replication is asynchronous: writes the old
primary acknowledged but had not replicated are lost, idempotency records included, and the outbox backstop
answers for those keys (see docs/guarantees.md). Redis Cluster is not supported: the Lua scripts touch
keys that would sit in different hash slots, and it was never tested here.
"""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.connection import parse_url
from redis.asyncio.sentinel import Sentinel

from s2s_daemon.observability.logging import redact_url
from s2s_daemon.settings import Settings

__all__ = ["RedisConnector"]

# a Redis that hangs must not hold a command slot for long; a dead one is noticed by the health check
_CLIENT_OPTIONS: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0, "health_check_interval": 15}


class RedisConnector:
    """Builds the daemon's Redis client from the settings and closes what it built."""

    def __init__(self, settings: Settings) -> None:
        self._url = settings.redis_url.get_secret_value()
        self._sentinel_settings = settings.redis_sentinel
        self._sentinel: Sentinel | None = None
        self._clients: list[Redis] = []

    def describe(self) -> str:
        """Where Redis is, for logs and errors (credentials masked)."""
        s = self._sentinel_settings
        if s is None:
            return redact_url(self._url)
        return f"sentinel primary {s.primary_name!r} via {','.join(s.addresses)}"

    def client(self) -> Redis:
        if self._sentinel_settings is None:
            client = Redis.from_url(self._url, **_CLIENT_OPTIONS)
        else:
            client = self._sentinel_client()
        self._clients.append(client)
        return client

    def _sentinel_client(self) -> Redis:
        s = self._sentinel_settings
        assert s is not None
        if self._sentinel is None:
            sentinel_options: dict[str, Any] = {"socket_timeout": 2.0, "socket_connect_timeout": 2.0}
            if s.username is not None:
                sentinel_options["username"] = s.username
            if s.password is not None:
                sentinel_options["password"] = s.password.get_secret_value()
            self._sentinel = Sentinel(  # type: ignore[no-untyped-call]  # redis-py leaves __init__ unannotated
                s.hosts, min_other_sentinels=s.min_other_sentinels, sentinel_kwargs=sentinel_options
            )
        # the primary's credentials, database and TLS come from redis_url; its host and port from the sentinels
        options: dict[str, Any] = {k: v for k, v in parse_url(self._url).items() if k not in ("host", "port", "path")}
        if options.pop("connection_class", None) is not None:  # rediss://: the sentinel pool picks its SSL class
            options["ssl"] = True
        client: Redis = self._sentinel.master_for(s.primary_name, redis_class=Redis, **options, **_CLIENT_OPTIONS)
        return client

    async def aclose(self) -> None:
        for client in self._clients:
            await client.aclose()
        self._clients.clear()
        if self._sentinel is not None:
            await self._sentinel.aclose()
            self._sentinel = None
