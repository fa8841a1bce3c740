"""The process manager (s2s_daemon.local.processes) on small Python children: ports, exits, SIGTERM, SIGKILL."""

from __future__ import annotations

import signal
import socket
import sys
from pathlib import Path

import pytest

from s2s_daemon.local import ManagedProcess, free_port, port_open

LISTEN = """
import signal, socket, sys, time
if sys.argv[1] == "stubborn":
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
servers = []
for port in sys.argv[2:]:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", int(port)))
    s.listen()
    servers.append(s)
print("listening", flush=True)
time.sleep(60)
"""


def _listener(tmp_path: Path, *ports: int, stubborn: bool = False, timeout: float = 20.0) -> ManagedProcess:
    argv = [sys.executable, "-c", LISTEN, "stubborn" if stubborn else "polite", *map(str, ports)]
    return ManagedProcess("listener", argv, tmp_path / "listener.log", ports=ports, start_timeout=timeout)


def test_start_waits_for_every_port_and_stop_sends_sigterm(tmp_path: Path) -> None:
    """start() returns once all ports accept connections; stop() ends the child with SIGTERM and frees them."""
    a, b = free_port(), free_port()
    proc = _listener(tmp_path, a, b).start()
    assert port_open(a)
    assert port_open(b)
    assert proc.alive()
    assert proc.stop() == -signal.SIGTERM
    assert not proc.alive()
    assert not port_open(a)
    assert "listening" in (tmp_path / "listener.log").read_text()


def test_stop_escalates_to_sigkill_after_the_grace(tmp_path: Path) -> None:
    """A child that ignores SIGTERM is SIGKILLed once the grace is over."""
    proc = _listener(tmp_path, free_port(), stubborn=True).start()
    assert proc.stop(grace=0.5) == -signal.SIGKILL


def test_kill_is_a_sigkill(tmp_path: Path) -> None:
    """kill() is a crash: SIGKILL, no grace."""
    proc = _listener(tmp_path, free_port()).start()
    assert proc.kill() == -signal.SIGKILL
    assert proc.stop() == -signal.SIGKILL  # stopping a dead child only reports how it ended


def test_a_child_that_exits_before_listening_fails_start_with_its_log(tmp_path: Path) -> None:
    """A child that dies on start fails start() with its exit code and the end of its log."""
    argv = [sys.executable, "-c", "import sys; print('boom: bad flag'); sys.exit(3)"]
    proc = ManagedProcess("broken", argv, tmp_path / "broken.log", ports=[free_port()])
    with pytest.raises(RuntimeError, match=r"broken exited with 3(.|\n)*boom: bad flag"):
        proc.start()


def test_a_child_that_never_listens_times_out(tmp_path: Path) -> None:
    """A child that never opens its port fails start() with TimeoutError and is not left running."""
    argv = [sys.executable, "-c", "import time; time.sleep(60)"]
    proc = ManagedProcess("deaf", argv, tmp_path / "deaf.log", ports=[free_port()], start_timeout=0.5)
    with pytest.raises(TimeoutError, match="deaf did not listen"):
        proc.start()
    assert not proc.alive()


def test_a_taken_port_is_refused_before_spawning(tmp_path: Path) -> None:
    """Something else already listens on the port: start() refuses instead of waiting for the wrong server."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(RuntimeError, match="already taken"):
            _listener(tmp_path, port).start()


def test_free_port_is_below_the_ephemeral_range() -> None:
    """free_port never hands out a port the kernel could pick as a client's source port."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    assert all(free_port() < low for _ in range(20))
