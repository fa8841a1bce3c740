"""The replicas, webhook, rate-80 and baseline scenarios of `make bench`: guarantees, rows, plans, deliveries."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from starlette.datastructures import Headers

from s2s_daemon.http.webhooks import build_verifier
from s2s_daemon.settings import WebhookSourceSettings
from tests.harness.bench.baseline import BASELINE_REV, export_package
from tests.harness.bench.cli import build_parser, plan_from
from tests.harness.bench.figures import share_of_max
from tests.harness.bench.runner import EXAMPLE_CONFIG, FULL, QUICK, WEBHOOK_SOURCE, guarantees
from tests.harness.bench.spec import WebhookSpec
from tests.harness.bench.summary import target_rows
from tests.harness.bench.webhook_load import WebhookLoad


def _stream(tput: float, succeeded: int = 100, missing: int = 0) -> dict[str, Any]:
    return {"throughput_per_s": tput, "succeeded": succeeded, "failed": 0, "missing": missing, "publish_errors": 0}


def test_guarantees_count_duplicate_effects_and_lost_commands() -> None:
    """Effects beyond distinct keys are duplicates; a command without a reply is lost; re-calls are apart."""
    result = {"streams": [_stream(1.0, succeeded=98, missing=2)], "stray_replies": 1}
    got = guarantees(result, {"effects": 111, "calls": 115, "distinct_keys": 110}, warmup=10)
    assert got["duplicate_effects"] == 1
    assert got["effects_beyond_successes"] == 3
    assert got["downstream_recalls"] == 5
    assert got["lost"] == 2
    assert got["duplicated_replies"] == 1


def test_clean_run_has_no_duplicates_and_nothing_lost() -> None:
    """Every command answered once, one effect per key: all counters are zero."""
    got = guarantees({"streams": [_stream(1.0)]}, {"effects": 150, "calls": 150, "distinct_keys": 150}, warmup=50)
    counters = ("duplicate_effects", "lost", "downstream_recalls", "effects_beyond_successes")
    assert [got[name] for name in counters] == [0, 0, 0, 0]


def _clean(processes: dict[str, Any] | None = None) -> dict[str, Any]:
    g = {"duplicate_effects": 0, "lost": 0, "effects": 10, "distinct_keys": 10, "downstream_recalls": 0}
    return {"streams": [_stream(1400.0)], "replicas": 2, "guarantees": g, "processes": processes or {}}


def test_replicas_row_reports_the_combined_rate_and_cpu_per_daemon() -> None:
    """The 2-replica row gives the combined rate, its ratio to one daemon, each daemon's CPU and the counters."""
    procs = {"daemon": {"cpu_pct_of_core": 90.0}, "daemon-r2": {"cpu_pct_of_core": 85.0}}
    results = {"scenarios": {"max": {"streams": [_stream(700.0)]}, "replicas": _clean(procs)}}
    row = next(r for r in target_rows(results) if "replicas" in r.measure)
    assert row.measure == "end-to-end commands/s, 2 replicas"
    assert row.measured == "1,400/s"
    assert row.notes.startswith("met")
    assert "2.00x of one daemon" in row.notes
    assert "daemon 90%, daemon-r2 85%" in row.notes
    assert "duplicate effects 0" in row.notes
    assert "lost 0" in row.notes
    assert "bare FastStream not run, hand-written pipeline not run" in row.notes


def test_replicas_row_misses_on_a_duplicate_effect_even_when_fast() -> None:
    """Speed does not count when a guarantee broke."""
    scenario = _clean()
    scenario["guarantees"]["duplicate_effects"] = 1
    row = next(r for r in target_rows({"scenarios": {"replicas": scenario}}) if "replicas" in r.measure)
    assert row.notes.startswith("MISSED")


def test_replicas_row_reads_the_max_run_under_replicas_n() -> None:
    """With --replicas 3 the max run itself is the multi-daemon run."""
    scenario = _clean()
    scenario["replicas"] = 3
    row = next(r for r in target_rows({"scenarios": {"max": scenario}}) if "replicas" in r.measure)
    assert row.measure == "end-to-end commands/s, 3 replicas"


def test_webhook_row_needs_rate_latency_and_every_answer_2xx() -> None:
    """The webhook row is met only with the rate, the p99 and no non-2xx answer."""
    webhook = {
        "throughput_per_s": 1600.0,
        "latency": {"p50_ms": 8.0, "p99_ms": 18.0},
        "requests": 1000,
        "ok_2xx": 1000,
        "accepted_202": 1000,
        "statuses": {"202": 1000},
        "errors": {},
        "concurrency": 32,
        "outbox": {"lag_p99_ms": 12.0},
    }
    row = next(r for r in target_rows({"scenarios": {"webhook": webhook}}) if r.measure.startswith("webhook"))
    assert row.measured == "1,600/s, p50 8.0 ms, p99 18.0 ms"
    assert row.notes.startswith("met")
    webhook |= {"ok_2xx": 999, "statuses": {"202": 999, "503": 1}}
    row = next(r for r in target_rows({"scenarios": {"webhook": webhook}}) if r.measure.startswith("webhook"))
    assert row.notes.startswith("MISSED")


def test_generated_deliveries_pass_the_daemons_verifier() -> None:
    """Deliveries signed by the standardwebhooks library verify with the example config's acme source."""
    example = yaml.safe_load(EXAMPLE_CONFIG.read_text(encoding="utf-8"))
    source = example["webhooks"][WEBHOOK_SOURCE]
    verifier = build_verifier(WebhookSourceSettings.model_validate(source))
    load = WebhookLoad(WebhookSpec("http://127.0.0.1:1/api/webhooks/acme", source["secrets"][0], 4, 10))
    seen = set()
    for _ in range(3):
        body, headers = load._delivery()
        verified = verifier.verify(body, Headers(headers), now=time.time())
        assert verified.event_type == "bench.ping"
        seen.add(verified.delivery_id)
    assert len(seen) == 3


def test_webhook_spec_round_trips_through_json() -> None:
    """The webhook load generator gets its spec as JSON on the command line."""
    spec = WebhookSpec("http://x/api/webhooks/acme", "whsec_eA==", 8, 100, seconds=2.0, watch={"daemon": 1})
    assert WebhookSpec.from_json(spec.to_json()) == spec


def test_quick_plan_includes_the_replicas_and_webhook_runs(tmp_path: Path) -> None:
    """--quick runs one daemon in max plus a separate 2-replica run; --replicas N puts N daemons in max."""
    plan = plan_from(build_parser().parse_args(["--quick", "--dir", str(tmp_path)]))
    assert plan.replicas == 1
    assert {"replicas", "webhook"} <= set(plan.scenarios) == set(QUICK.scenarios)
    assert plan_from(build_parser().parse_args(["--replicas", "3"])).replicas == 3


def test_webhook_run_length_is_a_flag() -> None:
    """--webhook-seconds sets the webhook window (quick's default 2.5 s otherwise)."""
    assert plan_from(build_parser().parse_args(["--quick"])).webhook_seconds == QUICK.webhook_seconds == 2.5
    longer = plan_from(build_parser().parse_args(["--quick", "--scenarios", "webhook", "--webhook-seconds", "8"]))
    assert (longer.webhook_seconds, longer.scenarios) == (8.0, ("webhook",))


def test_handwritten_reference_runs_by_default_and_by_name() -> None:
    """The hand-written pipeline runs in the full and quick plans and can be picked with --scenarios."""
    assert "handwritten" in FULL.scenarios
    assert "handwritten" in plan_from(build_parser().parse_args(["--quick"])).scenarios
    picked = plan_from(build_parser().parse_args(["--quick", "--scenarios", "max,reference,handwritten"]))
    assert picked.scenarios == ("max", "reference", "handwritten")


def test_tracing_row_prints_the_ratios_to_the_untraced_run() -> None:
    """The tracing scenario's row gives traced/untraced max throughput at 100% and 10% sampling."""

    def run(rate: float) -> dict[str, Any]:
        return {"streams": [{"throughput_per_s": rate}]}

    results: dict[str, Any] = {
        "scenarios": {"tracing-off": run(400.0), "tracing-100": run(300.0), "tracing-10": run(380.0)},
        "tracing": {
            "spans_received": 12345,
            "tracing-off": {"per_s": 400.0, "cpu_ms_per_command": 2.0},
            "tracing-100": {"per_s": 300.0, "of_off": 0.75, "cpu_ms_per_command": 3.0, "cpu_of_off": 1.5},
            "tracing-10": {"per_s": 380.0, "of_off": 0.95, "cpu_ms_per_command": 2.2, "cpu_of_off": 1.1},
        },
    }
    [row] = [r for r in target_rows(results) if r.measure.startswith("cost of tracing")]
    assert row.measured == "100%: 0.75x, 10%: 0.95x"
    assert "untraced 400/s" in row.notes
    assert "12,345 spans" in row.notes
    assert "daemon CPU per command 2.00 / 3.00 / 2.20 ms (1.50x and 1.10x)" in row.notes
    assert "tracing" in QUICK.scenarios


def test_rate_80_offers_four_fifths_of_this_runs_max() -> None:
    """rate-80 offers 0.8x the max scenario's commands/s; without a one-daemon max, the plan's rate, flagged."""
    results: dict[str, Any] = {"scenarios": {"max": {"streams": [_stream(412.5)], "replicas": 1}}}
    assert share_of_max(results, 0.8, 500.0) == (330.0, "max", 412.5)
    results["scenarios"]["max"]["replicas"] = 3
    assert share_of_max(results, 0.8, 500.0) == (500.0, "plan", None)
    assert share_of_max({"scenarios": {}}, 0.8, 500.0) == (500.0, "plan", None)
    assert share_of_max({"scenarios": {"max": {"streams": [_stream(0.0)]}}}, 0.8, 50.0) == (50.0, "plan", None)


def test_baseline_scenario_runs_by_default_and_takes_a_revision() -> None:
    """The baseline (today's daemon) is in both plans, can be picked alone, and --baseline-rev changes it."""
    assert "baseline" in FULL.scenarios
    assert QUICK.baseline_rev == BASELINE_REV == "56fe34b"
    picked = plan_from(
        build_parser().parse_args(["--quick", "--scenarios", "baseline,max", "--baseline-rev", "abc1234"])
    )
    assert picked.scenarios == ("baseline", "max")
    assert picked.baseline_rev == "abc1234"


def test_export_puts_the_revisions_package_ahead_of_the_installed_one(tmp_path: Path) -> None:
    """The exported package holds the revision's files and is what ``python -P`` imports from PYTHONPATH."""
    head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout.strip()
    tree = export_package(head, tmp_path / "src")
    expected = subprocess.run(["git", "show", f"{head}:s2s_daemon/__init__.py"], capture_output=True, check=True)
    assert (tree / "s2s_daemon" / "__init__.py").read_bytes() == expected.stdout
    with pytest.raises(RuntimeError, match="git archive no-such-rev"):
        export_package("no-such-rev", tmp_path / "other")


def test_webhook_rate_mode_sends_without_waiting_for_answers() -> None:
    """At a fixed rate every delivery goes out while the earlier ones are still unanswered (open loop), even
    with one connection; in flight mode the same fake daemon would never let the second one start."""
    load = WebhookLoad(WebhookSpec("http://127.0.0.1:1/x", "whsec_eA==", 1, 5, rate=10_000.0))
    started: list[int] = []
    all_sent = asyncio.Event()

    async def answer_once_all_sent(session: Any, measured: bool) -> None:
        started.append(1)
        if len(started) == 5:
            all_sent.set()
        await all_sent.wait()

    load._one = answer_once_all_sent  # type: ignore[method-assign]

    async def drive() -> None:
        async with asyncio.timeout(10):
            await load._drive(None, 5, 0.0, True, rate=10_000.0)  # type: ignore[arg-type]

    asyncio.run(drive())
    assert len(started) == 5
    assert load.sent == 5


def test_webhook_spec_with_a_rate_round_trips_through_json() -> None:
    """The rate mode's offered deliveries/s travels with the spec."""
    spec = WebhookSpec("http://x/api/webhooks/acme", "whsec_eA==", 32, 1000, rate=500.0)
    assert WebhookSpec.from_json(spec.to_json()).rate == 500.0
