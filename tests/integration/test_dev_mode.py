"""`s2s-daemon dev` (what `make run` starts): the daemon consumes only once the demo downstreams listen, so a
command that was already waiting in its queue is answered at the first attempt."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import orjson
import pytest
import yaml

from s2s_daemon.cli import EXAMPLE_CONFIG
from s2s_daemon.local import EmbeddedMongo, free_port
from tests.conftest import REDIS_URL, drop_namespace
from tests.support import RABBITMQ_URL, wait_for

# the demo listens on the example config's fixed ports: one such test at a time
pytestmark = [pytest.mark.integration, pytest.mark.xdist_group("dev-ports")]


class Dev:
    """``python -m s2s_daemon dev`` as a child process with its own config and data folder."""

    def __init__(self, config: Path, data_dir: Path, port: int) -> None:
        self.config, self.data_dir, self.port = config, data_dir, port
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> None:
        env = {**os.environ, "RABBITMQ_URL": RABBITMQ_URL, "REDIS_URL": REDIS_URL}
        env.pop("MONGODB_URI", None)  # dev starts its embedded Mongo-wire server only without one
        argv = [sys.executable, "-m", "s2s_daemon", "dev", "--config", str(self.config)]
        with open(self.data_dir / "dev.log", "ab") as log:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                [*argv, "--data-dir", str(self.data_dir)],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
            )

    async def start(self) -> None:
        self.spawn()

        async def ready() -> bool:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"dev exited with {self.process.returncode}: {self.log()}")
            try:
                async with httpx.AsyncClient(timeout=2.0) as http:
                    return (await http.get(f"http://127.0.0.1:{self.port}/readyz")).status_code == 200
            except httpx.HTTPError:
                return False

        await wait_for(ready, timeout=60, interval=0.2)

    async def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.process.wait, 30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                await asyncio.to_thread(self.process.wait, 10)
        self.process = None

    def log(self) -> str:
        return (self.data_dir / "dev.log").read_text(errors="replace")[-3000:]


@pytest.fixture
async def dev(tmp_path: Path, run_id: str, mongo_server: EmbeddedMongo) -> AsyncIterator[Dev]:
    config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    port = free_port()
    config["log_format"] = "json"
    config["amqp"] = {**config["amqp"], "prefix": run_id, "graceful_timeout": 5.0}
    config["idempotency"] = {"key_prefix": f"{run_id}:idem:"}
    config["outbox"] = {"database": run_id}
    config["http"] = {"host": "127.0.0.1", "port": port}
    path = tmp_path / "dev.yaml"
    path.write_text(yaml.safe_dump(config))
    process = Dev(path, tmp_path, port)
    try:
        yield process
    finally:
        await process.stop()
        await drop_namespace(run_id, mongo_server.uri)


@pytest.mark.timeout(150)
async def test_a_command_queued_before_make_run_succeeds_at_the_first_attempt(dev: Dev, run_id: str) -> None:
    """A command waits in the queue while the daemon is down; `s2s-daemon dev` starts the demo downstreams, waits
    until they listen, then consumes: the command succeeds with one attempt (a refused port would cost more)."""
    await dev.start()  # once, so the queues exist (durable) while it is down
    await dev.stop()
    key = f"{run_id}-queued"
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel(publisher_confirms=True)
        replies = await channel.declare_queue(f"{run_id}.test-replies", durable=True)
        try:
            exchange = await channel.get_exchange(f"{run_id}.commands")
            await exchange.publish(
                aio_pika.Message(
                    orjson.dumps({"name": "queued"}),
                    message_id=key,
                    correlation_id=key,
                    reply_to=replies.name,
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key="service-a.create-resource",
            )
            await dev.start()
            message = await wait_for(lambda: replies.get(no_ack=True, fail=False), timeout=60, interval=0.2)
        finally:
            await replies.delete(if_unused=False, if_empty=False)
    reply = orjson.loads(message.body)
    assert reply["command_id"] == key
    assert reply["status"] == "succeeded", reply
    assert reply["attempts"] == 1, f"the first attempt met no listening service-a: {reply}\n{dev.log()}"
