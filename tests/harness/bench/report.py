"""The pure parts of the benchmark: percentiles, histogram quantiles, the results table, the JSON file.

Nothing here starts processes or talks to the network, so the unit tests cover it directly.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

Buckets = list[tuple[float, float]]  # (upper bound "le", cumulative count), ascending, +Inf last


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) with linear interpolation between ranks (numpy's default); None if empty."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    if lo == hi:
        return ordered[lo]
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def latency_summary(seconds: Sequence[float]) -> dict[str, float | None]:
    """p50/p95/p99/max/mean in milliseconds."""
    ms = [s * 1000 for s in seconds]
    return {
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else None,
        "mean_ms": sum(ms) / len(ms) if ms else None,
    }


def histogram_quantile(q: float, buckets: Buckets) -> float | None:
    """Prometheus' ``histogram_quantile``: linear interpolation inside the bucket holding rank ``q * total``.

    A rank that falls into the +Inf bucket returns the highest finite bound (the estimate is then a floor).
    None when the histogram is empty.
    """
    if not 0 <= q <= 1:
        raise ValueError(f"quantile must be within 0..1, got {q}")
    if not buckets or buckets[-1][1] <= 0:
        return None
    if not math.isinf(buckets[-1][0]):
        raise ValueError("the last bucket must be +Inf")
    total = buckets[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in buckets:
        if count >= rank and count > prev_count:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le  # pragma: no cover - the +Inf bucket always holds the total


def parse_histogram(text: str, name: str, match: Mapping[str, str] | None = None) -> Buckets:
    """Cumulative buckets of histogram ``name`` from Prometheus text, summed over its other labels.

    ``match`` keeps only the series carrying these label values (``{"downstream": "service-a"}``).
    """
    sums: dict[float, float] = {}
    for family in text_string_to_metric_families(text):
        if family.name != name:
            continue
        for sample in family.samples:
            if sample.name != f"{name}_bucket":
                continue
            if match and any(sample.labels.get(k) != v for k, v in match.items()):
                continue
            le = float(sample.labels["le"])
            sums[le] = sums.get(le, 0.0) + sample.value
    return sorted(sums.items())


def histogram_mean(text: str, name: str) -> float | None:
    """``_sum / _count`` over all series of histogram ``name``; None when it has no observations."""
    totals = {"sum": 0.0, "count": 0.0}
    for family in text_string_to_metric_families(text):
        if family.name == name:
            for sample in family.samples:
                suffix = sample.name.removeprefix(f"{name}_")
                if suffix in totals:
                    totals[suffix] += sample.value
    return totals["sum"] / totals["count"] if totals["count"] else None


def bucket_delta(after: Buckets, before: Buckets) -> Buckets:
    """``after - before`` per bucket: the observations made between two scrapes of the same histogram."""
    earlier = dict(before)
    return [(le, count - earlier.get(le, 0.0)) for le, count in after]


def counter_total(text: str, name: str) -> float:
    """Sum of a counter over all its labels (``name`` without ``_total``, as the parser reports it)."""
    base = name.removesuffix("_total")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == base
        for sample in family.samples
        if sample.name == f"{base}_total"
    )


# formatting --------------------------------------------------------------------------------------------
def fmt_num(value: float | None, digits: int = 0, unit: str = "") -> str:
    """``1234.5 -> '1,235'``; None -> 'n/a'."""
    if value is None:
        return "n/a"
    return f"{value:,.{digits}f}{unit}"


def fmt_ratio(numerator: float | None, denominator: float | None) -> str:
    """``0.4567 -> '0.46x'``; 'n/a' when either side is missing or the denominator is zero."""
    if numerator is None or not denominator:
        return "n/a"
    return f"{numerator / denominator:.2f}x"


def format_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A Markdown table with padded columns (pasteable into the README)."""
    body = [list(map(str, row)) for row in rows]
    for row in body:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, the table has {len(headers)} columns: {row}")
    widths = [max(len(cell) for cell in column) for column in zip(headers, *body, strict=True)]

    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)) + " |"

    separator = "|" + "|".join("-" * (width + 2) for width in widths) + "|"
    return "\n".join([line(headers), separator, *(line(row) for row in body)])


@dataclass(frozen=True, slots=True)
class TargetRow:
    """One row per issue-8 target: what, the target, what we measured, and the ratio or the honest note."""

    measure: str
    target: str
    measured: str
    notes: str

    def cells(self) -> tuple[str, str, str, str]:
        return (self.measure, self.target, self.measured, self.notes)


TARGET_HEADERS = ("measure", "target", "measured", "ratio / notes")


def targets_table(rows: Sequence[TargetRow]) -> str:
    return format_table(TARGET_HEADERS, [row.cells() for row in rows])


def save_json(path: Path, data: Mapping[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n", encoding="utf-8")
    return path
