"""What `s2s-daemon dev` and the test suite start themselves: the Mongo-wire server and child processes.

Needs the ``local`` extra (``pip install 's2s-daemon[local]'``); a production install has neither.
"""

try:
    import mirakuru  # noqa: F401 - checked first, so the error names the extra, not a module deep inside
except ModuleNotFoundError as exc:  # pragma: no cover - the dev and test installs have it
    raise ModuleNotFoundError(
        "s2s_daemon.embedded needs the 'local' extra: pip install 's2s-daemon[local]'", name=exc.name
    ) from exc

from s2s_daemon.embedded.mongo import EmbeddedMongo
from s2s_daemon.embedded.processes import ManagedProcess, free_port, port_open, wait_port

__all__ = ["EmbeddedMongo", "ManagedProcess", "free_port", "port_open", "wait_port"]
