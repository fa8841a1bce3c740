"""A private Redis with Sentinel: a primary, a replica and three sentinels, all stock ``redis-server`` processes
on free ports (a sentinel is ``redis-server <conf> --sentinel``, its config file its own: sentinels rewrite it).

The sentinels agree (quorum 2) that the primary is down after ``down_after_ms`` and promote the replica.
Replication is asynchronous: what the primary acknowledged but had not yet sent to the replica is lost with it.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path
from typing import Any

from s2s_daemon.local import free_port
from tests.harness.chaos.processes import ChaosProcess
from tests.harness.chaos.services import PrivateRedis

__all__ = ["PrivateSentinels"]

PRIMARY_NAME = "chaosprimary"


class _Replica(PrivateRedis):
    """A redis-server that replicates ``primary_port`` from its start."""

    def __init__(self, base: Path, primary_port: int) -> None:
        super().__init__(base)
        self.primary_port = primary_port

    def start(self, timeout: float = 15.0) -> _Replica:
        executable = shutil.which("redis-server")
        if executable is None:
            raise RuntimeError("redis-server is not installed")
        self.base.mkdir(parents=True, exist_ok=True)
        argv = [executable, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no"]
        argv += ["--dir", str(self.base), "--replicaof", "127.0.0.1", str(self.primary_port)]
        self.process = ChaosProcess(
            "redis-replica", argv, self.base / "redis.log", ports=[self.port], start_timeout=timeout
        ).start()
        return self


class PrivateSentinels:
    def __init__(self, base: Path, sentinels: int = 3, down_after_ms: int = 2000) -> None:
        self.base = base
        self.primary = PrivateRedis(base / "primary")
        self.replica = _Replica(base / "replica", self.primary.port)
        self.ports = [free_port() for _ in range(sentinels)]
        self.down_after_ms = down_after_ms
        self.sentinels: list[ChaosProcess] = []
        self.timings: dict[str, float] = {}

    @property
    def addresses(self) -> list[str]:
        return [f"127.0.0.1:{port}" for port in self.ports]

    def start(self, timeout: float = 30.0) -> PrivateSentinels:
        began = time.monotonic()
        self.primary.start()
        self.replica.start()
        executable = shutil.which("redis-server")
        assert executable is not None
        for i, port in enumerate(self.ports):
            folder = self.base / f"sentinel{i + 1}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            conf.write_text(
                f"bind 127.0.0.1\nport {port}\ndir {folder}\n"
                f"sentinel monitor {PRIMARY_NAME} 127.0.0.1 {self.primary.port} 2\n"
                f"sentinel down-after-milliseconds {PRIMARY_NAME} {self.down_after_ms}\n"
                f"sentinel failover-timeout {PRIMARY_NAME} 10000\n"
                f"sentinel parallel-syncs {PRIMARY_NAME} 1\n"
            )
            self.sentinels.append(
                ChaosProcess(
                    f"sentinel-{i + 1}",
                    [executable, str(conf), "--sentinel"],
                    folder / "sentinel.log",
                    ports=[port],
                    start_timeout=timeout,
                ).start()
            )
        self.wait_until(lambda: self.replica_in_sync() and self.sentinels_agree(self.primary.port), timeout)
        self.timings["redis_sentinel_start_s"] = round(time.monotonic() - began, 2)
        return self

    def _sentinel(self, port: int) -> Any:
        import redis

        return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, decode_responses=True)

    def primary_port_seen(self, sentinel_port: int) -> int | None:
        try:
            with contextlib.closing(self._sentinel(sentinel_port)) as s:
                address = s.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", PRIMARY_NAME)
        except Exception:
            return None
        return int(address[1]) if address else None

    def sentinels_agree(self, port: int) -> bool:
        """Every sentinel names ``port`` as the primary and knows the other sentinels and the replica."""
        for sentinel_port in self.ports:
            try:
                with contextlib.closing(self._sentinel(sentinel_port)) as s:
                    state = s.execute_command("SENTINEL", "MASTER", PRIMARY_NAME)
            except Exception:
                return False
            info = dict(zip(state[::2], state[1::2], strict=True)) if isinstance(state, list) else dict(state)
            if int(info.get("port", 0)) != port or int(info.get("num-other-sentinels", 0)) < len(self.ports) - 1:
                return False
            if int(info.get("num-slaves", 0)) < 1 and port == self.primary.port:
                return False
        return True

    def replica_in_sync(self) -> bool:
        try:
            with contextlib.closing(self.replica.client()) as r:
                info = r.info("replication")
        except Exception:
            return False
        return bool(info.get("master_link_status") == "up")

    def wait_until(self, predicate: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise TimeoutError(f"Sentinel group not as expected after {timeout:g}s (see {self.base})")
            time.sleep(0.2)

    def cut_replication(self) -> int:
        """Close the primary's replication links (``CLIENT KILL TYPE replica``): what it writes from now on reaches
        no replica until one reconnects. Returns how many links were closed."""
        with contextlib.closing(self.primary.client()) as r:
            return int(r.execute_command("CLIENT", "KILL", "TYPE", "replica"))

    def kill_primary(self) -> None:
        self.primary.kill()

    def wait_failover(self, timeout: float = 60.0) -> float:
        """Until every sentinel names the replica as the primary; returns the seconds it took."""
        began = time.monotonic()
        self.wait_until(lambda: all(self.primary_port_seen(p) == self.replica.port for p in self.ports), timeout)
        return round(time.monotonic() - began, 2)

    def stop(self) -> None:
        for process in reversed(self.sentinels):
            with contextlib.suppress(Exception):
                process.stop(5)
        for server in (self.replica, self.primary):
            with contextlib.suppress(Exception):
                server.stop()
