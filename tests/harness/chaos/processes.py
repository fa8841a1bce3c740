"""Everything the chaos harness starts is registered, and stopped again whatever happens.

The children themselves are the package's ``ManagedProcess`` (own session, stopped by PID: SIGTERM to the group,
SIGKILL after a grace; mirakuru kills leftovers at interpreter exit). What the harness adds is the registry:
``stop_all`` (run at interpreter exit, on SIGTERM and after every scenario) stops whatever is still running,
newest first, and ``pending_cleanups`` lets a test assert that a scenario left nothing behind.
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections.abc import Callable
from typing import Self

from s2s_daemon.local import ManagedProcess

__all__ = ["ChaosProcess", "on_cleanup", "pending_cleanups", "stop_all"]

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


class ChaosProcess(ManagedProcess):
    """A managed child registered for ``stop_all`` from its start until it is stopped or killed."""

    _forget: Callable[[], None] | None = None

    def start(self) -> Self:
        super().start()
        self._forget = on_cleanup(self._stop_at_exit)
        return self

    def kill(self) -> int | None:
        code = super().kill()
        self._unregister()
        return code

    def stop(self, grace: float = 10.0) -> int | None:
        code = super().stop(grace)
        self._unregister()
        return code

    def _stop_at_exit(self) -> None:
        self.stop(5)

    def _unregister(self) -> None:
        if self._forget is not None:
            self._forget()
            self._forget = None
