"""``python -m tests.harness.chaos``: run the scenarios, print the table, save JSON under ``.chaos/``.

Exit code 0 when every scenario passed, 1 otherwise, 130 on Ctrl-C (everything started is stopped first).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.harness.chaos.processes import stop_all
from tests.harness.chaos.report import format_table, save_json
from tests.harness.chaos.run import ScenarioResult
from tests.harness.chaos.scenarios import SCENARIOS, run_scenario


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.chaos", description=__doc__)
    parser.add_argument("--short", action="store_true", help="the short sizes (as in make test)")
    parser.add_argument("--only", default="", help=f"comma-separated scenario names: {','.join(SCENARIOS)}")
    parser.add_argument("--out", default=".chaos", help="folder for run logs and JSON (default .chaos)")
    parser.add_argument("--keep-data", action="store_true", help="keep broker/store data folders after a run")
    parser.add_argument("--markdown", action="store_true", help="also print the table as Markdown")
    return parser


def _sigterm(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # unwinds through every finally, which stops what was started


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}; choose from {', '.join(SCENARIOS)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _sigterm)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    run_dir = Path(args.out) / f"run-{stamp}"
    results: list[ScenarioResult] = []
    began = time.monotonic()
    size = "short" if args.short else "full"
    print(f"chaos: {len(names)} scenario(s), {size} size, logs under {run_dir}", flush=True)
    try:
        for i, name in enumerate(names, 1):
            print(f"[{i}/{len(names)}] {name}: {SCENARIOS[name].title} ...", end=" ", flush=True)
            result = run_scenario(name, run_dir / name, short=args.short, keep_data=args.keep_data)
            results.append(result)
            c = result.counters
            summary = f"lost={c.lost} dup_effects={c.duplicate_effects}" if c else ""
            print(f"{'PASS' if result.passed else 'FAIL'} in {result.seconds:.0f}s {summary}", flush=True)
            if result.error:
                print(f"    {result.error}", flush=True)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything started", file=sys.stderr)
        stop_all()
        return 130
    finally:
        stop_all()
        meta = {
            "started": stamp,
            "size": size,
            "seconds": round(time.monotonic() - began, 1),
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        }
        if results:
            save_json(results, run_dir / "results.json", meta)
            save_json(results, Path(args.out) / "latest.json", meta)
    print()
    print(format_table(results))
    if args.markdown:
        print()
        print(format_table(results, markdown=True))
    print(
        f"\n{sum(r.passed for r in results)}/{len(results)} passed in {time.monotonic() - began:.0f}s; "
        f"JSON: {run_dir / 'results.json'}"
    )
    return 0 if all(r.passed for r in results) else 1
