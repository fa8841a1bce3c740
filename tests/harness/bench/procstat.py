"""CPU seconds and memory of a process (and its children) from /proc.

Read directly rather than through psutil: the bench reports peak RSS (VmHWM), which psutil does not give on Linux,
and the whole machine's busy time from /proc/stat; the parsers are unit-tested.

Read-only: the benchmark also reads the shared RabbitMQ and Redis this way, and never signals them.
"""

from __future__ import annotations

import contextlib
import os
import resource
from dataclasses import dataclass

_CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True, slots=True)
class ProcSample:
    """CPU seconds (user+system) and memory of one process and its children, at one moment."""

    cpu_seconds: float
    rss_mb: float
    peak_rss_mb: float  # VmHWM: the high-water mark over the process' life (largest single process)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as fh:
                found.extend(int(child) for child in fh.read().split())
    return found


def parse_stat_cpu(stat: str) -> float:
    """utime + stime (fields 14 and 15 of proc_pid_stat(5)) in seconds.

    The command name (field 2) may hold spaces and parentheses, so the fields are counted after the last ')'.
    """
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _CLK_TCK


def parse_status_memory(status: str) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB from /proc/<pid>/status; zero when absent (kernel threads, zombies)."""
    memory = {"VmRSS": 0.0, "VmHWM": 0.0}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in memory:
            memory[key] = int(value.split()[0]) / 1024
    return memory["VmRSS"], memory["VmHWM"]


def _one(pid: int) -> ProcSample | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            stat = fh.read()
        with open(f"/proc/{pid}/status") as fh:
            status = fh.read()
    except OSError:
        return None
    rss, peak = parse_status_memory(status)
    return ProcSample(parse_stat_cpu(stat), rss, peak)


def sample(pid: int) -> ProcSample | None:
    """The process and its descendants summed; None if it is gone."""
    root = _one(pid)
    if root is None:
        return None
    cpu, rss, peak = root.cpu_seconds, root.rss_mb, root.peak_rss_mb
    stack = _children(pid)
    while stack:
        child = stack.pop()
        got = _one(child)
        if got is not None:
            cpu += got.cpu_seconds
            rss += got.rss_mb
            peak = max(peak, got.peak_rss_mb)
            stack.extend(_children(child))
    return ProcSample(cpu, rss, peak)


def find_pids_by_name(name: str) -> list[int]:
    """PIDs whose command name is ``name`` (to read the shared RabbitMQ's and Redis' CPU; never to signal)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError), open(f"/proc/{entry}/comm") as fh:
                if fh.read().strip() == name:
                    pids.append(int(entry))
    return pids


def parse_machine_busy(stat: str) -> float:
    """Busy CPU seconds of the whole machine, all cores, from the ``cpu`` line of /proc/stat (idle, iowait out)."""
    fields = stat.split("\n", 1)[0].split()
    if fields[0] != "cpu":
        raise ValueError("the first line of /proc/stat must be the 'cpu' total")
    values = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(values) - values[3] - values[4]) / _CLK_TCK


def machine_sample() -> ProcSample:
    """The whole machine as a pseudo-process (memory not tracked): shows load that is not ours."""
    with open("/proc/stat") as fh:
        return ProcSample(parse_machine_busy(fh.read()), 0.0, 0.0)


def sample_watched(watch: dict[str, int]) -> dict[str, ProcSample | None]:
    """A load generator's view: itself (``loadgen``), the whole machine, and each watched process by name."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = ProcSample(usage.ru_utime + usage.ru_stime, 0.0, usage.ru_maxrss / 1024)
    return {"loadgen": own, "machine": machine_sample()} | {name: sample(pid) for name, pid in watch.items()}


def process_deltas(
    before: dict[str, ProcSample | None], after: dict[str, ProcSample | None], elapsed: float
) -> dict[str, dict[str, float]]:
    """CPU seconds spent in the window, as a share of one core, and memory at its end."""
    out = {}
    for name, end in after.items():
        start = before.get(name)
        if start is None or end is None:
            continue
        cpu = end.cpu_seconds - start.cpu_seconds
        out[name] = {
            "cpu_seconds": round(cpu, 2),
            "cpu_pct_of_core": round(100 * cpu / elapsed, 1) if elapsed > 0 else 0.0,
            "rss_mb": round(end.rss_mb, 1),
            "peak_rss_mb": round(end.peak_rss_mb, 1),
        }
    return out
