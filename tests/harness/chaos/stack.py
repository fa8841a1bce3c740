"""One scenario's world: private RabbitMQ, Redis, nx-27017, demo downstreams, an optional fault proxy in front
of service-a, and the daemon as one or more separate processes (``python -m s2s_daemon run --config FILE``).

``Stack`` is a context manager; leaving it (normally, on an error, on Ctrl-C) stops everything it started,
by PID, in reverse order. ``processes.stop_all`` catches whatever a hard exit skipped.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import yaml

from s2s_daemon.cli import EXAMPLE_CONFIG
from s2s_daemon.local import free_port
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.outbox.documents import status_count_pipeline
from s2s_daemon.settings import AmqpSettings
from tests.harness.chaos.cluster import PrivateRabbitCluster
from tests.harness.chaos.processes import ChaosProcess
from tests.harness.chaos.proxy import ProxyThread
from tests.harness.chaos.sentinel import PRIMARY_NAME, PrivateSentinels
from tests.harness.chaos.services import DemoDownstreams, PrivateMongo, PrivateRabbit, PrivateRedis

__all__ = ["DaemonProcess", "Stack", "StackOptions"]

PREFIX = "chaos"
TOPOLOGY = Topology.from_settings(AmqpSettings(prefix=PREFIX), ("service-a", "service-b"))


@dataclass(frozen=True)
class StackOptions:
    replicas: int = 1
    proxy: bool = False  # service-a is reached through the fault proxy
    failing: bool = False  # a downstream "failing" whose demo answers 500 to everything
    config: dict[str, Any] = field(default_factory=dict)  # merged into the daemon config, per section
    downstream_config: dict[str, dict[str, Any]] = field(default_factory=dict)  # merged per downstream
    log_level: str = "INFO"
    cluster: int = 0  # >1: a private RabbitMQ cluster of this many nodes, the daemon given every node
    sentinel: bool = False  # Redis as a primary, a replica and three sentinels; the daemon asks the sentinels


class DaemonProcess:
    """One daemon replica: ``python -m s2s_daemon run`` with its own sidecar port."""

    def __init__(self, name: str, base: Path, config_path: Path, env: dict[str, str]) -> None:
        self.name = name
        self.port = free_port()
        self.process = ChaosProcess(
            name,
            [sys.executable, "-m", "s2s_daemon", "run", "--config", str(config_path)],
            base / f"{name}.log",
            {**env, "S2S_HTTP__PORT": str(self.port)},
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> DaemonProcess:
        self.process.start()
        return self

    def readyz(self, timeout: float = 2.0) -> int | None:
        """The status code of GET /readyz, or None when the sidecar does not answer."""
        try:
            return httpx.get(f"{self.url}/readyz", timeout=timeout).status_code
        except httpx.HTTPError:
            return None

    def wait_ready(self, timeout: float = 60.0) -> float:
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            self.process.check_alive()
            if self.readyz() == 200:
                return time.monotonic() - started
            time.sleep(0.1)
        raise TimeoutError(f"{self.name} not ready after {timeout:g}s; see {self.process.log_path}")

    def metrics(self) -> dict[str, float]:
        """Samples of the sidecar's /metrics summed by ``name{label="value",...}`` text; {} if it is gone."""
        from prometheus_client.parser import text_string_to_metric_families

        try:
            text = httpx.get(f"{self.url}/metrics", timeout=5).text
        except httpx.HTTPError:
            return {}
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = sample.value
        return out

    def kill(self) -> None:
        self.process.kill()

    def stop(self) -> None:
        self.process.stop(15)


class Stack:
    """``rabbit``: a private node shared with other stacks (the short runs in ``make test``); this stack then
    works in a virtual host of its own, deleted afterwards. Without it the stack starts (and stops) its own."""

    def __init__(self, base: Path, options: StackOptions | None = None, rabbit: PrivateRabbit | None = None) -> None:
        self.base = base
        self.options = options or StackOptions()
        self.cluster: PrivateRabbitCluster | None = None
        if self.options.cluster > 1:  # never the shared node: a cluster of the stack's own
            self.cluster = PrivateRabbitCluster(base / "rabbitmq", self.options.cluster)
            rabbit = None
        self.owns_rabbit = rabbit is None
        self.rabbit = self.cluster.seed if self.cluster else rabbit or PrivateRabbit(base / "rabbitmq")
        self.vhost = f"{PREFIX}-{base.name}-{uuid.uuid4().hex[:6]}"
        self.amqp_url = ""
        self.amqp_urls: list[str] = []  # every node's URL (one on a single node)
        self.sentinel = PrivateSentinels(base / "redis") if self.options.sentinel else None
        self.redis = self.sentinel.primary if self.sentinel else PrivateRedis(base / "redis")
        self.mongo = PrivateMongo(base / "mongo")
        self.demo = DemoDownstreams(base)
        self.failing: DemoDownstreams | None = None
        self.proxy: ProxyThread | None = None
        self.daemons: list[DaemonProcess] = []
        self.config_path = base / "daemon.yaml"
        self._replica_seq = 0
        self.timings: dict[str, float] = {}

    # names -------------------------------------------------------------------------------------
    @property
    def commands_exchange(self) -> str:
        return TOPOLOGY.commands_exchange_name

    @property
    def dlq(self) -> str:
        return TOPOLOGY.dlq_name

    @property
    def reply_queue(self) -> str:
        """The harness's own durable reply queue (not the daemon's: outside its prefix)."""
        return f"{PREFIX}-harness.replies"

    def close_all_connections(self) -> int:
        return self.rabbit.close_all_connections(self.vhost)

    def command_queue(self, downstream: str) -> str:
        return TOPOLOGY.command_queue_name(downstream)

    # lifecycle ---------------------------------------------------------------------------------
    def __enter__(self) -> Stack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.owns_rabbit:
            began = time.monotonic()
            if self.cluster is not None:
                self.cluster.start()
                self.timings.update({f"rabbitmq_{k}": v for k, v in self.cluster.timings.items()})
            else:
                self.rabbit.start()
            self.timings["rabbitmq_start_s"] = round(time.monotonic() - began, 2)
        if self.cluster is not None:
            self.amqp_urls = self.cluster.add_vhost(self.vhost)
        else:
            self.amqp_urls = [self.rabbit.add_vhost(self.vhost)]
        self.amqp_url = self.amqp_urls[0]
        if self.sentinel is not None:
            self.sentinel.start()
            self.timings.update(self.sentinel.timings)
        else:
            self.redis.start()
        self.mongo.start()
        self.demo.start()
        if self.options.failing:
            self.failing = DemoDownstreams(self.base, "demo-failing").start()
            self.failing.faults("a", status=500)
        if self.options.proxy:
            self.proxy = ProxyThread("127.0.0.1", self.demo.port_a).start()
        self.config_path.write_text(yaml.safe_dump(self.daemon_config(), sort_keys=False))
        began = time.monotonic()
        for _ in range(self.options.replicas):
            self.daemons.append(self.new_replica().start())
        for daemon in self.daemons:
            daemon.wait_ready()
        self.timings["daemons_ready_s"] = round(time.monotonic() - began, 2)

    def stop(self) -> None:
        for daemon in self.daemons:
            with contextlib.suppress(Exception):
                daemon.stop()
        if self.proxy is not None:
            with contextlib.suppress(Exception):
                self.proxy.stop()
        for service in (self.failing, self.demo, self.mongo, self.sentinel or self.redis):
            if service is not None:
                with contextlib.suppress(Exception):
                    service.stop()
        with contextlib.suppress(Exception):
            if self.cluster is not None:
                self.cluster.stop()
            elif self.owns_rabbit:
                self.rabbit.stop()
            elif self.amqp_url:
                self.rabbit.delete_vhost(self.vhost)

    def new_replica(self) -> DaemonProcess:
        self._replica_seq += 1
        broker = {"RABBITMQ_URLS": ",".join(self.amqp_urls)} if self.cluster else {"RABBITMQ_URL": self.amqp_url}
        sentinel = (
            {"S2S_REDIS_SENTINEL__ADDRESSES": ",".join(self.sentinel.addresses)}
            | {"S2S_REDIS_SENTINEL__PRIMARY_NAME": PRIMARY_NAME}
            if self.sentinel
            else {}
        )
        env = {
            **broker,
            **sentinel,
            "REDIS_URL": self.redis.url,
            "MONGODB_URI": self.mongo.uri,
            "LOG_LEVEL": self.options.log_level,
        }
        return DaemonProcess(f"daemon-{self._replica_seq}", self.base, self.config_path, env)

    def daemon_config(self) -> dict[str, Any]:
        """The example config re-pointed at this stack, plus the scenario's overrides."""
        config: dict[str, Any] = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
        config["log_format"] = "json"
        config["amqp"] = {**config.get("amqp", {}), "prefix": PREFIX, "graceful_timeout": 5.0}
        config["idempotency"] = {"key_prefix": f"{PREFIX}:idem:"}
        config["outbox"] = {"database": PREFIX}
        config["http"] = {"host": "127.0.0.1", "port": 0}
        downstreams = config["downstreams"]
        downstreams["service-a"]["base_url"] = self.proxy.url if self.proxy else self.demo.url_a
        downstreams["service-b"]["base_url"] = self.demo.url_b
        if self.failing is not None:
            downstreams["failing"] = {
                "base_url": self.failing.url_a,
                "routes": {"always-500": {"method": "POST", "path": "/resource"}},
            }
        for section, values in self.options.config.items():
            config[section] = {**config.get(section, {}), **values}
        for name, values in self.options.downstream_config.items():
            downstreams[name] = {**downstreams.get(name, {}), **values}
        return config

    # observations ------------------------------------------------------------------------------
    def queues(self) -> dict[str, dict[str, int]]:
        """Messages (ready + unacked) and consumers of every queue on the node (any running node of a cluster)."""
        if self.cluster is not None:
            return self.cluster.queues(self.vhost)
        out = self.rabbit.ctl(
            "list_queues", "-q", "-p", self.vhost, "name", "messages", "consumers", "--formatter", "json"
        )
        return {q["name"]: {"messages": int(q["messages"]), "consumers": int(q["consumers"])} for q in json.loads(out)}

    def outbox_counts(self) -> dict[str, int]:
        from pymongo import MongoClient

        client: MongoClient[dict[str, Any]] = MongoClient(self.mongo.uri, serverSelectionTimeoutMS=10_000)
        try:
            # counted as the daemon counts: count_documents holds nx-27017 while it scans
            collection = client[PREFIX]["outbox"]
            counts = {}
            for status in ("pending", "publishing", "sent", "dead"):
                rows = list(collection.aggregate(status_count_pipeline(status)))
                counts[status] = int(rows[0]["n"]) if rows else 0
            return counts
        finally:
            client.close()
