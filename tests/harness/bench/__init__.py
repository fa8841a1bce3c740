"""``make bench``: the daemon end to end under load, beside two references, on one machine.

The references are a bare FastStream app and a hand-written aio-pika pipeline. Starts its own nx-27017, demo
downstreams, daemons and both reference apps as separate processes, drives load from
another process, prints one row per issue-13 target (beside the references and "today's" daemon, the code when
the issue was filed, run in the same invocation), then one per original issue-8 target, and saves the results as
JSON under ``.bench/``.
"""

from tests.harness.bench.cli import main
from tests.harness.bench.runner import FULL, QUICK, Bench, Plan

__all__ = ["FULL", "QUICK", "Bench", "Plan", "main"]
