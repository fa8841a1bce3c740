"""The read-only status page: ``GET /status`` (HTML) polls ``GET /api/status`` (JSON).

Per downstream: breaker state, recent call rate and error rate (differences of the
``s2s_downstream_calls_total`` counter over ``api.status_window_seconds``), command queue depth (passive
declare through the broker); for the process: outbox backlog by status and the DLQ depth. One snapshot is
computed at most once a second, however many pages poll.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response

from s2s_daemon.http.health import wait_uncancelled
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.resilience.breaker import CircuitBreaker

__all__ = ["STATUS_PAGE", "StatusBoard"]

QueueDepth = Callable[[str], Awaitable[int | None]]
OutboxCounts = Callable[[], Awaitable[dict[str, int]]]

_CACHE_S = 1.0


class StatusBoard:
    def __init__(
        self,
        *,
        service_id: str,
        breakers: Mapping[str, CircuitBreaker],
        queues: Mapping[str, str],  # downstream -> its command queue
        dlq: str,
        metrics: Metrics,
        queue_depth: QueueDepth,
        outbox_counts: OutboxCounts,
        window_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._service_id = service_id
        self._breakers = breakers
        self._queues = queues
        self._dlq = dlq
        self._metrics = metrics
        self._queue_depth = queue_depth
        self._outbox_counts = outbox_counts
        self._window = window_seconds
        self._clock = clock
        # (monotonic time, counters); seeded now so the first poll already has something to compare with
        self._samples: deque[tuple[float, dict[str, tuple[float, float]]]] = deque([(clock(), self._counters())])
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def page(self, _: Request) -> Response:
        return HTMLResponse(STATUS_PAGE, headers={"cache-control": "no-store"})

    async def api(self, _: Request) -> Response:
        return JSONResponse(await self.snapshot(), headers={"cache-control": "no-store"})

    async def snapshot(self) -> dict[str, Any]:
        async with self._lock:
            now = self._clock()
            if self._cached is not None and now - self._cached[0] < _CACHE_S:
                return self._cached[1]
            rates = self._rates(now)
            names = list(self._queues)
            depths = await asyncio.gather(*(self._queue_depth(self._queues[n]) for n in names))
            dlq_depth = await self._queue_depth(self._dlq)
            try:
                outbox: dict[str, int] | None = await wait_uncancelled(self._outbox_counts(), 2.0)
            except Exception:
                outbox = None
            body = {
                "service_id": self._service_id,
                "time": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
                "window_seconds": self._window,
                "downstreams": [
                    {
                        "name": name,
                        "breaker": self._breaker(name),
                        "calls_per_second": rates[name][0],
                        "error_rate": rates[name][1],
                        "queue_depth": depth,
                    }
                    for name, depth in zip(names, depths, strict=True)
                ],
                "outbox": outbox,
                "dlq_depth": dlq_depth,
            }
            self._cached = (now, body)
            return body

    def _breaker(self, name: str) -> dict[str, Any] | None:
        breaker = self._breakers.get(name)
        if breaker is None:
            return None
        snap = breaker.metrics_snapshot()
        return {
            "state": snap.state.value,
            "calls": snap.calls,
            "failure_rate": round(snap.failure_rate, 1),
            "slow_rate": round(snap.slow_rate, 1),
            "seconds_until_half_open": round(breaker.seconds_until_half_open(), 1),
        }

    def _counters(self) -> dict[str, tuple[float, float]]:
        """downstream -> (attempts, failed attempts) so far, from the Prometheus counter."""
        totals = dict.fromkeys(self._queues, (0.0, 0.0))
        for family in self._metrics.downstream_calls.collect():
            for sample in family.samples:
                if not sample.name.endswith("_total"):
                    continue
                name = sample.labels.get("downstream", "")
                if name not in totals:
                    continue
                calls, errors = totals[name]
                failed = sample.labels.get("outcome") != "success"
                totals[name] = (calls + sample.value, errors + (sample.value if failed else 0.0))
        return totals

    def _rates(self, now: float) -> dict[str, tuple[float, float]]:
        """downstream -> (attempts per second, failed share 0..1) over the window."""
        current = self._counters()
        self._samples.append((now, current))
        # Keep the newest sample that is at least a window old: the rate spans the window (longer when polls are
        # sparse) instead of collapsing to nothing.
        while len(self._samples) > 1 and now - self._samples[1][0] >= self._window:
            self._samples.popleft()
        then, old = self._samples[0]
        elapsed = now - then
        rates = {}
        for name, (calls, errors) in current.items():
            old_calls, old_errors = old.get(name, (0.0, 0.0))
            delta = calls - old_calls
            rate = delta / elapsed if elapsed > 0 else 0.0
            share = (errors - old_errors) / delta if delta > 0 else 0.0
            rates[name] = (round(rate, 2), round(share, 3))
        return rates


STATUS_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>s2s-daemon status</title>
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1d2330; background: #f6f7f9; }
  h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
  .meta { color: #5b6475; margin-bottom: 1.2rem; }
  table { border-collapse: collapse; background: #fff; box-shadow: 0 1px 2px #0002; min-width: 42rem; }
  th, td { padding: .45rem .9rem; text-align: left; border-bottom: 1px solid #e4e7ec; }
  th { background: #eef0f4; font-weight: 600; }
  td.num { text-align: right; font-variant-numeric: tabular-nums; }
  .state { display: inline-block; padding: .1rem .55rem; border-radius: .8rem; font-weight: 600; }
  .state.closed { background: #d8f3e0; color: #145a2c; }
  .state.half_open { background: #fff1c2; color: #6b4e00; }
  .state.open { background: #fbd5d5; color: #8a1c1c; }
  .state.unknown { background: #e4e7ec; color: #5b6475; }
  .cards { display: flex; gap: 1rem; margin-top: 1.2rem; }
  .card { background: #fff; padding: .8rem 1.1rem; box-shadow: 0 1px 2px #0002; min-width: 9rem; }
  .card b { display: block; font-size: 1.4rem; }
  #error { color: #8a1c1c; margin-top: 1rem; }
</style>
</head>
<body>
<h1>s2s-daemon status</h1>
<div class="meta"><span id="service"></span> &middot; updated <span id="updated">never</span>
  &middot; rates over <span id="window"></span> s &middot; <a href="/console">operator console</a></div>
<table>
  <thead><tr><th>downstream</th><th>breaker</th><th>calls/s</th><th>errors</th><th>queue depth</th></tr></thead>
  <tbody id="downstreams"></tbody>
</table>
<div class="cards">
  <div class="card">outbox pending<b id="outbox-pending">-</b></div>
  <div class="card">outbox publishing<b id="outbox-publishing">-</b></div>
  <div class="card">outbox dead<b id="outbox-dead">-</b></div>
  <div class="card">dead-letter queue<b id="dlq-depth">-</b></div>
</div>
<div id="error"></div>
<script>
"use strict";
const POLL_MS = 1500;
const show = (v) => (v === null || v === undefined ? "n/a" : String(v));
function cell(row, text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  row.appendChild(td);
  return td;
}
function render(s) {
  document.getElementById("service").textContent = s.service_id;
  document.getElementById("updated").textContent = new Date(s.time).toLocaleTimeString();
  document.getElementById("window").textContent = s.window_seconds;
  const body = document.getElementById("downstreams");
  const rows = s.downstreams.map((d) => {
    const row = document.createElement("tr");
    row.id = "downstream-" + d.name;
    cell(row, d.name);
    const state = d.breaker ? d.breaker.state : "unknown";
    const badge = document.createElement("span");
    badge.className = "state " + state;
    badge.id = "breaker-" + d.name;
    badge.dataset.state = state;
    badge.textContent = state.replace("_", "-").toUpperCase();
    const breakerCell = cell(row, "");
    breakerCell.appendChild(badge);
    if (state === "open") {
      const wait = document.createElement("small");
      wait.textContent = " probes in " + Math.ceil(d.breaker.seconds_until_half_open) + " s";
      breakerCell.appendChild(wait);
    }
    cell(row, d.calls_per_second.toFixed(2), "num");
    cell(row, (d.error_rate * 100).toFixed(1) + " %", "num").id = "errors-" + d.name;
    cell(row, show(d.queue_depth), "num").id = "queue-" + d.name;
    return row;
  });
  body.replaceChildren(...rows);
  const o = s.outbox || {};
  document.getElementById("outbox-pending").textContent = show(o.pending);
  document.getElementById("outbox-publishing").textContent = show(o.publishing);
  document.getElementById("outbox-dead").textContent = show(o.dead);
  document.getElementById("dlq-depth").textContent = show(s.dlq_depth);
  document.getElementById("error").textContent = "";
}
async function poll() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (err) {
    document.getElementById("error").textContent = "status unavailable: " + err.message;
  } finally {
    setTimeout(poll, POLL_MS);
  }
}
poll();
</script>
</body>
</html>
"""
