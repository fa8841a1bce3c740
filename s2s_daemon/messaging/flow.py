"""Breaker-aware consumption: while a downstream's breaker is OPEN its command consumer is paused.

Messages wait in RabbitMQ instead of being burnt into the DLQ. After the open wait the consumer resumes with
a prefetch of ``permitted_half_open_calls`` (the probes); when the breaker closes, full prefetch returns. If
the probes fail, the breaker re-opens and the consumer pauses again. Other downstreams are unaffected: each
has its own queue, channel and gate.

Messages the client had already prefetched when the consumer paused still reach the handler; the breaker
refuses them and the pipeline parks them in a delay queue (never the DLQ).

A dependency every command needs (Redis, for the idempotency claim) can hold all gates too: while it is
unreachable no consumer takes messages (they would only be parked in delay queues and come back), and a probe
releases the gates when it answers again (``DependencyHold``). A gate consumes only with no hold and a breaker
that allows it.

FastStream 0.7 has no public pause/resume for a subscriber (its ``stop()`` leaves later deliveries unacked
on the channel), so this module cancels and re-creates the AMQP consumer on the subscriber's own aio-pika
queue object. Those two private attributes are touched here and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.observability.probes import ping_check
from s2s_daemon.resilience.breaker import BreakerState, CircuitBreaker, Transition

log = get_logger("s2s.flow")


class ConsumerGate:
    def __init__(
        self, downstream: str, subscriber: Any, breaker: CircuitBreaker, prefetch: int, metrics: Metrics
    ) -> None:
        self._downstream = downstream
        self._subscriber = subscriber
        self._breaker = breaker
        self._prefetch = prefetch
        self._probes = breaker.settings.permitted_half_open_calls
        self._metrics = metrics
        self._lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[None]] = set()
        self._resume: asyncio.Task[None] | None = None
        self._holds: set[str] = set()
        self.paused = False

    def on_transition(self, transition: Transition) -> None:
        """Breaker listener (called synchronously from inside a handler): act in a task of its own."""
        task = asyncio.get_running_loop().create_task(self._apply(transition.to_state))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def close(self) -> None:
        for task in [*self._tasks, *([self._resume] if self._resume else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _apply(self, state: BreakerState) -> None:
        try:
            async with self._lock:
                if state is BreakerState.OPEN:
                    await self._pause()
                    self._schedule_resume(self._breaker.seconds_until_half_open())
                elif state is BreakerState.CLOSED and not self._holds:
                    await self._set_prefetch(self._prefetch)
                    await self._consume()
        except Exception:
            log.warning("flow.apply_failed", downstream=self._downstream, state=state.value, exc_info=True)

    def _schedule_resume(self, delay: float) -> None:
        if self._resume is not None and not self._resume.done():
            self._resume.cancel()
        self._resume = asyncio.get_running_loop().create_task(self._resume_for_probes(delay))

    async def _resume_for_probes(self, delay: float) -> None:
        await asyncio.sleep(delay)
        async with self._lock:
            if self._breaker.state is BreakerState.CLOSED or self._holds:
                return  # a release resumes (and schedules the probes) once the holds are gone
            try:
                await self._set_prefetch(self._probes)
                await self._consume()
            except Exception:
                log.warning("flow.resume_failed", downstream=self._downstream, exc_info=True)
                self._schedule_resume(1.0)
                return
            log.info("flow.resumed_for_probes", downstream=self._downstream, prefetch=self._probes)

    async def hold(self, reason: str) -> None:
        """Pause for ``reason`` besides the breaker; consumption returns when every hold is released."""
        async with self._lock:
            self._holds.add(reason)
            await self._pause()

    async def release(self, reason: str) -> None:
        async with self._lock:
            self._holds.discard(reason)
            if self._holds:
                return
            if self._breaker.state is BreakerState.CLOSED:
                await self._set_prefetch(self._prefetch)
            elif self._breaker.seconds_until_half_open() > 0:
                self._schedule_resume(self._breaker.seconds_until_half_open())
                return
            else:
                await self._set_prefetch(self._probes)
            await self._consume()
            log.info("flow.released", downstream=self._downstream, reason=reason)

    async def _pause(self) -> None:
        queue, tag = self._subscriber._queue_obj, self._subscriber._consumer_tag
        if queue is None or tag is None:
            return
        self._subscriber._consumer_tag = None
        await queue.cancel(tag)
        self.paused = True
        self._metrics.consumers_paused.labels(self._downstream).set(1)
        log.warning("flow.paused", downstream=self._downstream)

    async def _consume(self) -> None:
        queue = self._subscriber._queue_obj
        if queue is None or self._subscriber._consumer_tag is not None:
            return
        self._subscriber._consumer_tag = await queue.consume(
            self._subscriber.consume, arguments=self._subscriber.consume_args
        )
        self.paused = False
        self._metrics.consumers_paused.labels(self._downstream).set(0)

    async def _set_prefetch(self, count: int) -> None:
        queue = self._subscriber._queue_obj
        if queue is not None:
            await queue.channel.set_qos(prefetch_count=count)


class DependencyHold:
    """Holds every gate while ``name`` is unreachable: ``report_down()`` (a handler saw it fail) pauses them at
    once, then ``probe`` is pinged every ``interval`` seconds (``ping_check``: a slow ping is abandoned, not
    cancelled) until it answers, and the gates are released. ``gates`` is read when a hold begins, so it may
    be filled after construction (the daemon's gates exist only once their subscribers do)."""

    def __init__(
        self, name: str, gates: Mapping[str, ConsumerGate], probe: Callable[[], Awaitable[Any]], interval: float = 0.5
    ) -> None:
        self.name = name
        self._gates = gates
        self._probe = probe
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    @property
    def holding(self) -> bool:
        return self._task is not None and not self._task.done()

    def report_down(self) -> None:
        if not self.holding:
            self._task = asyncio.get_running_loop().create_task(self._run(), name=f"s2s-hold-{self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    async def _run(self) -> None:
        gates = list(self._gates.values())
        for gate in gates:
            await gate.hold(self.name)
        log.warning("flow.dependency_down", dependency=self.name, consumers_paused=len(gates))
        began = time.monotonic()
        while True:
            await asyncio.sleep(self._interval)
            if (await ping_check(self._probe, max(1.0, 2 * self._interval))).status == "pass":
                break
        for gate in gates:
            await gate.release(self.name)
        log.info("flow.dependency_back", dependency=self.name, paused_s=round(time.monotonic() - began, 2))
