"""Fixtures for the whole suite.

Integration fixtures talk to the real RabbitMQ (127.0.0.1:5672) and Redis (127.0.0.1:6379) and to an
nx-27017 Mongo-wire server this suite starts itself. Every test gets its own namespace: AMQP prefix,
Redis key prefix and Mongo database, all removed afterwards. A missing service fails the test; nothing
here skips.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from pymongo import AsyncMongoClient
from redis.asyncio import Redis

from s2s_daemon.app import Daemon
from s2s_daemon.http.server import SidecarServer
from s2s_daemon.local import EmbeddedMongo, ServiceState, demo_states, free_port, service_a, service_b
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.logging import configure_logging
from s2s_daemon.settings import AmqpSettings, Settings, load_settings

pytest_plugins = ["tests.browser"]  # the `browser` fixture (headless Chromium)

RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/"
REDIS_URL = "redis://127.0.0.1:6379/0"
EXAMPLE_CONFIG = Path(__file__).parents[1] / "s2s_daemon" / "config" / "example.yaml"


@pytest.fixture(scope="session", autouse=True)
def _logging() -> None:
    """JSON logs through the standard library, as in production (caplog sees the event dicts)."""
    configure_logging("INFO", "json")
    logging.getLogger("pika").setLevel(logging.WARNING)


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedMongo]:
    """One nx-27017 for the session; tests isolate by database name."""
    server = EmbeddedMongo(tmp_path_factory.mktemp("nx-27017")).start()
    yield server
    server.stop()


@pytest.fixture
def run_id() -> str:
    return "t" + uuid.uuid4().hex[:10]


@dataclass
class DemoServices:
    a: ServiceState
    b: ServiceState
    url_a: str
    url_b: str


@pytest.fixture
async def demo() -> AsyncIterator[DemoServices]:
    """service-a and service-b in this event loop, on free ports, over one store (as `s2s-daemon demo` runs them)."""
    state_a, state_b = demo_states()
    servers = [
        SidecarServer(service_a(state_a), "127.0.0.1", 0),
        SidecarServer(service_b(state_b), "127.0.0.1", 0),
    ]
    for server in servers:
        await server.start()
    yield DemoServices(state_a, state_b, f"http://127.0.0.1:{servers[0].port}", f"http://127.0.0.1:{servers[1].port}")
    for server in servers:
        await server.stop()


SettingsFactory = Callable[..., Settings]


@pytest.fixture
def make_settings(run_id: str, mongo_server: EmbeddedMongo, demo: DemoServices) -> SettingsFactory:
    """Settings from the example config, re-pointed at this test's namespace and demo services."""

    def factory(**overrides: Any) -> Settings:
        base = load_settings(EXAMPLE_CONFIG)
        downstreams = {name: ds.model_dump(by_alias=True) for name, ds in base.downstreams.items()}
        downstreams["service-a"]["base_url"] = demo.url_a
        downstreams["service-b"]["base_url"] = demo.url_b
        values: dict[str, Any] = {
            "rabbitmq_url": RABBITMQ_URL,
            "redis_url": REDIS_URL,
            "mongodb_uri": mongo_server.uri,
            "log_format": "json",
            "amqp": {"prefix": run_id, "prefetch": 20, "graceful_timeout": 5.0},
            "idempotency": {"key_prefix": f"{run_id}:idem:"},
            "outbox": {"database": run_id, "poll_interval": 0.5},
            "http": {"host": "127.0.0.1", "port": 0},
            "downstreams": downstreams,
        }
        for key, value in overrides.items():
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        return load_settings(None, **values)

    return factory


@pytest.fixture
async def cleanup_namespace(run_id: str, mongo_server: EmbeddedMongo) -> AsyncIterator[None]:
    """Remove this test's queues, exchanges, Redis keys and database afterwards."""
    yield
    await drop_namespace(run_id, mongo_server.uri)


async def drop_namespace(
    prefix: str, mongo_uri: str, downstreams: tuple[str, ...] = ("service-a", "service-b")
) -> None:
    # the default ladder and the one other rung a test's own ladder uses
    topology = Topology(prefix, downstreams, 5, tuple(sorted({*AmqpSettings().delay_ladder, 4})))
    connection = await aio_pika.connect(RABBITMQ_URL)
    async with connection:
        channel = await connection.channel()
        for name in topology.all_queue_names():
            with contextlib.suppress(Exception):
                await channel.queue_delete(name)
            if channel.is_closed:
                channel = await connection.channel()
        for name in topology.all_exchange_names():
            with contextlib.suppress(Exception):
                await channel.exchange_delete(name)
            if channel.is_closed:
                channel = await connection.channel()
    redis = Redis.from_url(REDIS_URL)
    async with redis:
        keys = [key async for key in redis.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_uri)
    with contextlib.suppress(Exception):
        await mongo.drop_database(prefix)
    await mongo.close()


@pytest.fixture
async def daemon(make_settings: SettingsFactory, cleanup_namespace: None) -> AsyncIterator[Daemon]:
    """A running daemon in this event loop with the test's namespace."""
    async with Daemon(make_settings()) as running:
        yield running


@pytest.fixture
def sidecar_url(daemon: Daemon) -> str:
    assert daemon.sidecar is not None
    return f"http://127.0.0.1:{daemon.sidecar.port}"


@pytest.fixture
def unused_port() -> int:
    return free_port()
