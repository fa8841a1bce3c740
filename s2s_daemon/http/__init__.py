"""The HTTP sidecar: the app (health, metrics, command and read API, webhooks in, status, admin) and its server."""

from s2s_daemon.http.app import SidecarContext, create_app
from s2s_daemon.http.health import CheckResult, HealthCheck, backlog_check, breaker_check, ping_check, run_checks
from s2s_daemon.http.server import SidecarServer

__all__ = [
    "CheckResult",
    "HealthCheck",
    "SidecarContext",
    "SidecarServer",
    "backlog_check",
    "breaker_check",
    "create_app",
    "ping_check",
    "run_checks",
]
