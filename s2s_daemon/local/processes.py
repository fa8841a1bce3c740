"""Child processes started, waited for and stopped by PID: the one process manager of `s2s-daemon dev`, the
test suite, the benchmark and the chaos harness, on mirakuru.

mirakuru starts every child in its own session (a Ctrl-C in the terminal reaches only the parent), waits until
its TCP ports accept connections, and stops it by signalling the process group its PID leads: SIGTERM, then
SIGKILL once the grace is over. It marks each child with an environment variable, so grandchildren that left
the group are found and signalled too, and whatever is still running at interpreter exit is killed. psutil
(mirakuru's dependency) finds them.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO, Any, Self

import mirakuru.base
import psutil
from mirakuru import TCPExecutor
from mirakuru.exceptions import AlreadyRunning, ProcessExitedWithError, TimeoutExpired

__all__ = ["ManagedProcess", "free_port", "port_open", "wait_port"]

HOST = "127.0.0.1"


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):  # pragma: no cover - not Linux
        return 32768, 60999


def free_port(host: str = HOST) -> int:
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


def port_open(port: int, host: str = HOST) -> bool:
    """Whether ``host:port`` accepts a TCP connection now."""
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
        return True
    return False


def wait_port(port: int, timeout: float, proc: ManagedProcess | None = None, host: str = HOST) -> float:
    """Seconds until ``host:port`` accepts connections; fails early when ``proc`` exits meanwhile."""
    started = time.perf_counter()
    deadline = started + timeout
    while time.perf_counter() < deadline:
        if proc is not None:
            proc.check_alive()
        if port_open(port, host):
            return time.perf_counter() - started
        time.sleep(0.02)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g}s")


def _kill_leftovers() -> None:
    """SIGKILL every process still marked as started by this one (by mirakuru, for us)."""
    ours = f"{os.getpid()}:"
    for proc in psutil.process_iter(["environ"]):
        marker = (proc.info.get("environ") or {}).get(mirakuru.base.ENV_UUID, "")
        if marker.startswith(ours):
            with contextlib.suppress(psutil.Error):
                proc.kill()


_exit_hook_installed = False


def _install_exit_hook() -> None:
    """Replace mirakuru's exit hook, which kills every process whose marker merely *contains* our PID's digits
    (it can hit the children of another process: an xdist worker, another suite on the machine), with one that
    matches the marker's exact prefix."""
    global _exit_hook_installed
    if not _exit_hook_installed:
        _exit_hook_installed = True
        atexit.unregister(mirakuru.base.cleanup_subprocesses)
        atexit.register(_kill_leftovers)


class _Executor(TCPExecutor):
    """mirakuru's TCPExecutor waiting for every port of ``ports`` (none: started once spawned), whose stop grace
    is given per stop (mirakuru uses its start timeout for both)."""

    def __init__(self, command: Sequence[str], host: str, ports: Sequence[int], **kwargs: Any) -> None:
        super().__init__(list(command), host, ports[0] if ports else 0, **kwargs)
        self.ports = tuple(ports)

    def pre_start_check(self) -> bool:
        return any(port_open(port, self.host) for port in self.ports)

    def after_start_check(self) -> bool:
        return all(port_open(port, self.host) for port in self.ports)

    def stop_within(self, grace: float) -> None:
        self._timeout = grace
        self.stop()


class ManagedProcess:
    """One child in its own session, its output in ``log_path`` (None: discarded), ready once ``ports`` listen."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        log_path: Path | None = None,
        env: Mapping[str, str] | None = None,
        *,
        ports: Sequence[int] = (),
        host: str = HOST,
        start_timeout: float = 30.0,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or {})
        self.ports = tuple(ports)
        self.host = host
        self.start_timeout = start_timeout
        self.started_at = 0.0
        self.popen: subprocess.Popen[Any] | None = None
        self._executor: _Executor | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def start(self) -> Self:
        """Spawn the child and wait until every port accepts connections (RuntimeError/TimeoutError if not)."""
        _install_exit_hook()
        output: IO[bytes] | int = subprocess.DEVNULL
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = output = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop() and kill()
        executor = self._executor = _Executor(
            self.argv,
            self.host,
            self.ports,
            timeout=self.start_timeout,
            sleep=0.02,
            envvars=self.env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        self.started_at = time.perf_counter()
        try:
            executor.start()
        except AlreadyRunning:
            self._close()
            raise RuntimeError(f"{self.name}: a port of {self.ports} on {self.host} is already taken") from None
        except ProcessExitedWithError as exc:
            self._close()
            raise RuntimeError(f"{self.name} exited with {exc.exit_code}{self._see_log()}") from None
        except TimeoutExpired:  # mirakuru has killed it
            self._close()
            raise TimeoutError(
                f"{self.name} did not listen on {self.host}:{self.ports} within {self.start_timeout:g}s"
                f"{self._see_log()}"
            ) from None
        self.popen = executor.process
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        """Raise RuntimeError (with the end of its log) if the child has exited."""
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}{self._see_log()}")

    def tail(self, lines: int = 20) -> str:
        if self.log_path is None:
            return ""
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill(self) -> int | None:
        """SIGKILL the group and reap it (a crash, not a shutdown); returns the exit code."""
        if self._executor is not None:
            self._executor.kill()
        self._close()
        return None if self.popen is None else self.popen.returncode

    def stop(self, grace: float = 10.0) -> int | None:
        """SIGTERM to the group, SIGKILL after ``grace`` seconds; returns the exit code."""
        if self._executor is None or self.popen is None:
            return self.returncode
        self.signal(signal.SIGCONT)  # a paused child cannot handle SIGTERM
        with contextlib.suppress(ProcessExitedWithError):  # a non-zero exit is the caller's to judge
            self._executor.stop_within(grace)
        # helpers left in the group after the leader exited (beam's erl_child_setup, ...)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self._close()
        return self.popen.returncode

    def _see_log(self) -> str:
        return f"; see {self.log_path}:\n{self.tail()}" if self.log_path is not None else ""

    def _close(self) -> None:
        self._executor = None
        if self._log is not None:
            self._log.close()
            self._log = None
