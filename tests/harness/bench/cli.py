"""``python -m tests.harness.bench [--quick] [--scenarios A,B] [--soak SECONDS] ...`` (``make bench``)."""

from __future__ import annotations

import argparse
import dataclasses
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from tests.harness.bench.baseline import BASELINE_REV
from tests.harness.bench.report import save_json
from tests.harness.bench.runner import FULL, QUICK, SCENARIOS, Bench, Plan
from tests.harness.bench.summary import reference_ratios, render


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tests.harness.bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a short run (<= 60 s on 2 cores)")
    parser.add_argument("--count", type=int, help="commands per max-throughput run (instead of --seconds)")
    parser.add_argument("--seconds", type=float, help="length of the max-throughput runs (instead of --count)")
    parser.add_argument("--inflight", type=int, help="commands kept in flight in max-throughput runs")
    parser.add_argument("--rate", type=float, help="offered commands/s for the latency run")
    parser.add_argument("--rate-seconds", type=float, help="length of the latency run")
    parser.add_argument(
        "--replicas",
        type=int,
        help="daemons sharing one namespace in the max run (default 1: then a separate 2-replica run follows)",
    )
    parser.add_argument("--webhook-concurrency", type=int, help="webhook deliveries in flight (default 32)")
    parser.add_argument(
        "--webhook-seconds", type=float, help="length of the webhook run (quick: 2.5; full: by count instead)"
    )
    parser.add_argument("--soak", type=float, default=0.0, metavar="SECONDS", help="RSS soak at --rate")
    parser.add_argument(
        "--profile", type=float, default=0.0, metavar="SECONDS", help="py-spy the daemon under max load"
    )
    parser.add_argument(
        "--scenarios",
        type=lambda text: tuple(part for part in text.split(",") if part),
        help=f"comma-separated subset of {','.join(SCENARIOS)} (default: all)",
    )
    parser.add_argument(
        "--baseline-rev",
        metavar="REV",
        help=f'git revision of "today\'s" daemon in the baseline scenario (default {BASELINE_REV})',
    )
    parser.add_argument("--dir", type=Path, default=Path(".bench"), help="results, logs and the Mongo files")
    parser.add_argument("--keep-files", action="store_true", help="keep the Mongo-wire data files")
    return parser


def plan_from(args: argparse.Namespace) -> Plan:
    unknown = set(args.scenarios or ()) - set(SCENARIOS)
    if unknown:
        raise SystemExit(f"unknown scenarios: {sorted(unknown)}; choose from {', '.join(SCENARIOS)}")
    if args.replicas is not None and args.replicas < 1:
        raise SystemExit("--replicas must be at least 1")
    plan = QUICK if args.quick else FULL
    overrides = {
        "count": args.count,
        "seconds": args.seconds if args.seconds is not None else (0.0 if args.count else None),
        "inflight": args.inflight,
        "rate": args.rate,
        "rate_seconds": args.rate_seconds,
        "soak_seconds": args.soak or None,
        "profile_seconds": args.profile or None,
        "scenarios": args.scenarios,
        "replicas": args.replicas,
        "webhook_concurrency": args.webhook_concurrency,
        "baseline_rev": args.baseline_rev,
        "webhook_seconds": args.webhook_seconds,
    }
    return dataclasses.replace(plan, **{k: v for k, v in overrides.items() if v is not None})


def _git_revision() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return rev.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the runner's finally stops every process it started
    signal.signal(signal.SIGTERM, _raise_interrupt)
    bench = Bench(plan_from(args), args.dir, keep_files=args.keep_files, log=lambda m: print(m, file=sys.stderr))
    bench.results["git"] = _git_revision()
    status = 0
    try:
        bench.run()
    except KeyboardInterrupt:
        print("bench: interrupted; every process it started was stopped", file=sys.stderr)
        bench.results["error"] = "interrupted"
        status = 130
    except Exception as exc:
        print(f"bench: failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        bench.results["error"] = f"{type(exc).__name__}: {exc}"
        status = 1
    bench.results["versus_references"] = reference_ratios(bench.results)
    path = save_json(args.dir / f"results-{bench.stamp}.json", bench.results)
    print(render(bench.results))
    print(f"\nresults: {path}; logs: {bench.dir}", file=sys.stderr)
    return status
