"""The embedded Mongo-wire server (nx-27017 on SQLite) for `make run` and the test suite.

Production points ``MONGODB_URI`` at real MongoDB. Each instance gets its own port, pid file, log file and
data file: nx-27017's default pid file in the temp folder makes a second instance refuse to start.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return 32768, 60999


def free_port(host: str = "127.0.0.1") -> int:
    """A free port *below* the kernel's ephemeral range.

    A server that is stopped and started again on the same port (the broker's stop_app/start_app, Redis and
    nx-27017 restarts in the tests and the chaos suite) must not get a port from that range: while it is down,
    clients reconnecting to it can be handed that very port as their source port and connect to themselves
    (TCP self-connect), and the server then fails to listen (eaddrinuse).
    """
    low, _ = _ephemeral_range()
    top = max(low - 1, 10_001)
    for _ in range(200):
        port = random.randint(10_000, top)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low} on {host}")


def _executable() -> list[str]:
    found = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")
    if found is None:
        raise RuntimeError("nx-27017 is not installed: run `make run` or `pip install nx-27017`")
    return [found]


class EmbeddedMongo:
    def __init__(self, data_dir: Path, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "nx-27017.log"

    def start(self, timeout: float = 15.0) -> EmbeddedMongo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            *_executable(),
            "--db",
            str(self.data_dir / "s2s.db"),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--pid-file",
            str(self.data_dir / "nx-27017.pid"),
            "--log-file",
            str(self.log_file),
        ]
        self.process = subprocess.Popen(
            cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nx-27017 exited with {self.process.returncode}; see {self.log_file}")
            with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), timeout=0.2):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"nx-27017 did not listen on {self.host}:{self.port} within {timeout}s")

    def stop(self, timeout: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def __enter__(self) -> EmbeddedMongo:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
