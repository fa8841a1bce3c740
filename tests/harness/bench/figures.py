"""Figures read out of a run's results (the JSON the runner saves): one stream, CPU per command, RSS growth,
the rate at a share of the measured maximum, and the met/MISSED wording. Pure: dicts in, numbers and text out.

Both target tables (``summary`` and ``issue_targets``) and the runner (for the ``rate-80`` scenario) read them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

Check = tuple[str, bool | None]  # (what, met?) with None for "not measured"


def stream(results: dict[str, Any], scenario: str, index: int = 0) -> dict[str, Any] | None:
    """Stream ``index`` of a command scenario's result; None when the scenario did not run."""
    got = results.get("scenarios", {}).get(scenario)
    if not got or len(got.get("streams", [])) <= index:
        return None
    value: dict[str, Any] = got["streams"][index]
    return value


def verdict(ok: bool) -> str:
    return "met" if ok else "MISSED"


def combine(checks: Sequence[Check]) -> str:
    """One verdict for a row of several checks: ``met`` only when every check was measured and met.

    ``MISSED: p50`` names the checks that missed, ``not measured`` when none was measured, and
    ``met: RSS; not measured: growth`` when what was measured is met but a part is missing.
    """
    missed = [name for name, ok in checks if ok is False]
    unmeasured = [name for name, ok in checks if ok is None]
    met = [name for name, ok in checks if ok is True]
    if missed:
        text = "MISSED: " + ", ".join(missed)
        return text + ("; not measured: " + ", ".join(unmeasured) if unmeasured else "")
    if not unmeasured:
        return "met"
    if not met:
        return "not measured"
    return "met: " + ", ".join(met) + "; not measured: " + ", ".join(unmeasured)


def at_most(value: float | None, bound: float) -> bool | None:
    """``value <= bound``, None when the value was not measured."""
    return None if value is None else value <= bound


def at_least(value: float | None, bound: float) -> bool | None:
    """``value >= bound``, None when the value was not measured."""
    return None if value is None else value >= bound


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``; None when either side is missing or the denominator is zero."""
    if numerator is None or not denominator:
        return None
    return numerator / denominator


def rss_growth(series: list[list[float]] | list[tuple[float, float]], skip_fraction: float = 0.1) -> float | None:
    """Relative RSS growth from the first sample after the warm-up share of the soak to the last one."""
    if len(series) < 2:
        return None
    end_t = series[-1][0]
    warm = [point for point in series if point[0] >= end_t * skip_fraction]
    base, last = (warm[0][1], warm[-1][1]) if len(warm) >= 2 else (series[0][1], series[-1][1])
    return (last - base) / base if base else None


def cpu_ms_per_command(scenario: dict[str, Any], only: Iterable[str] | None = None) -> float | None:
    """CPU milliseconds per completed command (or webhook), summed over every process the bench measured
    (the daemon, the reference under test, the load generator, the demo downstreams, nx-27017, and the shared
    RabbitMQ and Redis when the bench could tell them apart): the measure that the shared machine's noise
    moves least, since time spent waiting for a core is not counted. ``only`` restricts the sum to those
    process names (to compare with a figure recorded over fewer processes)."""
    procs = scenario.get("processes", {})
    wanted = None if only is None else set(only)
    total_pct = sum(
        s["cpu_pct_of_core"] for p, s in procs.items() if p != "machine" and (wanted is None or p in wanted)
    )
    streams = scenario.get("streams", [scenario])  # the webhook scenario is one stream of its own
    rate = sum(s.get("throughput_per_s") or 0.0 for s in streams)
    if not procs or rate <= 0:
        return None
    return float(total_pct * 10 / rate)


def share_of_max(
    results: dict[str, Any], share: float, fallback: float
) -> tuple[float, Literal["max", "plan"], float | None]:
    """The rate to offer at ``share`` of the ``max`` scenario's measured commands/s in this run:
    ``(rate, "max", measured)``, or ``(fallback, "plan", None)`` when max did not run (or completed nothing)
    or ran on several daemons (then it is not one daemon's maximum)."""
    scenario = results.get("scenarios", {}).get("max") or {}
    measured = (stream(results, "max") or {}).get("throughput_per_s")
    if not measured or scenario.get("replicas", 1) > 1:
        return fallback, "plan", None
    return round(share * measured, 1), "max", measured
