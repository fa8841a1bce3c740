"""Child processes the chaos harness starts, and stops again by PID, whatever happens.

Every child runs in its own session (``start_new_session``): a Ctrl-C in the terminal reaches only the harness,
and stopping a child signals the process group its PID leads (rabbitmq-server's shell wrapper, beam.smp and
its helpers go together). Every started child is registered; ``stop_all`` (also run at interpreter exit and on
SIGTERM) stops whatever is still running, newest first.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO

from s2s_daemon.embedded.mongo import free_port  # one implementation: below the ephemeral range

__all__ = ["ManagedProcess", "free_port", "on_cleanup", "pending_cleanups", "stop_all", "wait_port"]

_lock = threading.Lock()
_cleanups: list[Callable[[], None]] = []
_installed = False


def on_cleanup(fn: Callable[[], None]) -> Callable[[], None]:
    """Run ``fn`` in ``stop_all`` (at exit, on SIGTERM). Returns a callable that unregisters it."""
    global _installed
    with _lock:
        _cleanups.append(fn)
        if not _installed:
            _installed = True
            atexit.register(stop_all)

    def forget() -> None:
        with _lock, contextlib.suppress(ValueError):
            _cleanups.remove(fn)

    return forget


def pending_cleanups() -> int:
    """How many started things are still registered for stopping."""
    with _lock:
        return len(_cleanups)


def stop_all() -> None:
    """Stop everything still registered, newest first; one failure does not keep the others running."""
    while True:
        with _lock:
            if not _cleanups:
                return
            fn = _cleanups.pop()
        with contextlib.suppress(Exception):
            fn()


def wait_port(port: int, timeout: float, proc: ManagedProcess | None = None, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None:
            proc.check_alive()
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.2):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g}s")


class ManagedProcess:
    """One child in its own session with its output in a log file."""

    def __init__(self, name: str, argv: Sequence[str], log_path: Path, env: Mapping[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_path
        self.env = dict(env or {})
        self.popen: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._forget: Callable[[], None] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None, f"{self.name} was not started"
        return self.popen.pid

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.popen = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        self._forget = on_cleanup(self._stop_at_exit)
        return self

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def check_alive(self) -> None:
        if self.popen is not None and self.popen.poll() is not None:
            raise RuntimeError(f"{self.name} exited with {self.popen.returncode}; see {self.log_path}:\n{self.tail()}")

    def tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the child's whole process group."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)

    def kill(self) -> int | None:
        """SIGKILL the group and reap it (a crash, not a shutdown)."""
        proc = self.popen
        if proc is None:
            return None
        self.signal(signal.SIGKILL)
        proc.wait(10)
        self._close()
        return proc.returncode

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGCONT + SIGTERM to the group, SIGKILL after ``timeout``; returns the exit code."""
        proc = self.popen
        if proc is None:
            return None
        if proc.poll() is None:
            self.signal(signal.SIGCONT)  # a paused child cannot handle SIGTERM
            self.signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.signal(signal.SIGKILL)
                proc.wait(10)
        # helpers left in the group after the leader exited (beam's erl_child_setup, ...)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        self._close()
        return proc.returncode

    def _stop_at_exit(self) -> None:
        self.stop(5)

    def _close(self) -> None:
        if self._forget is not None:
            self._forget()
            self._forget = None
        if self._log is not None:
            self._log.close()
            self._log = None
