"""Processes the benchmark starts and stops by PID, the daemon configs it writes, and namespace cleanup.

Processes are the package's ``ManagedProcess`` (own session, SIGTERM to the group, SIGKILL after a grace),
which also samples CPU and memory here; AMQP names come from the daemon's ``Topology``.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from s2s_daemon.local import EmbeddedMongo, ManagedProcess
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.settings import AmqpSettings
from tests.harness.bench.procstat import ProcSample, sample

__all__ = [
    "BenchProcess",
    "DaemonNamespace",
    "daemon_config",
    "delete_namespaces",
    "python_module",
    "start_mongo",
    "wait_http_ok",
]

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
# the harness's own modules run as ``python -m tests.harness...`` from wherever the bench was started
REPO_ROOT = Path(__file__).resolve().parents[3]


# processes ---------------------------------------------------------------------------------------------
class BenchProcess(ManagedProcess):
    """A managed child whose CPU and memory the bench reads, last of all just before it is stopped."""

    last_sample: ProcSample | None = None

    def sample(self) -> ProcSample | None:
        got = sample(self.pid) if self.alive() else None
        if got is not None:
            self.last_sample = got
        return got

    def stop(self, grace: float = 10.0) -> int | None:
        if self.alive():
            self.sample()
        return super().stop(grace)


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def harness_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``env`` plus a PYTHONPATH that finds ``tests.harness`` (the bench may run from another folder)."""
    return {"PYTHONPATH": str(REPO_ROOT), **(env or {})}


def wait_http_ok(url: str, timeout: float, proc: ManagedProcess | None = None) -> float:
    """Poll ``url`` every 20 ms until it answers 200; returns the seconds since ``proc`` started (or since now)."""
    started = proc.started_at if proc is not None else time.perf_counter()
    deadline = time.perf_counter() + timeout
    with httpx.Client(timeout=0.5) as client:
        while time.perf_counter() < deadline:
            if proc is not None:
                proc.check_alive()
            with contextlib.suppress(httpx.HTTPError):
                if client.get(url).status_code == 200:
                    return time.perf_counter() - started
            time.sleep(0.02)
    raise TimeoutError(f"{url} did not answer 200 within {timeout}s")


# the daemon's namespace ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DaemonNamespace:
    """Everything one bench daemon creates is named from ``prefix``: AMQP objects, Redis keys, the database."""

    prefix: str

    @property
    def key_prefix(self) -> str:
        return f"{self.prefix}:idem:"

    downstreams: tuple[str, ...] = ("service-a", "service-b")

    @property
    def topology(self) -> Topology:
        return Topology.from_settings(AmqpSettings(prefix=self.prefix), self.downstreams)

    @property
    def commands_exchange(self) -> str:
        return self.topology.commands_exchange_name


def daemon_config(
    example: Path,
    namespace: DaemonNamespace,
    http_port: int,
    base_urls: Mapping[str, str],
    *,
    prefetch: int | None = None,
) -> dict[str, Any]:
    """The example config re-pointed at the bench's namespace, sidecar port and demo downstreams."""
    config: dict[str, Any] = yaml.safe_load(example.read_text(encoding="utf-8"))
    config["amqp"] = {**config.get("amqp", {}), "prefix": namespace.prefix, "graceful_timeout": 5.0}
    if prefetch is not None:
        config["amqp"]["prefetch"] = prefetch
    config["idempotency"] = {**config.get("idempotency", {}), "key_prefix": namespace.key_prefix}
    config["outbox"] = {**config.get("outbox", {}), "database": namespace.prefix}
    config["http"] = {"host": "127.0.0.1", "port": http_port}
    for name, url in base_urls.items():
        config["downstreams"][name]["base_url"] = url
    return config


async def delete_namespaces(
    namespaces: Sequence[DaemonNamespace],
    extra_queues: Sequence[str] = (),
    extra_exchanges: Sequence[str] = (),
) -> dict[str, int]:
    """Delete the bench's queues, exchanges and Redis keys; returns what was deleted."""
    import aio_pika
    from redis.asyncio import Redis

    deleted = {"queues": 0, "exchanges": 0, "redis_keys": 0}
    queues = [*extra_queues]
    exchanges = [*extra_exchanges]
    for ns in namespaces:
        topology = ns.topology
        queues.extend(topology.all_queue_names())
        exchanges.extend(topology.all_exchange_names())
    connection = await aio_pika.connect(RABBITMQ_URL, timeout=5)
    async with connection:
        channel = await connection.channel()
        for name in queues:
            try:
                await channel.queue_delete(name)
                deleted["queues"] += 1
            except Exception:  # a queue that was never declared closes the channel
                channel = await connection.channel()
        for name in exchanges:
            try:
                await channel.exchange_delete(name)
                deleted["exchanges"] += 1
            except Exception:  # as above
                channel = await connection.channel()
    redis = Redis.from_url(REDIS_URL)
    async with redis:
        for ns in namespaces:
            keys = [key async for key in redis.scan_iter(match=f"{ns.prefix}:*", count=1000)]
            for start in range(0, len(keys), 1000):
                deleted["redis_keys"] += await redis.delete(*keys[start : start + 1000])
    return deleted


def start_mongo(data_dir: Path) -> tuple[EmbeddedMongo, float]:
    started = time.perf_counter()
    mongo = EmbeddedMongo(data_dir).start()
    return mongo, time.perf_counter() - started
