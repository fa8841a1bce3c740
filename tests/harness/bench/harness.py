"""Processes the benchmark starts and stops by PID, the daemon configs it writes, and namespace cleanup.

Every process runs in its own session (``start_new_session``) so a Ctrl-C in the terminal reaches only the
harness, which then stops them in order: SIGTERM to the process group led by the PID, SIGKILL after a grace
period.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
import yaml

from tests.harness.bench.procstat import ProcSample, sample
from s2s_daemon.embedded import EmbeddedMongo, free_port
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.settings import AmqpSettings

__all__ = [
    "DaemonNamespace",
    "ManagedProcess",
    "daemon_config",
    "delete_namespaces",
    "free_port",
    "python_module",
    "start_mongo",
    "wait_http_ok",
    "wait_port",
]

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"


# processes ---------------------------------------------------------------------------------------------
class ManagedProcess:
    """A child process in its own session, with its output in a log file, stopped by its PID."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or {})
        self.popen: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0
        self._log: IO[bytes] | None = None
        self.last_sample: ProcSample | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started_at = time.perf_counter()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}:\n{self.tail()}")

    def sample(self) -> ProcSample | None:
        got = sample(self.pid) if self.alive() else None
        if got is not None:
            self.last_sample = got
        return got

    def tail(self, lines: int = 15) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM to the process group the PID leads, SIGKILL after ``timeout``; returns the exit code."""
        proc = self.popen
        if proc is None:
            return None
        if proc.poll() is None:
            self.sample()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None
        return proc.returncode


def python_module(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def wait_port(port: int, timeout: float, proc: ManagedProcess | None = None, host: str = "127.0.0.1") -> float:
    """Seconds until ``host:port`` accepts connections."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc is not None:
            proc.check_alive()
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return time.perf_counter() - started
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")


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

    @property
    def commands_exchange(self) -> str:
        return f"{self.prefix}.commands"

    def topology(self, downstreams: tuple[str, ...]) -> Topology:
        return Topology.from_settings(AmqpSettings(prefix=self.prefix), downstreams)


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
    downstreams: tuple[str, ...],
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
        topology = ns.topology(downstreams)
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
