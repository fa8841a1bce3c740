"""Gauges sampled on a timer: dead letters waiting, consumers per command queue, and readiness.

``s2s_dlq_messages`` and ``s2s_consumers`` come from RabbitMQ (passive queue declarations on a connection of the
sampler's own, so a slow or failing sample never blocks the consumers' channels); every replica reports the
same broker-wide numbers, which is why the alert rules aggregate them with ``max``. ``s2s_ready`` is what
``/readyz`` would answer now (readiness checks, not draining), so readiness flapping shows in Prometheus without
a probe log. A failed sample keeps the last values and logs once per failure streak.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import aio_pika
from aio_pika.abc import AbstractRobustConnection

from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.metrics import Metrics

__all__ = ["QueueNames", "StateSampler"]

log = get_logger("s2s.sampler")

DEFAULT_INTERVAL_S = 10.0


class QueueNames(Protocol):
    """The queues sampled: the messaging topology fits (passed in, so this layer need not know it)."""

    @property
    def dlq_name(self) -> str: ...

    @property
    def downstreams(self) -> Sequence[str]: ...

    def command_queue_name(self, downstream: str) -> str: ...


class StateSampler:
    def __init__(
        self,
        rabbitmq_urls: str | Sequence[str],
        topology: QueueNames,
        metrics: Metrics,
        is_ready: Callable[[], Awaitable[bool]],
        interval: float = DEFAULT_INTERVAL_S,
        connection_class: type[aio_pika.RobustConnection] = aio_pika.RobustConnection,
    ) -> None:
        """``rabbitmq_urls``: the nodes of a cluster (or one URL); a failed connect moves on to the next node for
        the next sample. ``connection_class``: the messaging layer's failover connection, so that an established
        connection moves through the nodes too."""
        self._urls = [rabbitmq_urls] if isinstance(rabbitmq_urls, str) else list(rabbitmq_urls)
        self._next_url = 0
        self._connection_class = connection_class
        self._topology = topology
        self._metrics = metrics
        self._is_ready = is_ready
        self.interval = interval
        self._connection: AbstractRobustConnection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing = False
        self._lock = asyncio.Lock()  # one sample at a time: a test or a caller may sample besides the timer

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="s2s-state-sampler")

    async def stop(self) -> None:
        self._metrics.ready.set(0)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._connection is not None:
            with contextlib.suppress(Exception):
                await self._connection.close()
            self._connection = None

    async def sample_once(self) -> None:
        """One round: readiness first (needs no broker), then the queue figures."""
        async with self._lock:
            await self._sample()

    async def _sample(self) -> None:
        try:
            ready = await self._is_ready()
        except Exception:
            ready = False
        self._metrics.ready.set(1 if ready else 0)
        if self._connection is None:
            # Kept before connecting, so a stop() that cancels us mid-connect still closes it.
            url = self._urls[self._next_url]
            connection = self._connection_class(aio_pika.connection.make_url(url))
            self._connection = connection
            try:
                await connection.connect(timeout=5)
            except BaseException:
                self._connection = None
                self._next_url = (self._next_url + 1) % len(self._urls)
                with contextlib.suppress(Exception):
                    await connection.close()
                raise
        channel = await self._connection.channel()
        try:
            dlq = await channel.declare_queue(self._topology.dlq_name, passive=True)
            self._metrics.dlq_messages.set(dlq.declaration_result.message_count or 0)
            for downstream in self._topology.downstreams:
                name = self._topology.command_queue_name(downstream)
                queue = await channel.declare_queue(name, passive=True)
                self._metrics.consumers.labels(name).set(queue.declaration_result.consumer_count or 0)
        finally:
            if not channel.is_closed:
                await channel.close()

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self.sample_once(), timeout=max(1.0, self.interval))
            except Exception as exc:
                if not self._failing:
                    log.warning("sampler.failed", error=f"{type(exc).__name__}: {exc}")
                self._failing = True
            else:
                if self._failing:
                    log.info("sampler.recovered")
                self._failing = False
            await asyncio.sleep(self.interval)
