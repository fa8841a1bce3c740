"""The console's history: quantiles from histogram bucket differences, rates from counter differences, a bounded
ring, and gaps (None) where a probe failed."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2s_daemon.observability.history import MetricsHistory, quantile
from s2s_daemon.observability.metrics import Metrics

INF = float("inf")


def test_quantile_interpolates_inside_the_bucket() -> None:
    """10 observations, all between 0.1 and 0.25: p50 is half way into that bucket, as histogram_quantile says."""
    before = {0.1: 0.0, 0.25: 0.0, INF: 0.0}
    after = {0.1: 0.0, 0.25: 10.0, INF: 10.0}
    assert quantile(0.5, before, after) == pytest.approx(0.175)
    assert quantile(0.99, before, after) == pytest.approx(0.2485)


def test_quantile_of_nothing_observed_is_none() -> None:
    """No observation between the readings: no latency (a gap), not zero."""
    same = {0.1: 3.0, INF: 3.0}
    assert quantile(0.5, same, same) is None


def test_quantile_in_the_inf_bucket_is_the_highest_bound() -> None:
    assert quantile(0.99, {1.0: 0.0, INF: 0.0}, {1.0: 0.0, INF: 4.0}) == 1.0


@given(
    st.lists(st.integers(min_value=0, max_value=50), min_size=3, max_size=3),
    st.floats(min_value=0.01, max_value=0.99),
)
def test_quantile_stays_within_the_buckets(counts: list[int], q: float) -> None:
    """Whatever the counts, a quantile lies between 0 and the highest finite bound, and grows with q."""
    bounds = [0.1, 0.5, INF]
    cumulative, total = {}, 0.0
    for bound, n in zip(bounds, counts, strict=True):
        total += n
        cumulative[bound] = total
    found = quantile(q, {}, cumulative)
    if total == 0:
        assert found is None
        return
    assert found is not None
    assert 0 <= found <= 0.5
    higher = quantile(min(0.999, q + 0.3), {}, cumulative)
    assert higher is not None
    assert higher >= found


async def test_points_are_rates_over_the_interval_and_the_ring_is_bounded() -> None:
    """Two samples 2 s apart with 10 attempts (2 failed) between them: 5 calls/s, 20 % errors; the breaker gauge
    becomes text; a failing queue probe leaves None; the ring keeps retention / interval points."""
    metrics = Metrics()
    now = [100.0]

    async def depth(queue: str) -> int | None:
        if queue == "dlq":
            raise ConnectionError("broker away")
        return 7

    async def counts() -> dict[str, int]:
        return {"pending": 2, "publishing": 1, "dead": 4}

    history = MetricsHistory(
        metrics=metrics,
        queues={"svc": "svc.commands"},
        dlq="dlq",
        queue_depth=depth,
        outbox_counts=counts,
        interval=5.0,
        retention=15.0,
        clock=lambda: now[0],
    )
    metrics.breaker_state.labels("svc").set(2)
    metrics.downstream_calls.labels("svc", "success").inc(8)
    metrics.downstream_calls.labels("svc", "server_error").inc(2)
    for _ in range(10):
        metrics.downstream_seconds.labels("svc").observe(0.02)
    now[0] += 2.0
    point = await history.sample_once()
    ds = point.downstreams["svc"]
    assert (ds.calls_per_second, ds.error_rate, ds.breaker, ds.queue_depth) == (5.0, 0.2, "open", 7)
    assert ds.p50_seconds is not None
    assert 0 < ds.p50_seconds <= 0.025
    assert (point.outbox_backlog, point.outbox_dead, point.dlq_depth) == (3, 4, None)
    for _ in range(5):
        now[0] += 5.0
        await history.sample_once()
    columns = history.as_json()
    assert len(columns["times"]) == 3
    assert columns["downstreams"]["svc"]["calls_per_second"] == [0.0, 0.0, 0.0]
    assert columns["downstreams"]["svc"]["p50_seconds"] == [None, None, None]
    assert columns["downstreams"]["svc"]["breaker"] == ["open", "open", "open"]
