"""The embedded Mongo-wire server (nx-27017 on SQLite) for `make run` and the test suite.

Production points ``MONGODB_URI`` at real MongoDB. Each instance gets its own port, pid file, log file and
data file: nx-27017's default pid file in the temp folder makes a second instance refuse to start.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from types import TracebackType

from s2s_daemon.local.processes import HOST, ManagedProcess, free_port

__all__ = ["EmbeddedMongo"]


def _executable() -> str:
    found = shutil.which("nx-27017", path=str(Path(sys.executable).parent)) or shutil.which("nx-27017")
    if found is None:
        raise RuntimeError("nx-27017 is not installed: pip install 's2s-daemon[local]' (make run does)")
    return found


class EmbeddedMongo:
    def __init__(self, data_dir: Path, port: int | None = None, host: str = HOST) -> None:
        self.data_dir = Path(data_dir)
        self.host = host
        self.port = port or free_port(host)
        self.process: ManagedProcess | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "nx-27017.log"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.alive() else None

    def start(self, timeout: float = 15.0) -> EmbeddedMongo:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            _executable(),
            "--db", str(self.data_dir / "s2s.db"),
            "--host", self.host,
            "--port", str(self.port),
            "--pid-file", str(self.data_dir / "nx-27017.pid"),
            "--log-file", str(self.log_file),
        ]  # fmt: skip
        process = ManagedProcess("nx-27017", argv, ports=[self.port], host=self.host, start_timeout=timeout)
        try:
            self.process = process.start()
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; see {self.log_file}") from None
        return self

    def stop(self, timeout: float = 5.0) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL, for crash tests."""
        process, self.process = self.process, None
        if process is not None:
            process.kill()

    def __enter__(self) -> EmbeddedMongo:
        return self.start()

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()
