"""The chaos table (one row per scenario) and the JSON file a run leaves under ``.chaos/``."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.harness.chaos.run import ScenarioResult

__all__ = ["format_table", "save_json"]

_COLUMNS = (
    ("scenario", 52),
    ("size", 7),
    ("sent", 6),
    ("replied", 7),
    ("lost", 4),
    ("dup replies", 11),
    ("dup effects", 11),
    ("recovered", 9),
    ("dead-lettered", 13),
    ("recover s", 9),
    ("drain s", 7),
    ("result", 6),
)


def _size(result: ScenarioResult) -> str:
    size = result.size
    if "good" in size:
        return f"{size['good']}+{sum(size.get('mix', {}).values())}"
    return str(size.get("commands", "?"))


def _num(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def row(result: ScenarioResult, index: int) -> list[str]:
    c = result.counters
    cells = [f"{index}. {result.title}", _size(result)]
    if c is None:
        cells += ["-"] * 9
    else:
        cells += [
            _num(c.sent),
            _num(c.replied),
            _num(c.lost),
            _num(c.duplicated_replies),
            _num(c.duplicate_effects),
            _num(c.recovered),
            _num(c.dead_lettered),
            _num(c.recover_s),
            _num(c.drain_s),
        ]
    cells.append("PASS" if result.passed else "FAIL")
    return cells


def format_table(results: Sequence[ScenarioResult], markdown: bool = False) -> str:
    """A plain-text (or Markdown) table, then one line per failed check or error."""
    header = [name for name, _ in _COLUMNS]
    rows = [row(r, i) for i, r in enumerate(results, 1)]
    lines = []
    if markdown:
        lines.append("| " + " | ".join(header) + " |")
        lines.append("|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|")
        lines.extend("| " + " | ".join(cells) + " |" for cells in rows)
    else:
        widths = [max(w, len(h), *(len(r[i]) for r in rows)) for i, (h, w) in enumerate(_COLUMNS)]
        lines.append(_line(header, widths))
        lines.append("  ".join("-" * w for w in widths))
        lines.extend(_line(cells, widths) for cells in rows)
    for i, result in enumerate(results, 1):
        if result.error:
            lines.append(f"  {i}. error: {result.error}")
        for check, ok in result.checks.items():
            if not ok:
                lines.append(f"  {i}. failed check: {check}")
    return "\n".join(lines)


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(cells))


def save_json(results: Sequence[ScenarioResult], path: Path, meta: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {**meta, "passed": all(r.passed for r in results), "scenarios": [r.as_dict() for r in results]}
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
