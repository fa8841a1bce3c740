"""``make bench``: the daemon end to end under load, beside a bare FastStream reference, on one machine.

Starts its own nx-27017, demo downstreams, daemons and reference app as separate processes, drives load from
another process, prints one row per issue-8 target and saves the results as JSON under ``.bench/``.
"""

from tests.harness.bench.cli import main
from tests.harness.bench.runner import FULL, QUICK, Bench, Plan

__all__ = ["FULL", "QUICK", "Bench", "Plan", "main"]
