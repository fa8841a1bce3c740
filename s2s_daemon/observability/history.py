"""The console's memory: the daemon's figures over the last minutes, in a ring sampled every few seconds.

Every ``interval`` seconds one point is appended: per downstream the attempts per second and the failed share
(differences of ``s2s_downstream_calls_total`` since the previous point), latency p50/p99 (differences of the
``s2s_downstream_call_duration_seconds`` buckets, interpolated inside a bucket as Prometheus'
``histogram_quantile`` does), the breaker state (``s2s_breaker_state``) and the command queue depth; for the
process the outbox backlog (pending + publishing) and dead documents, the publish lag p50/p99
(``s2s_outbox_publish_lag_seconds``) and the dead-letter depth. The ring holds ``retention / interval``
points (15 minutes at 5 s: 180 points, a few tens of kB), so the console works without Prometheus.

Depths and counts come from callables handed in (a passive queue declaration, an outbox count): a probe that
fails leaves a gap (``None``) in its series rather than a stale value, and the sample goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import Histogram

from s2s_daemon.clock import now_ms
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.metrics import Metrics

__all__ = ["BREAKER_STATES", "DownstreamPoint", "HistoryPoint", "MetricsHistory", "quantile"]

log = get_logger("s2s.history")

QueueDepth = Callable[[str], Awaitable[int | None]]
OutboxCounts = Callable[[], Awaitable[dict[str, int]]]
# s2s_breaker_state's values, in order; anything else (no breaker yet) is "unknown".
BREAKER_STATES = ("closed", "half_open", "open")
_PROBE_TIMEOUT_S = 2.0

Buckets = dict[float, float]  # upper bound -> cumulative count


@dataclass(frozen=True, slots=True)
class DownstreamPoint:
    calls_per_second: float
    error_rate: float  # failed attempts / attempts, 0..1; 0 without attempts
    p50_seconds: float | None  # None without attempts in the interval
    p99_seconds: float | None
    breaker: str  # closed | half_open | open | unknown
    queue_depth: int | None


@dataclass(frozen=True, slots=True)
class HistoryPoint:
    at_ms: int
    downstreams: Mapping[str, DownstreamPoint]
    outbox_backlog: int | None
    outbox_dead: int | None
    publish_lag_p50_seconds: float | None
    publish_lag_p99_seconds: float | None
    dlq_depth: int | None


def quantile(q: float, before: Buckets, after: Buckets) -> float | None:
    """The ``q`` quantile of what was observed between two readings of a histogram's cumulative buckets.

    Linear inside the bucket it falls in, like ``histogram_quantile``; in the ``+Inf`` bucket the highest
    finite bound. None when nothing was observed.
    """
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts, strict=True):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            in_bucket = cumulative - below
            share = (rank - below) / in_bucket if in_bucket > 0 else 1.0
            return round(lower + (bound - lower) * share, 6)
        lower, below = bound, cumulative
    return lower


def _buckets(histogram: Histogram, labels: Mapping[str, str] | None = None) -> Buckets:
    found: Buckets = {}
    for family in histogram.collect():
        for sample in family.samples:
            if not sample.name.endswith("_bucket"):
                continue
            if labels and any(sample.labels.get(k) != v for k, v in labels.items()):
                continue
            bound = float(sample.labels["le"])
            found[bound] = found.get(bound, 0.0) + sample.value
    return found


class MetricsHistory:
    """A ring of :class:`HistoryPoint`; ``start()`` samples on a timer, ``sample_once()`` on demand."""

    def __init__(
        self,
        *,
        metrics: Metrics,
        queues: Mapping[str, str],  # downstream -> its command queue
        dlq: str,
        queue_depth: QueueDepth,
        outbox_counts: OutboxCounts,
        interval: float = 5.0,
        retention: float = 900.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._metrics = metrics
        self._queues = dict(queues)
        self._dlq = dlq
        self._queue_depth = queue_depth
        self._outbox_counts = outbox_counts
        self.interval = interval
        self.retention = retention
        self._clock = clock
        self.points: deque[HistoryPoint] = deque(maxlen=max(2, math.ceil(retention / interval)))
        self._previous = (clock(), self._readings())
        self._task: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()

    @property
    def downstreams(self) -> Sequence[str]:
        return list(self._queues)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="s2s-console-history")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def sample_once(self) -> HistoryPoint:
        async with self._lock:
            point = await self._sample()
            self.points.append(point)
            return point

    def as_json(self) -> dict[str, Any]:
        """Columns, as a chart library wants them: one time axis (epoch seconds) and one array per series."""
        points = list(self.points)

        def column(values: Iterable[Any]) -> list[Any]:
            return list(values)

        return {
            "interval_seconds": self.interval,
            "retention_seconds": self.retention,
            "times": column(p.at_ms / 1000 for p in points),
            "downstreams": {
                name: {
                    "calls_per_second": column(_ds(p, name, "calls_per_second") for p in points),
                    "error_rate": column(_ds(p, name, "error_rate") for p in points),
                    "p50_seconds": column(_ds(p, name, "p50_seconds") for p in points),
                    "p99_seconds": column(_ds(p, name, "p99_seconds") for p in points),
                    "breaker": column(_ds(p, name, "breaker") or "unknown" for p in points),
                    "queue_depth": column(_ds(p, name, "queue_depth") for p in points),
                }
                for name in self._queues
            },
            "outbox_backlog": column(p.outbox_backlog for p in points),
            "outbox_dead": column(p.outbox_dead for p in points),
            "publish_lag_p50_seconds": column(p.publish_lag_p50_seconds for p in points),
            "publish_lag_p99_seconds": column(p.publish_lag_p99_seconds for p in points),
            "dlq_depth": column(p.dlq_depth for p in points),
        }

    # internals -----------------------------------------------------------------------------------
    def _readings(self) -> dict[str, Any]:
        """The cumulative figures a point is the difference of."""
        calls = {name: [0.0, 0.0] for name in self._queues}
        for family in self._metrics.downstream_calls.collect():
            for sample in family.samples:
                name = sample.labels.get("downstream", "")
                if sample.name.endswith("_total") and name in calls:
                    calls[name][0] += sample.value
                    if sample.labels.get("outcome") != "success":
                        calls[name][1] += sample.value
        return {
            "calls": calls,
            "latency": {name: _buckets(self._metrics.downstream_seconds, {"downstream": name}) for name in calls},
            "lag": _buckets(self._metrics.outbox_lag_seconds),
        }

    def _breakers(self) -> dict[str, str]:
        states: dict[str, str] = {}
        for family in self._metrics.breaker_state.collect():
            for sample in family.samples:
                value = int(sample.value)
                states[sample.labels.get("downstream", "")] = (
                    BREAKER_STATES[value] if 0 <= value < len(BREAKER_STATES) else "unknown"
                )
        return states

    async def _probe(self, probe: Awaitable[Any]) -> Any:
        try:
            return await asyncio.wait_for(probe, _PROBE_TIMEOUT_S)
        except Exception:
            return None

    async def _sample(self) -> HistoryPoint:
        names = list(self._queues)
        depths = await asyncio.gather(*(self._probe(self._queue_depth(self._queues[n])) for n in names))
        dlq_depth = await self._probe(self._queue_depth(self._dlq))
        outbox = await self._probe(self._outbox_counts())
        now, current = self._clock(), self._readings()
        then, before = self._previous
        self._previous = (now, current)
        elapsed = now - then
        breakers = self._breakers()
        downstreams = {}
        for name, depth in zip(names, depths, strict=True):
            calls, errors = current["calls"][name]
            old_calls, old_errors = before["calls"].get(name, (0.0, 0.0))
            delta = calls - old_calls
            latency, old_latency = current["latency"][name], before["latency"].get(name, {})
            downstreams[name] = DownstreamPoint(
                calls_per_second=round(delta / elapsed, 3) if elapsed > 0 else 0.0,
                error_rate=round((errors - old_errors) / delta, 4) if delta > 0 else 0.0,
                p50_seconds=quantile(0.5, old_latency, latency),
                p99_seconds=quantile(0.99, old_latency, latency),
                breaker=breakers.get(name, "unknown"),
                queue_depth=depth,
            )
        return HistoryPoint(
            at_ms=now_ms(),
            downstreams=downstreams,
            outbox_backlog=None if outbox is None else outbox.get("pending", 0) + outbox.get("publishing", 0),
            outbox_dead=None if outbox is None else outbox.get("dead"),
            publish_lag_p50_seconds=quantile(0.5, before["lag"], current["lag"]),
            publish_lag_p99_seconds=quantile(0.99, before["lag"], current["lag"]),
            dlq_depth=dlq_depth,
        )

    async def _run(self) -> None:
        while True:
            try:
                await self.sample_once()
            except Exception:
                log.warning("history.sample_failed", exc_info=True)
            await asyncio.sleep(self.interval)


def _ds(point: HistoryPoint, name: str, field: str) -> Any:
    ds = point.downstreams.get(name)
    return None if ds is None else getattr(ds, field)
