"""Breaker state shared across replicas through Redis (opt-in: ``breaker.shared: true``).

Each replica reports its own verdict: while its local breaker is OPEN it keeps its owner id in a Redis
sorted set per downstream, scored with the time its report expires (``wait_in_open`` from now, refreshed
every poll). Every replica polls the set; when at least ``shared_min_reporters`` *distinct* replicas report
OPEN, a replica whose breaker is still CLOSED opens too (its consumer pauses, probes follow as usual). One
sick replica (a bad network path, a broken pod) therefore never trips the others: it needs company.

Redis unreachable: nothing is shared and each replica's local breaker decides alone (the fallback); a
poll error is logged once per outage.
"""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis
from redis.exceptions import RedisError

from s2s_daemon.clock import now_ms
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.resilience.breaker import BreakerState, CircuitBreaker

log = get_logger("s2s.breaker.shared")

_REPORT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
else
  redis.call('ZREM', KEYS[1], ARGV[4])
end
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return redis.call('ZCARD', KEYS[1])
"""


class SharedBreakerState:
    def __init__(
        self,
        redis: Redis,
        key_prefix: str,
        downstream: str,
        breaker: CircuitBreaker,
        owner: str,
        *,
        min_reporters: int,
        poll_interval: float = 1.0,
    ) -> None:
        self._redis = redis
        self._key = f"{key_prefix}breaker:{downstream}"
        self._downstream = downstream
        self._breaker = breaker
        self._owner = owner
        self._min_reporters = min_reporters
        self._poll_interval = poll_interval
        self._script = redis.register_script(_REPORT)
        self._task: asyncio.Task[None] | None = None
        self._healthy = True
        self.reporters = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"s2s-shared-breaker-{self._downstream}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        with contextlib.suppress(RedisError, OSError):
            await self._report(False)

    async def sync_once(self) -> None:
        """Report our verdict, read everyone's, and open locally when enough distinct replicas say OPEN."""
        self.reporters = await self._report(self._breaker.state is BreakerState.OPEN)
        if self.reporters >= self._min_reporters and self._breaker.state is BreakerState.CLOSED:
            log.warning("breaker.shared_open", downstream=self._downstream, reporters=self.reporters, owner=self._owner)
            self._breaker.force_open()

    async def _report(self, is_open: bool) -> int:
        now = now_ms()
        ttl_ms = int(self._breaker.settings.wait_in_open * 1000) + int(self._poll_interval * 2000)
        count = await self._script(
            keys=[self._key], args=[now, now + ttl_ms, "1" if is_open else "0", self._owner, ttl_ms * 2]
        )
        return int(count)

    async def _run(self) -> None:
        while True:
            try:
                await self.sync_once()
                if not self._healthy:
                    log.info("breaker.shared_restored", downstream=self._downstream)
                self._healthy = True
            except (RedisError, OSError) as exc:
                if self._healthy:
                    log.warning("breaker.shared_unavailable", downstream=self._downstream, error=str(exc))
                self._healthy = False
            await asyncio.sleep(self._poll_interval)
