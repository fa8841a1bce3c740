"""Optional py-spy profile of the daemon under max load, summarised from py-spy's collapsed-stack output.

py-spy (``pip install py-spy``) samples the daemon from outside; ``--format raw`` writes one line per distinct
stack, ``frame;frame;...;leaf count``, each frame ``function (package/file.py:line)``. Idle samples (the
event loop waiting in epoll) are left out by py-spy, so the shares are of the time the daemon was on CPU.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


@dataclass(frozen=True, slots=True)
class Frame:
    function: str
    file: str

    @property
    def package(self) -> str:
        """``httpcore/_async/http11.py`` -> ``httpcore``; ``uuid.py`` -> ``uuid``; ``<native>`` stays."""
        head = self.file.replace("\\", "/").lstrip("/").split("/", 1)[0]
        return head.removesuffix(".py") or self.file

    @property
    def label(self) -> str:
        return f"{self.function} ({self.file})"


def parse_frame(text: str) -> Frame:
    match = _FRAME.match(text.strip())
    if match is None:
        return Frame(text.strip(), "?")
    return Frame(match["func"], match["file"])


def parse_collapsed(lines: Iterable[str]) -> list[tuple[list[Frame], int]]:
    """``a (x.py:1);b (y.py:2) 7`` -> ``[([Frame a, Frame b], 7)]``; blank or malformed lines are skipped."""
    stacks = []
    for line in lines:
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not stack or not count.isdigit():
            continue
        stacks.append(([parse_frame(f) for f in stack.split(";")], int(count)))
    return stacks


def summarize(stacks: list[tuple[list[Frame], int]], top: int = 10) -> dict[str, object]:
    """Self time by function and by package (of the leaf frame), and inclusive time of our own functions."""
    total = sum(count for _, count in stacks)
    by_function: Counter[str] = Counter()
    by_package: Counter[str] = Counter()
    ours_inclusive: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        leaf = frames[-1]
        by_function[leaf.label] += count
        by_package[leaf.package] += count
        for label in {f.label for f in frames if f.package == "s2s_daemon"}:
            ours_inclusive[label] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / total, 1)) for name, n in counter.most_common(top)] if total else []

    return {
        "samples": total,
        "self_by_function_pct": shares(by_function),
        "self_by_package_pct": shares(by_package),
        "inclusive_s2s_daemon_pct": shares(ours_inclusive),
    }


def py_spy_path() -> str | None:
    return shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")


def start_py_spy(
    pid: int, seconds: float, out_dir: Path, name: str = "daemon", *, svg: bool = False
) -> tuple[subprocess.Popen[bytes], Path, Path]:
    """Record ``pid`` for ``seconds`` as collapsed stacks (speedscope.app opens them too), or as a flame graph.

    ``--gil`` keeps only samples holding the GIL: Python on CPU. Idle worker threads blocked in a
    ``Condition.wait`` would otherwise count as busy.
    """
    exe = py_spy_path()
    if exe is None:
        raise RuntimeError("py-spy is not installed: .venv/bin/pip install py-spy")
    out = out_dir / (f"profile-{name}.svg" if svg else f"profile-{name}.txt")
    log = out_dir / f"py-spy-{name}{'-svg' if svg else ''}.log"
    cmd = [exe, "record", "--pid", str(pid), "--duration", str(int(seconds)), "--format"]
    cmd += ["flamegraph" if svg else "raw", "--rate", "100", "--gil", "--nonblocking", "--output", str(out)]
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    return proc, out, log


def format_summary(summary: dict[str, object]) -> str:
    lines = [f"py-spy samples holding the GIL: {summary['samples']}"]
    for key, title in (
        ("self_by_package_pct", "self time by package"),
        ("self_by_function_pct", "self time by function"),
        ("inclusive_s2s_daemon_pct", "inclusive time, s2s_daemon functions"),
    ):
        lines.append(f"  {title}:")
        entries = summary.get(key)
        assert isinstance(entries, list)
        lines.extend(f"    {pct:5.1f}%  {name}" for name, pct in entries)
    return "\n".join(lines)
