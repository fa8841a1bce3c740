"""A private RabbitMQ cluster: three ``PrivateRabbit`` nodes sharing one HOME (one Erlang cookie), each with its
own node name, ports, mnesia and log folders; nodes 2.. join node 1 (``stop_app``, ``join_cluster``,
``start_app``).

Faults: a whole node stopped (``rabbitmqctl shutdown``: its clients' connections close) and started again on the
same files (it rejoins the cluster by itself). Observations: which node a client connection is on (by the
node's AMQP port) and which node leads a quorum queue.
"""

from __future__ import annotations

import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tests.harness.chaos.services import PrivateRabbit

__all__ = ["PrivateRabbitCluster"]


class PrivateRabbitCluster:
    def __init__(self, base: Path, size: int = 3) -> None:
        self.base = base
        self.home = base / "home"
        self.nodes = [PrivateRabbit(base / f"node{i + 1}", home=self.home) for i in range(size)]
        self.timings: dict[str, float] = {}

    @property
    def seed(self) -> PrivateRabbit:
        return self.nodes[0]

    def start(self) -> PrivateRabbitCluster:
        began = time.monotonic()
        self.home.mkdir(parents=True, exist_ok=True)
        # one cookie for all, written before any node starts (a node creates a missing one: they would race)
        cookie = self.home / ".erlang.cookie"
        if not cookie.exists():
            cookie.write_text(secrets.token_hex(16))
            cookie.chmod(0o400)
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.start(), self.nodes))
            self.timings["nodes_started_s"] = round(time.monotonic() - began, 2)
        # one at a time: two nodes joining the seed at once can fail in mnesia (`start_app` then exits with a
        # badmatch from mnesia_app, seen in a make test run)
        for node in self.nodes[1:]:
            self._join(node)
        self.wait_members(len(self.nodes))
        self.timings["cluster_formed_s"] = round(time.monotonic() - began, 2)
        return self

    def _join(self, node: PrivateRabbit) -> None:
        node.ctl("stop_app")
        node.ctl("join_cluster", self.seed.node)
        node.ctl("start_app")

    def running_nodes(self, via: PrivateRabbit | None = None) -> list[str]:
        via = via or next(n for n in self.nodes if n.process is not None and n.process.alive())
        status = json.loads(via.ctl("cluster_status", "--formatter", "json"))
        running: list[str] = status.get("running_nodes", [])
        return running

    def wait_members(self, count: int, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.running_nodes()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"cluster has {self.running_nodes()} running, wanted {count}")
            time.sleep(0.5)

    def urls_for(self, vhost: str) -> list[str]:
        return [node.url_for(vhost) for node in self.nodes]

    def add_vhost(self, vhost: str) -> list[str]:
        """A virtual host (cluster-wide) guest may use; returns one URL per node."""
        self.seed.add_vhost(vhost)
        return self.urls_for(vhost)

    def node_named(self, name: str) -> PrivateRabbit:
        return next(n for n in self.nodes if n.node == name)

    def node_on_port(self, port: int) -> PrivateRabbit:
        return next(n for n in self.nodes if n.port == port)

    def any_running(self) -> PrivateRabbit:
        return next(n for n in self.nodes if n.process is not None and n.process.alive())

    # observations ------------------------------------------------------------------------------
    def connections(self, vhost: str) -> list[dict[str, Any]]:
        """Client connections of ``vhost`` across the cluster: name (connection_name), node (by port)."""
        out = self.any_running().ctl(
            "list_connections", "-q", "vhost", "port", "client_properties", "--formatter", "json"
        )
        rows = []
        for row in json.loads(out):
            if row.get("vhost") != vhost:
                continue
            props = row.get("client_properties") or []
            name = next((p[2] for p in props if isinstance(p, list) and p[0] == "connection_name"), "")
            rows.append({"name": name, "node": self.node_on_port(int(row["port"])).node})
        return rows

    def node_of_connection(self, vhost: str, name_part: str) -> PrivateRabbit | None:
        for row in self.connections(vhost):
            if name_part in row["name"]:
                return self.node_named(row["node"])
        return None

    def quorum_queues(self, vhost: str) -> dict[str, dict[str, Any]]:
        """Leader, members and online members of every quorum queue of ``vhost``."""
        out = self.any_running().ctl(
            "list_queues", "-q", "-p", vhost, "name", "type", "leader", "members", "online", "--formatter", "json"
        )
        return {
            q["name"]: {"leader": q.get("leader"), "members": q.get("members"), "online": q.get("online")}
            for q in json.loads(out)
            if q.get("type") == "quorum"
        }

    def queues(self, vhost: str) -> dict[str, dict[str, int]]:
        out = self.any_running().ctl(
            "list_queues", "-q", "-p", vhost, "name", "messages", "consumers", "--formatter", "json"
        )
        return {q["name"]: {"messages": int(q["messages"]), "consumers": int(q["consumers"])} for q in json.loads(out)}

    # faults ------------------------------------------------------------------------------------
    def stop_node(self, node: PrivateRabbit) -> None:
        """Shut the whole node down (its Erlang VM exits; its clients' connections close)."""
        node.stop()

    def start_node(self, node: PrivateRabbit, timeout: float = 90.0) -> None:
        """Start a stopped node on its own files: it rejoins the cluster."""
        node.start(timeout)
        self.wait_members(len(self.nodes), timeout)

    def stop(self) -> None:
        with ThreadPoolExecutor(len(self.nodes)) as pool:
            list(pool.map(lambda node: node.stop(), reversed(self.nodes)))
