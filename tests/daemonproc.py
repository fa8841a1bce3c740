"""Daemons as separate processes for the multi-process tests: forkserver children, known sidecar ports.

Children fork from a server that already imported the daemon, so starting one costs milliseconds. The entry
point is ``tests.crashproc.run_daemon`` (optionally armed to SIGKILL itself at an injection point).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import httpx
from prometheus_client.parser import text_string_to_metric_families

from s2s_daemon.local import free_port
from s2s_daemon.settings import Settings
from tests.crashproc import run_daemon
from tests.support import RABBITMQ_URL, wait_for


def forkserver() -> Any:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["s2s_daemon.app", "tests.crashproc"])
    return ctx


def settings_values(settings: Settings) -> dict[str, Any]:
    """Plain values a child rebuilds its Settings from (secrets revealed; the child is ours)."""
    values = settings.model_dump(mode="json", by_alias=True)
    for secret in ("rabbitmq_url", "redis_url", "mongodb_uri"):
        value = getattr(settings, secret)
        values[secret] = value.get_secret_value() if value is not None else None
    return values


def merged(values: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    """``values`` with top-level overrides; a dict override is merged one level deep."""
    out = dict(values)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


@dataclass
class DaemonProcess:
    process: Any  # multiprocessing.Process from the forkserver context
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def metric(self, name: str, **labels: str) -> float:
        """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
        async with httpx.AsyncClient(timeout=5.0) as http:
            text = (await http.get(f"{self.url}/metrics")).text
        total = 0.0
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                    total += sample.value
        return total


def start_daemon(
    ctx: Any, values: dict[str, Any], crash_point: str | None = None, crash_after: int = 0, **overrides: Any
) -> DaemonProcess:
    port = free_port()
    child_values = merged(values, http={"host": "127.0.0.1", "port": port}, **overrides)
    process = ctx.Process(target=run_daemon, args=(child_values, crash_point, crash_after))
    process.start()
    return DaemonProcess(process, port)


async def stop_daemons(daemons: list[DaemonProcess], timeout: float = 30.0) -> None:
    """SIGTERM (drain) each still-running child, then reap it; SIGKILL what does not stop in time."""
    for d in daemons:
        if d.process.is_alive():
            d.process.terminate()
    for d in daemons:
        await asyncio.to_thread(d.process.join, timeout)
        if d.process.is_alive():  # pragma: no cover - a hung child
            d.process.kill()
            await asyncio.to_thread(d.process.join, 5)


@contextlib.asynccontextmanager
async def running_daemons(
    ctx: Any, values: dict[str, Any], count: int, **overrides: Any
) -> AsyncIterator[list[DaemonProcess]]:
    daemons = [start_daemon(ctx, values, **overrides) for _ in range(count)]
    try:
        yield daemons
    finally:
        await stop_daemons(daemons)


async def wait_ready(daemon: DaemonProcess | DaemonSubprocess, timeout: float = 20.0) -> None:
    async def ready() -> bool:
        try:
            async with httpx.AsyncClient(timeout=2.0) as http:
                return (await http.get(f"{daemon.url}/readyz")).status_code == 200
        except httpx.HTTPError:
            return False

    await wait_for(ready, timeout=timeout, interval=0.1)


async def consumer_count(queue_name: str) -> int:
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        try:
            queue = await channel.declare_queue(queue_name, passive=True)
        except aio_pika.exceptions.ChannelClosed:
            return 0
        return int(queue.declaration_result.consumer_count or 0)


# A daemon with an environment of its own (a forkserver child inherits the server's, set when it started).
_RUN_DAEMON = "import json, sys; from tests.crashproc import run_daemon; run_daemon(json.loads(sys.argv[1]), None, 0)"


@dataclass
class DaemonSubprocess:
    process: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log lines it wrote so far."""
        lines = []
        for line in self.log_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError):
                lines.append(json.loads(line))
        return lines

    def log_tail(self) -> str:
        return self.log_path.read_text(encoding="utf-8")[-3000:]


@contextlib.asynccontextmanager
async def daemon_subprocess(
    values: dict[str, Any], env: dict[str, str], log_path: Path, log_level: str = "INFO"
) -> AsyncIterator[DaemonSubprocess]:
    """``python -c run_daemon(values)`` with the test's environment less every ``OTEL_*`` variable, plus ``env``;
    ready when it yields, drained by SIGTERM (a clean exit, asserted) after."""
    port = free_port()
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    child_env.update(env, S2S_CHILD_LOG=log_level, PYTHONPATH=str(Path(__file__).parents[1]))
    child_values = merged(values, http={"host": "127.0.0.1", "port": port})
    log = await asyncio.to_thread(log_path.open, "wb")
    with log:
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _RUN_DAEMON,
            json.dumps(child_values),
            env=child_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=Path(__file__).parents[1],
        )
    daemon = DaemonSubprocess(process, port, log_path)
    try:
        try:
            await wait_ready(daemon)
        except AssertionError:
            raise AssertionError(f"daemon not ready (exit code {process.returncode}): {daemon.log_tail()}") from None
        yield daemon
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:  # pragma: no cover - a hung child
            process.kill()
            await process.wait()
    assert process.returncode == 0, f"daemon exited {process.returncode}: {daemon.log_tail()}"
