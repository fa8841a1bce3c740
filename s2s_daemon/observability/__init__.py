"""Logging, metrics, correlation and trace context, dependency probes, sampled gauges, the package version."""

from s2s_daemon.observability.correlation import TraceContext, clean_id, new_correlation_id
from s2s_daemon.observability.history import HistoryPoint, MetricsHistory
from s2s_daemon.observability.logging import configure_logging, get_logger, redact_secrets, redact_url
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.observability.probes import CheckResult, Status, ping_check, wait_uncancelled
from s2s_daemon.observability.sampler import QueueNames, StateSampler
from s2s_daemon.observability.version import package_version

__all__ = [
    "CheckResult",
    "HistoryPoint",
    "Metrics",
    "MetricsHistory",
    "QueueNames",
    "StateSampler",
    "Status",
    "TraceContext",
    "clean_id",
    "configure_logging",
    "get_logger",
    "new_correlation_id",
    "package_version",
    "ping_check",
    "redact_secrets",
    "redact_url",
    "wait_uncancelled",
]
