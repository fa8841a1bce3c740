"""Commands accepted over HTTP, remembered in Redis until their outcome is in the outbox.

The consumer's own records (``store.py``) only exist once a delivery is being handled; between the sidecar's
publish and that moment a second request with the same ``Idempotency-Key`` must still be told "in flight"
(409) or "conflict" (422, other payload) instead of publishing again. One string key per submission:
``<prefix>@http:<downstream>:<key>`` = payload fingerprint. It is taken atomically before the publish with a
short lease (a crash before the publish frees the key soon), stretched to the done TTL once the broker
confirmed, and dropped when the publish failed. The ``@`` keeps these keys apart from the consumer's
``<prefix><downstream>:<key>`` (downstream names cannot contain it).

``take`` reads the consumer's record of the key first, so a key that arrived over AMQP and is in flight or
done there is reported too (with its fingerprint) instead of being published again. The read and the take are
two steps, not one script, so that the two keys may live in different Redis Cluster slots; a consumer record
appearing between them is harmless: the copy published then meets it and is deduplicated by the consumer.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.idempotency import _records

__all__ = ["Existing", "Recorded", "SubmissionLedger"]


class Recorded(StrEnum):
    """Who already knows the key, when ``take`` did not get it."""

    SUBMITTED = "submitted"  # accepted over HTTP, no consumer record yet
    IN_FLIGHT = "in-flight"  # a consumer holds it
    DONE = "done"  # a consumer completed it


@dataclass(frozen=True, slots=True)
class Existing:
    state: Recorded
    fingerprint: str


class SubmissionLedger:
    def __init__(self, redis: Redis, prefix: str, lease_ms: int, ttl_ms: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._lease_ms = lease_ms
        self._ttl_ms = ttl_ms
        self._take = redis.register_script(_records.TAKE)
        self._stretch = redis.register_script(_records.IF_EQUAL_PEXPIRE)
        self._drop = redis.register_script(_records.IF_EQUAL_DEL)

    def redis_key(self, downstream: str, key: str) -> str:
        return f"{self._prefix}@http:{downstream}:{key}"

    def consumer_key(self, downstream: str, key: str) -> str:
        return f"{self._prefix}{downstream}:{key}"

    async def take(self, downstream: str, key: str, fingerprint: str) -> Existing | None:
        """None when this call took the key; otherwise who has it, with the payload fingerprint recorded."""
        try:
            consumer = await self._redis.get(self.consumer_key(downstream, key))
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc
        if consumer is not None:
            record = _records.parse_consumer_record(consumer)
            return Existing(Recorded.DONE if record.done else Recorded.IN_FLIGHT, record.fingerprint)
        found = await self._run(self._take, downstream, key, fingerprint, self._lease_ms)
        return None if found is None else Existing(Recorded.SUBMITTED, _records.text(found))

    async def confirm(self, downstream: str, key: str, fingerprint: str) -> None:
        """The command is in the broker: remember the key for the full TTL."""
        await self._run(self._stretch, downstream, key, fingerprint, self._ttl_ms)

    async def release(self, downstream: str, key: str, fingerprint: str) -> None:
        """The publish failed: free the key at once."""
        await self._run(self._drop, downstream, key, fingerprint)

    async def get(self, downstream: str, key: str) -> str | None:
        try:
            found = await self._redis.get(self.redis_key(downstream, key))
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc
        return None if found is None else _records.text(found)

    async def _run(self, script: Any, downstream: str, key: str, *args: Any) -> Any:
        return await _records.run_script(script, self.redis_key(downstream, key), *args)
