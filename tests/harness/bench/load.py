"""The load generator, run as its own process: ``python -m tests.harness.bench.load '<LoadSpec JSON>'``.

Publishes commands with aio-pika (persistent, publisher confirms, unique message_id and correlation_id,
reply_to = its own exclusive reply queue) and measures command -> reply latency per correlation id, from
the start of the publish to the arrival of the reply. Prints one JSON object (``LoadResult``) on stdout.

Streams: the first one is the *primary* (it sends ``count`` commands); the others run alongside until
the primary has sent everything. A stream either keeps ``value`` commands in flight (max throughput) or
offers ``value`` commands per second (fixed rate, for latency).
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import orjson
from aio_pika.abc import AbstractExchange, AbstractIncomingMessage

from tests.harness.bench.procstat import process_deltas, sample, sample_watched
from tests.harness.bench.report import latency_summary
from tests.harness.bench.spec import LoadSpec, StreamSpec, body_for, generator_main


@dataclass
class _Stream:
    spec: StreamSpec
    sent: int = 0
    publish_errors: int = 0
    succeeded: int = 0
    failed: int = 0
    missing: int = 0
    latencies: list[float] = field(default_factory=list)
    first_publish: float | None = None
    last_reply: float | None = None
    send_done: float | None = None
    max_send_lag: float = 0.0

    def result(self) -> dict[str, Any]:
        start = self.first_publish or 0.0
        window = (self.last_reply - start) if self.last_reply is not None else None
        sending = (self.send_done - start) if self.send_done is not None else None
        replies = self.succeeded + self.failed
        return {
            "routing_key": self.spec.routing_key,
            "mode": self.spec.mode,
            "value": self.spec.value,
            "sent": self.sent,
            "replies": replies,
            "succeeded": self.succeeded,
            "failed": self.failed,
            "publish_errors": self.publish_errors,
            "missing": self.missing,
            "window_s": window,
            "throughput_per_s": replies / window if window else None,
            "offered_per_s": self.sent / sending if sending else None,
            "max_send_lag_ms": self.max_send_lag * 1000,
            "latency": latency_summary(self.latencies),
        }


class LoadGenerator:
    def __init__(self, spec: LoadSpec) -> None:
        self.spec = spec
        self._waiting: dict[str, tuple[float, asyncio.Future[bool], _Stream]] = {}
        self._exchange: AbstractExchange | None = None
        self._reply_to = ""
        self._ids = itertools.count()
        self._run = uuid.uuid4().hex[:8]
        self.stray_replies = 0
        self.rss_series: dict[str, list[tuple[float, float]]] = {}

    async def run(self) -> dict[str, Any]:
        connection = await aio_pika.connect(self.spec.url, timeout=10)
        async with connection:
            publish_channel = await connection.channel(publisher_confirms=True)
            reply_channel = await connection.channel()
            reply_queue = await reply_channel.declare_queue(exclusive=True, auto_delete=True)
            self._reply_to = reply_queue.name
            await reply_queue.consume(self._on_reply, no_ack=True)
            self._exchange = await publish_channel.get_exchange(self.spec.exchange, ensure=True)
            primary = self.spec.streams[0]
            if self.spec.warmup:
                warm = StreamSpec(primary.routing_key, "inflight", min(100, self.spec.warmup), self.spec.warmup)
                await self._drive([_Stream(warm)])
            streams = [_Stream(s) for s in self.spec.streams]
            before = sample_watched(self.spec.watch)
            rss_task = asyncio.create_task(self._sample_rss()) if self.spec.rss_every > 0 else None
            started = time.perf_counter()
            await self._drive(streams)
            elapsed = time.perf_counter() - started
            after = sample_watched(self.spec.watch)
            if rss_task is not None:
                rss_task.cancel()
        return {
            "streams": [s.result() for s in streams],
            "elapsed_s": elapsed,
            "stray_replies": self.stray_replies,
            "processes": process_deltas(before, after, elapsed),
            "rss_series": self.rss_series,
        }

    async def _sample_rss(self) -> None:
        begin = time.perf_counter()
        while True:
            t = round(time.perf_counter() - begin, 1)
            for name, pid in self.spec.watch.items():
                got = sample(pid)
                if got is not None:
                    self.rss_series.setdefault(name, []).append((t, round(got.rss_mb, 1)))
            await asyncio.sleep(self.spec.rss_every)

    async def _drive(self, streams: list[_Stream]) -> None:
        primary_done = asyncio.Event()
        tasks: list[set[asyncio.Task[None]]] = [set() for _ in streams]
        drivers = [
            asyncio.create_task(self._drive_one(stream, tasks[i], primary_done, primary=(i == 0)))
            for i, stream in enumerate(streams)
        ]
        await drivers[0]
        primary_done.set()
        await asyncio.gather(*drivers[1:])
        while tasks[0]:
            await asyncio.gather(*list(tasks[0]))
        others = [task for group in tasks[1:] for task in group]
        if others:
            drain = self.spec.secondary_drain
            _, late = await asyncio.wait(others, timeout=drain if drain is not None else self.spec.reply_timeout + 1)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)

    async def _drive_one(
        self, stream: _Stream, tasks: set[asyncio.Task[None]], primary_done: asyncio.Event, *, primary: bool
    ) -> None:
        spec = stream.spec
        limit = spec.count if primary else None
        stop_at = time.perf_counter() + spec.seconds if primary and spec.seconds > 0 else None
        if spec.mode == "inflight":
            slots = asyncio.Semaphore(int(spec.value))
            for i in itertools.count():
                if self._stop(i, limit, stop_at, primary_done, primary=primary):
                    break
                await slots.acquire()
                task = asyncio.create_task(self._one(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                task.add_done_callback(lambda _: slots.release())
        else:
            interval = 1.0 / spec.value
            begin = time.perf_counter()
            for i in itertools.count():
                if self._stop(i, limit, stop_at, primary_done, primary=primary):
                    break
                due = begin + i * interval
                lag = time.perf_counter() - due
                if lag < 0:
                    await asyncio.sleep(-lag)
                else:
                    stream.max_send_lag = max(stream.max_send_lag, lag)
                task = asyncio.create_task(self._one(stream))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
        stream.send_done = time.perf_counter()

    @staticmethod
    def _stop(i: int, limit: int | None, stop_at: float | None, primary_done: asyncio.Event, *, primary: bool) -> bool:
        if not primary:
            return primary_done.is_set()
        return (limit is not None and i >= limit) or (stop_at is not None and time.perf_counter() >= stop_at)

    async def _one(self, stream: _Stream) -> None:
        assert self._exchange is not None
        n = next(self._ids)
        correlation_id = f"{self._run}-{n}"
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        started = time.perf_counter()
        if stream.first_publish is None:
            stream.first_publish = started
        # registered before the publish: the reply can arrive before the confirm does
        self._waiting[correlation_id] = (started, future, stream)
        message = aio_pika.Message(
            orjson.dumps(body_for(stream.spec.routing_key, n)),
            message_id=uuid.uuid4().hex,
            correlation_id=correlation_id,
            reply_to=self._reply_to,
            content_type="application/json",
            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
        )
        try:
            await self._exchange.publish(message, routing_key=stream.spec.routing_key, mandatory=False)
        except Exception:
            stream.publish_errors += 1
            self._waiting.pop(correlation_id, None)
            return
        stream.sent += 1
        try:
            async with asyncio.timeout(self.spec.reply_timeout):
                await future
        except (TimeoutError, asyncio.CancelledError):
            # no reply within the timeout, or still none when the run ended (secondary streams)
            stream.missing += 1
            self._waiting.pop(correlation_id, None)

    async def _on_reply(self, message: AbstractIncomingMessage) -> None:
        now = time.perf_counter()
        entry = self._waiting.pop(message.correlation_id or "", None)
        if entry is None:
            self.stray_replies += 1
            return
        started, future, stream = entry
        try:
            ok = orjson.loads(message.body).get("status") == "succeeded"
        except (orjson.JSONDecodeError, AttributeError):
            ok = False
        if ok:
            stream.succeeded += 1
        else:
            stream.failed += 1
        stream.latencies.append(now - started)
        stream.last_reply = now
        if not future.done():
            future.set_result(ok)


def main(argv: list[str] | None = None) -> int:
    return generator_main(
        argv,
        "python -m tests.harness.bench.load '<LoadSpec JSON>'",
        lambda text: LoadGenerator(LoadSpec.from_json(text)).run(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
