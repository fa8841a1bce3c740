"""Private backing services for one chaos scenario: a RabbitMQ node, a Redis, an nx-27017 and the demo
downstreams, each on its own free port with its files under the scenario's folder. Never the shared
RabbitMQ on 5672 or Redis on 6379.

Each service exposes the faults the scenarios inject: force-closing broker connections, pausing the broker's
VM (SIGSTOP/SIGCONT on beam.smp), stopping and starting the rabbit application, pausing Redis (CLIENT PAUSE)
or killing it and starting an empty one on the same port, killing nx-27017 and restarting it on the same data
file.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from importlib.resources import files
from itertools import count
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from s2s_daemon.local import EmbeddedMongo, free_port, wait_port
from tests.harness.chaos.processes import ChaosProcess, on_cleanup

__all__ = ["DemoDownstreams", "PrivateMongo", "PrivateRabbit", "PrivateRedis"]

RABBIT_BIN = Path(os.environ.get("S2S_CHAOS_RABBITMQ_BIN", "/usr/lib/rabbitmq/bin"))
# the broker settings we ship (docker-compose.yml mounts the same file): the chaos node runs with them
BROKER_CONF = Path(str(files("s2s_daemon") / "config" / "rabbitmq.conf"))
_nodes = count(1)


class PrivateRabbit:
    """A RabbitMQ node of our own: own node name, ports, HOME (Erlang cookie), mnesia and log folders.

    The node reads no system config: RABBITMQ_CONFIG_FILE and RABBITMQ_CONF_ENV_FILE point at private files
    (the system's rabbitmq.conf pins a listener to 5672) and the plugins file is empty (no management).
    Its rabbitmq.conf is the one we ship (``s2s_daemon/config/rabbitmq.conf``: max_message_size).
    """

    def __init__(self, base: Path, home: Path | None = None) -> None:
        self.base = base
        self.node = f"chaos-{os.getpid()}-{next(_nodes)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        # the nodes of one cluster share a HOME, hence one Erlang cookie
        self.home = home or base / "home"
        self.process: ChaosProcess | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/"

    def url_for(self, vhost: str) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/{quote(vhost, safe='')}"

    def add_vhost(self, vhost: str) -> str:
        """A fresh virtual host guest may use; returns its URL (one per scenario on a shared node)."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        return self.url_for(vhost)

    def delete_vhost(self, vhost: str) -> None:
        self.ctl("delete_vhost", vhost, check=False)

    def _env(self) -> dict[str, str]:
        return {
            "HOME": str(self.home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq"),  # rabbitmq.conf in our folder
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(self.base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
        }

    def start(self, timeout: float = 60.0) -> PrivateRabbit:
        for folder in (self.home, self.base / "mnesia", self.base / "log"):
            folder.mkdir(parents=True, exist_ok=True)
        (self.base / "enabled_plugins").write_text("[].\n")
        (self.base / "rabbitmq.conf").write_text(BROKER_CONF.read_text())
        (self.base / "rabbitmq-env.conf").write_text("")
        self.process = ChaosProcess(
            "rabbitmq", [str(RABBIT_BIN / "rabbitmq-server")], self.base / "rabbitmq-server.log", self._env()
        ).start()
        self.await_startup(timeout)
        return self

    def ctl(self, *args: str, timeout: float = 60.0, check: bool = True) -> str:
        """``rabbitmqctl -n <node> ...`` with our HOME, so it presents our node's Erlang cookie."""
        result = subprocess.run(
            [str(RABBIT_BIN / "rabbitmqctl"), "-n", self.node, *args],
            env={**os.environ, **self._env()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"rabbitmqctl {' '.join(args)} failed ({result.returncode}): {result.stderr.strip()}")
        return result.stdout

    def await_startup(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            assert self.process is not None
            self.process.check_alive()
            try:
                self.ctl("await_startup", "--timeout", "10", timeout=20)
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        wait_port(self.port, max(1.0, deadline - time.monotonic()), self.process)

    @property
    def beam_pid(self) -> int:
        """The Erlang VM's PID (the node writes it once booted)."""
        return int((self.base / "rabbit.pid").read_text().strip())

    # faults ------------------------------------------------------------------------------------
    def close_all_connections(self, vhost: str = "/") -> int:
        """Force-close every client connection of ``vhost``; returns how many were closed."""
        out = self.ctl("close_all_connections", "--vhost", vhost, "chaos: forced close")
        found = re.search(r"Closed (\d+) connections", out)
        return int(found.group(1)) if found else -1

    def pause(self) -> str:
        """SIGSTOP the Erlang VM; returns its scheduler state afterwards ("T": stopped)."""
        pid = self.beam_pid
        os.kill(pid, signal.SIGSTOP)
        time.sleep(0.05)
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]

    def resume(self) -> None:
        os.kill(self.beam_pid, signal.SIGCONT)

    def stop_app(self) -> None:
        self.ctl("stop_app")

    def start_app(self) -> None:
        self.ctl("start_app")
        self.ctl("await_startup", "--timeout", "60", timeout=90)

    def stop(self) -> None:
        if self.process is None:
            return
        if self.process.alive():
            with contextlib.suppress(OSError):
                os.kill(self.beam_pid, signal.SIGCONT)
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired, OSError):
                self.ctl("shutdown", timeout=30)
        self.process.stop(10)


class PrivateRedis:
    """A redis-server without persistence on a free port; it can be paused, killed and started empty."""

    def __init__(self, base: Path) -> None:
        self.base = base
        self.port = free_port()
        self.process: ChaosProcess | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 15.0) -> PrivateRedis:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed")
        self.base.mkdir(parents=True, exist_ok=True)
        argv = [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.base)]
        self.process = ChaosProcess(
            "redis", argv, self.base / "redis.log", ports=[self.port], start_timeout=timeout
        ).start()
        return self

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def pause(self, seconds: float) -> None:
        """CLIENT PAUSE ALL: every client's commands block for ``seconds`` (the server stays up)."""
        with contextlib.closing(self.client()) as r:
            r.execute_command("CLIENT", "PAUSE", str(int(seconds * 1000)), "ALL")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def restart_empty(self, timeout: float = 15.0) -> None:
        """Start a fresh server on the same port: every record is gone, as after a crash without persistence."""
        self.start(timeout)

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(5)


class PrivateMongo:
    """nx-27017 on a free port; killed and restarted on the same port and data file."""

    def __init__(self, base: Path) -> None:
        self.server = EmbeddedMongo(base)
        self._forget = on_cleanup(self.server.stop)

    @property
    def uri(self) -> str:
        return self.server.uri

    def start(self) -> PrivateMongo:
        self.server.start()
        return self

    def kill(self) -> None:
        self.server.kill()

    def restart(self) -> None:
        self.server.start()

    def stop(self) -> None:
        self.server.stop()
        self._forget()


class DemoDownstreams:
    """``python -m s2s_daemon demo`` as a process: service-a and service-b with their fault knobs and /_stats."""

    def __init__(self, base: Path, name: str = "demo") -> None:
        self.base = base
        self.name = name
        self.port_a = free_port()
        self.port_b = free_port()
        self.process: ChaosProcess | None = None

    @property
    def url_a(self) -> str:
        return f"http://127.0.0.1:{self.port_a}"

    @property
    def url_b(self) -> str:
        return f"http://127.0.0.1:{self.port_b}"

    def start(self, timeout: float = 30.0) -> DemoDownstreams:
        argv = [sys.executable, "-m", "s2s_daemon", "demo", "--port-a", str(self.port_a)]
        argv += ["--port-b", str(self.port_b)]
        self.process = ChaosProcess(
            self.name, argv, self.base / f"{self.name}.log", ports=[self.port_a, self.port_b], start_timeout=timeout
        ).start()
        return self

    def stats(self, service: str = "a") -> dict[str, Any]:
        url = self.url_a if service == "a" else self.url_b
        response = httpx.get(f"{url}/_stats", timeout=30)
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    def faults(self, service: str = "a", **knobs: Any) -> None:
        url = self.url_a if service == "a" else self.url_b
        httpx.post(f"{url}/_faults", json=knobs, timeout=10).raise_for_status()

    def reset(self, service: str = "a") -> None:
        """Forget calls, effects and keys (the counters start again from zero)."""
        url = self.url_a if service == "a" else self.url_b
        httpx.post(f"{url}/_reset", timeout=10).raise_for_status()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(5)
