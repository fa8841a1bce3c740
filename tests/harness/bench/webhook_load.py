"""The webhook load generator, run as its own process: ``python -m tests.harness.bench.webhook_load '<JSON>'``.

POSTs Standard Webhooks v1 deliveries, signed by the third-party ``standardwebhooks`` library (not by our
own verifier's code), to ``POST /api/webhooks/<source>`` with a unique ``webhook-id`` each, ``concurrency``
requests in flight over one aiohttp session, or (``rate`` > 0) offered at a fixed rate whatever the answers
take, like the command load generator's rate mode (open loop: a slow daemon does not slow the offer).
Measures requests/s and latency (from just before the request is sent to the end of the response body) and
counts the answers by status: every answer must be 2xx (202 for a new delivery; 200 would mean the daemon took
a fresh id for a replay). Signing happens before the clock starts for each request, so the generator's own
HMAC cost is not in the latency. Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aiohttp
import orjson

from tests.harness.bench.procstat import process_deltas, sample_watched
from tests.harness.bench.report import latency_summary
from tests.harness.bench.spec import WebhookSpec, generator_main


class WebhookLoad:
    def __init__(self, spec: WebhookSpec) -> None:
        from standardwebhooks.webhooks import Webhook

        self.spec = spec
        self._signer = Webhook(spec.secret)
        self._run = uuid.uuid4().hex[:8]
        self._ids = itertools.count()
        self.statuses: Counter[int] = Counter()
        self.errors: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.duplicates = 0
        self.sent = 0  # measured deliveries started
        self.send_seconds = 0.0  # from the first measured delivery to the start of the last
        self.max_send_lag = 0.0  # rate mode: how far behind its due time a delivery was started, at worst

    def _delivery(self) -> tuple[bytes, dict[str, str]]:
        n = next(self._ids)
        delivery_id = f"msg_{self._run}_{n}"
        body = orjson.dumps({"type": self.spec.event_type, "data": {"n": n, "run": self._run}})
        now = datetime.now(tz=UTC)
        signature = self._signer.sign(delivery_id, now, body.decode())
        headers = {
            "content-type": "application/json",
            "webhook-id": delivery_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        }
        return body, headers

    async def _one(self, session: aiohttp.ClientSession, measured: bool) -> None:
        body, headers = self._delivery()
        started = time.perf_counter()
        try:
            async with session.post(self.spec.url, data=body, headers=headers) as response:
                answer = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            if measured:
                self.errors[type(exc).__name__] += 1
            return
        elapsed = time.perf_counter() - started
        if not measured:
            return
        self.statuses[status] += 1
        self.latencies.append(elapsed)
        if status == 200 and b'"duplicate":true' in answer.replace(b" ", b""):
            self.duplicates += 1

    async def _drive(
        self, session: aiohttp.ClientSession, count: int, seconds: float, measured: bool, rate: float = 0.0
    ) -> float:
        """Send ``count`` deliveries (fewer once ``seconds`` have passed), ``concurrency`` in flight or, with
        ``rate`` > 0, each at its due time; returns the seconds until the last answer."""
        slots = asyncio.Semaphore(self.spec.concurrency)
        tasks: set[asyncio.Task[None]] = set()
        started = time.perf_counter()
        stop_at = started + seconds if seconds > 0 else None
        for i in range(count):
            if stop_at is not None and time.perf_counter() >= stop_at:
                break
            if rate > 0:
                lag = time.perf_counter() - (started + i / rate)
                if lag < 0:
                    await asyncio.sleep(-lag)
                else:
                    self.max_send_lag = max(self.max_send_lag, lag)
                task = asyncio.create_task(self._one(session, measured))
            else:
                await slots.acquire()
                task = asyncio.create_task(self._one(session, measured))
                task.add_done_callback(lambda _: slots.release())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            self.sent += 1 if measured else 0
        self.send_seconds = time.perf_counter() - started
        while tasks:
            await asyncio.gather(*list(tasks))
        return time.perf_counter() - started

    async def run(self) -> dict[str, Any]:
        connector = aiohttp.TCPConnector(limit=self.spec.concurrency, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.spec.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            if self.spec.warmup:
                await self._drive(session, self.spec.warmup, 0.0, measured=False)
            before = sample_watched(self.spec.watch)
            elapsed = await self._drive(session, self.spec.count, self.spec.seconds, True, self.spec.rate)
            after = sample_watched(self.spec.watch)
        answered = sum(self.statuses.values())
        ok = sum(n for status, n in self.statuses.items() if 200 <= status < 300)
        return {
            "url": self.spec.url,
            "concurrency": self.spec.concurrency,
            "mode": "rate" if self.spec.rate > 0 else "inflight",
            "rate": self.spec.rate,
            "requests": answered + sum(self.errors.values()),
            "answered": answered,
            "ok_2xx": ok,
            "accepted_202": self.statuses.get(202, 0),
            "duplicates": self.duplicates,
            "not_2xx": answered - ok,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "errors": dict(self.errors),
            "elapsed_s": elapsed,
            "throughput_per_s": answered / elapsed if elapsed > 0 else None,
            "offered_per_s": self.sent / self.send_seconds if self.send_seconds > 0 else None,
            "max_send_lag_ms": self.max_send_lag * 1000,
            "latency": latency_summary(self.latencies),
            "processes": process_deltas(before, after, elapsed),
        }


def main(argv: list[str] | None = None) -> int:
    return generator_main(
        argv,
        "python -m tests.harness.bench.webhook_load '<WebhookSpec JSON>'",
        lambda text: WebhookLoad(WebhookSpec.from_json(text)).run(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
