"""Health in application/health+json (draft-inadarei-api-health-check): pass | warn | fail per dependency."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from s2s_daemon.observability.probes import CheckResult, Status, ping_check, wait_uncancelled
from s2s_daemon.resilience.breaker import BreakerState, CircuitBreaker

__all__ = [
    "CheckFn",
    "CheckResult",
    "HealthCheck",
    "HealthReport",
    "backlog_check",
    "breaker_check",
    "ping_check",
    "run_checks",
    "wait_uncancelled",
]

_ORDER = {"pass": 0, "warn": 1, "fail": 2}


CheckFn = Callable[[], Awaitable[CheckResult]]


@dataclass
class HealthCheck:
    name: str  # "<component>:<measurement>", e.g. "redis:responseTime"
    component_type: str
    fn: CheckFn
    affects_readiness: bool = True


@dataclass
class HealthReport:
    status: Status
    checks: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def body(self, service_id: str, version: str) -> dict[str, Any]:
        return {"status": self.status, "serviceId": service_id, "version": version, "checks": self.checks}


async def run_checks(checks: list[HealthCheck], *, readiness_only: bool = False) -> HealthReport:
    selected = [c for c in checks if c.affects_readiness or not readiness_only]
    results = await asyncio.gather(*(c.fn() for c in selected))
    now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
    report = HealthReport("pass")
    for check, result in zip(selected, results, strict=True):
        entry: dict[str, Any] = {"componentType": check.component_type, "status": result.status, "time": now}
        if result.output:
            entry["output"] = result.output
        if result.observed_value is not None:
            entry["observedValue"] = result.observed_value
            entry["observedUnit"] = result.observed_unit
        report.checks.setdefault(check.name, []).append(entry)
        if _ORDER[result.status] > _ORDER[report.status]:
            report.status = result.status
    return report


def breaker_check(breaker: CircuitBreaker) -> CheckFn:
    """``pass`` while CLOSED (observed: failure rate of the window), ``warn`` while OPEN or HALF_OPEN."""

    async def check() -> CheckResult:
        snapshot = breaker.metrics_snapshot()
        if snapshot.state is BreakerState.OPEN:
            wait = breaker.seconds_until_half_open()
            return CheckResult("warn", f"breaker open; probes in {wait:.0f}s", snapshot.failure_rate, "%")
        if snapshot.state is BreakerState.HALF_OPEN:
            return CheckResult("warn", "breaker half-open: probing", snapshot.failure_rate, "%")
        return CheckResult("pass", observed_value=round(snapshot.failure_rate, 1), observed_unit="%")

    return check


def backlog_check(count: Callable[[], Awaitable[int]], warn_above: int, timeout: float = 2.0) -> CheckFn:
    """``warn`` when more than ``warn_above`` outbox documents wait to be published, or when it cannot count."""

    async def check() -> CheckResult:
        try:
            backlog = await wait_uncancelled(count(), timeout)
        except Exception as exc:
            return CheckResult("warn", f"cannot count the backlog: {type(exc).__name__}"[:200])
        if backlog > warn_above:
            return CheckResult("warn", f"{backlog} documents waiting (warn above {warn_above})", backlog, "documents")
        return CheckResult("pass", observed_value=backlog, observed_unit="documents")

    return check
