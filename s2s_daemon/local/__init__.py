"""What `s2s-daemon dev` (make run) and the test suite start on one machine: the embedded Mongo-wire server, the
demo downstreams and the process manager behind both.

Needs the ``local`` extra (``pip install 's2s-daemon[local]'``); a production install (the image) has none of it.
"""

try:
    import mirakuru  # noqa: F401 - checked first, so the error names the extra, not a module deep inside
except ModuleNotFoundError as exc:  # pragma: no cover - the dev and test installs have it
    raise ModuleNotFoundError(
        "s2s_daemon.local needs the 'local' extra: pip install 's2s-daemon[local]'", name=exc.name
    ) from exc

from s2s_daemon.local.demo import Faults, ServiceState, demo_states, serve_demo, service_a, service_b
from s2s_daemon.local.mongo import EmbeddedMongo
from s2s_daemon.local.processes import ManagedProcess, free_port, port_open, wait_port

__all__ = [
    "EmbeddedMongo",
    "Faults",
    "ManagedProcess",
    "ServiceState",
    "demo_states",
    "free_port",
    "port_open",
    "serve_demo",
    "service_a",
    "service_b",
    "wait_port",
]
