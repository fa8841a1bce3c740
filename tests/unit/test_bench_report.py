"""The pure parts of `make bench`: percentiles, histogram quantiles, tables, /proc and py-spy parsing."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest

from s2s_daemon.observability.metrics import Metrics
from tests.harness.bench.figures import combine, cpu_ms_per_command, ratio, rss_growth
from tests.harness.bench.issue_targets import (
    RECORDED,
    RECORDED_CPU_MS,
    cpu_row,
    issue_rows,
    issue_table,
    lag_row,
    latency_row,
    rss_row,
    throughput_row,
    webhook_row,
)
from tests.harness.bench.procstat import parse_machine_busy, parse_stat_cpu, parse_status_memory
from tests.harness.bench.profile import parse_collapsed, summarize
from tests.harness.bench.report import (
    TargetRow,
    bucket_delta,
    counter_total,
    fmt_num,
    fmt_ratio,
    format_table,
    histogram_mean,
    histogram_quantile,
    latency_summary,
    parse_histogram,
    percentile,
    targets_table,
)
from tests.harness.bench.spec import LoadSpec, StreamSpec
from tests.harness.bench.summary import cpu_table, reference_ratios, render, target_rows, versus_references

INF = math.inf


# percentiles ----------------------------------------------------------------------------------------
def test_percentile_interpolates_between_ranks() -> None:
    """Percentiles interpolate linearly between neighbouring ranks, as numpy's default does."""
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 0) == 1.0
    assert percentile(values, 100) == 4.0
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(list(range(1, 101)), 99) == pytest.approx(99.01)


def test_percentile_of_nothing_is_none() -> None:
    """No samples give no percentile rather than a made-up zero."""
    assert percentile([], 50) is None
    assert latency_summary([])["p99_ms"] is None


def test_percentile_rejects_out_of_range() -> None:
    """A percentile outside 0..100 is a caller bug and fails loudly."""
    with pytest.raises(ValueError, match=r"within 0\.\.100"):
        percentile([1.0], 101)


def test_latency_summary_reports_milliseconds() -> None:
    """Latencies measured in seconds are summarised in milliseconds."""
    summary = latency_summary([0.001, 0.002, 0.003])
    assert summary["p50_ms"] == pytest.approx(2.0)
    assert summary["max_ms"] == pytest.approx(3.0)
    assert summary["mean_ms"] == pytest.approx(2.0)


# histogram quantiles --------------------------------------------------------------------------------
def test_histogram_quantile_interpolates_inside_the_bucket() -> None:
    """The estimate interpolates linearly inside the bucket holding the rank, like PromQL's histogram_quantile."""
    buckets = [(0.01, 50.0), (0.02, 90.0), (0.05, 100.0), (INF, 100.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.01)
    assert histogram_quantile(0.7, buckets) == pytest.approx(0.015)
    assert histogram_quantile(0.99, buckets) == pytest.approx(0.047)


def test_histogram_quantile_in_the_first_bucket_starts_at_zero() -> None:
    """Ranks in the lowest bucket interpolate from zero."""
    assert histogram_quantile(0.5, [(0.004, 10.0), (INF, 10.0)]) == pytest.approx(0.002)


def test_histogram_quantile_in_the_inf_bucket_is_the_top_bound() -> None:
    """A rank beyond the last finite bucket returns that bound: a floor, not a guess."""
    assert histogram_quantile(0.99, [(0.01, 50.0), (30.0, 90.0), (INF, 100.0)]) == 30.0


def test_histogram_quantile_skips_empty_buckets() -> None:
    """Buckets without observations never hold the rank."""
    buckets = [(0.001, 0.0), (0.0025, 0.0), (0.005, 10.0), (INF, 10.0)]
    assert histogram_quantile(0.5, buckets) == pytest.approx(0.00375)


def test_histogram_quantile_of_an_empty_histogram_is_none() -> None:
    """An empty histogram has no quantile."""
    assert histogram_quantile(0.99, []) is None
    assert histogram_quantile(0.99, [(0.1, 0.0), (INF, 0.0)]) is None


def _metrics_text(*observations: tuple[str, float]) -> str:
    metrics = Metrics()
    for downstream, seconds in observations:
        metrics.handler_seconds.labels(downstream).observe(seconds)
        metrics.outbox_lag_seconds.observe(seconds)
    metrics.outbox_published.inc(len(observations))
    return metrics.render().decode()


def test_parse_histogram_reads_the_daemons_exposition() -> None:
    """Buckets come out cumulative and ascending with +Inf last, summed over labels unless matched."""
    text = _metrics_text(("service-a", 0.003), ("service-a", 0.02), ("service-b", 0.2))
    both = parse_histogram(text, "s2s_handler_duration_seconds")
    only_a = parse_histogram(text, "s2s_handler_duration_seconds", {"downstream": "service-a"})
    assert both[-1] == (INF, 3.0)
    assert only_a[-1] == (INF, 2.0)
    assert dict(only_a)[0.005] == 1.0
    assert [le for le, _ in both] == sorted(le for le, _ in both)
    assert parse_histogram(text, "s2s_no_such_histogram") == []


def test_bucket_delta_isolates_one_scenario() -> None:
    """Subtracting an earlier scrape leaves only the observations made in between."""
    before = parse_histogram(_metrics_text(("service-a", 0.003)), "s2s_outbox_publish_lag_seconds")
    after = parse_histogram(
        _metrics_text(("service-a", 0.003), ("service-a", 0.02), ("service-a", 0.02)),
        "s2s_outbox_publish_lag_seconds",
    )
    delta = bucket_delta(after, before)
    assert delta[-1] == (INF, 2.0)
    assert dict(delta)[0.01] == 0.0
    assert histogram_quantile(0.99, delta) == pytest.approx(0.01 + 0.015 * 0.99)


def test_histogram_mean_and_counter_total() -> None:
    """Means come from _sum/_count and counters are summed over their labels."""
    text = _metrics_text(("service-a", 0.01), ("service-b", 0.03))
    assert histogram_mean(text, "s2s_outbox_publish_lag_seconds") == pytest.approx(0.02)
    assert histogram_mean(text, "s2s_no_such_histogram") is None
    assert counter_total(text, "s2s_outbox_published_total") == 2.0


# formatting -----------------------------------------------------------------------------------------
def test_format_table_pads_every_column() -> None:
    """Every line of the Markdown table has the same width and the columns line up."""
    table = format_table(("a", "long header"), [("1", "x"), ("wide cell", "y")])
    lines = table.splitlines()
    assert len({len(line) for line in lines}) == 1
    assert lines[0].startswith("| a         | long header |")
    assert set(lines[1]) == {"|", "-"}


def test_format_table_rejects_ragged_rows() -> None:
    """A row with the wrong number of cells is refused instead of printing a shifted table."""
    with pytest.raises(ValueError, match="2 columns"):
        format_table(("a", "b"), [("only one",)])


def test_number_and_ratio_formatting() -> None:
    """Numbers get thousands separators; missing values and zero denominators print n/a."""
    assert fmt_num(1234.5) == "1,234"
    assert fmt_num(2.345, 1, " ms") == "2.3 ms"
    assert fmt_num(None) == "n/a"
    assert fmt_ratio(1, 4) == "0.25x"
    assert fmt_ratio(1, 0) == "n/a"
    assert fmt_ratio(None, 4) == "n/a"


def test_targets_table_has_one_row_per_target_even_without_results() -> None:
    """An interrupted run still prints every target, saying what was not measured."""
    rows = target_rows({})
    assert len(rows) == 9  # the issue-8 targets and the cost of tracing
    webhook = next(row for row in rows if row.measure.startswith("webhook"))
    assert webhook.measured == "not measured"
    table = targets_table(rows)
    assert table.splitlines()[0].split("|")[1].strip() == "measure"
    assert len(table.splitlines()) == 2 + len(rows)


def _tput(tput: float) -> dict[str, object]:
    return {"throughput_per_s": tput, "failed": 0, "missing": 0}


def test_throughput_row_shows_the_ratio_to_both_references() -> None:
    """Our throughput is printed beside each reference's, with our ratio to it."""
    results = {
        "scenarios": {
            "max": {"streams": [_tput(650.0)]},
            "reference": {"streams": [_tput(1300.0)]},
            "handwritten": {"streams": [_tput(500.0)]},
        }
    }
    row: TargetRow = target_rows(results)[0]
    assert row.measured == "650/s"
    assert "bare FastStream 1,300/s (ours 0.50x), hand-written pipeline 500/s (ours 1.30x)" in row.notes
    assert row.notes.startswith("MISSED")


def test_ratio_text_names_a_reference_that_did_not_run() -> None:
    """A reference left out with --scenarios is named as not run, the other keeps its ratio."""
    results = {"scenarios": {"max": {"streams": [_tput(160.0)]}, "handwritten": {"streams": [_tput(160.0)]}}}
    assert versus_references(results, 160.0) == "bare FastStream not run, hand-written pipeline 160/s (ours 1.00x)"
    assert versus_references({}, None) == "bare FastStream not run, hand-written pipeline not run"


def test_reference_ratios_for_the_json_results() -> None:
    """The saved results carry our rate, each reference's and our ratio to it; None where one is missing."""
    results = {"scenarios": {"max": {"streams": [_tput(174.0)]}, "reference": {"streams": [_tput(200.0)]}}}
    assert reference_ratios(results) == {
        "ours_per_s": 174.0,
        "reference": {"per_s": 200.0, "ours_x": 0.87},
        "handwritten": {"per_s": None, "ours_x": None},
    }


def test_cpu_table_has_a_column_and_a_row_for_the_handwritten_pipeline() -> None:
    """The hand-written pipeline's scenario is a column and its process a row, after the FastStream reference."""

    def scenario(**cpu: float) -> dict[str, object]:
        return {
            "streams": [],
            "processes": {name: {"cpu_pct_of_core": pct} for name, pct in cpu.items()},
        }

    results = {
        "scenarios": {
            "reference": scenario(reference=90.0, handwritten=0.0),
            "handwritten": scenario(handwritten=80.0),
        }
    }
    lines = cpu_table(results).splitlines()
    assert [cell.strip() for cell in lines[0].split("|")[1:4]] == [
        "process (% of one core)",
        "reference",
        "handwritten",
    ]
    rows = {line.split("|")[1].strip(): [cell.strip() for cell in line.split("|")[2:4]] for line in lines[2:]}
    assert rows["handwritten"] == ["0%", "80%"]
    assert list(rows).index("handwritten") == list(rows).index("reference") + 1


def test_rss_growth_skips_the_warm_up() -> None:
    """Growth is measured from the first sample after the warm-up share to the last sample."""
    series = [(0.0, 50.0), (5.0, 80.0), (50.0, 100.0), (100.0, 104.0)]
    assert rss_growth(series) == pytest.approx(0.04)
    assert rss_growth([(0.0, 50.0)]) is None


# /proc, py-spy and the load spec ----------------------------------------------------------------------
def test_parse_stat_cpu_survives_odd_command_names() -> None:
    """utime and stime are read after the last ')' so a command name with spaces and parentheses is harmless."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = f"42 (we(ird) name) S 1 42 42 0 -1 4194560 100 0 0 0 {3 * ticks} {ticks} 0 0 20 0 1 0 5 0 0"
    assert parse_stat_cpu(stat) == pytest.approx(4.0)


def test_parse_status_memory_reads_rss_and_high_water_mark() -> None:
    """VmRSS and VmHWM come out in MB; a kernel thread without them reads as zero."""
    status = "Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n"
    assert parse_status_memory(status) == (100.0, 200.0)
    assert parse_status_memory("Name:\tkthreadd\n") == (0.0, 0.0)


def test_parse_machine_busy_leaves_out_idle_and_iowait() -> None:
    """Machine busy time is the cpu total minus idle and iowait."""
    ticks = os.sysconf("SC_CLK_TCK")
    stat = f"cpu  {ticks} 0 {ticks} {50 * ticks} {7 * ticks} 0 0 0 0 0\ncpu0 1 2 3\n"
    assert parse_machine_busy(stat) == pytest.approx(2.0)


def test_summarize_collapsed_stacks() -> None:
    """Self time goes to the leaf frame and its package; our functions also get inclusive time."""
    stacks = parse_collapsed(
        [
            "run (asyncio/runners.py:1);handle (s2s_daemon/messaging/consumer.py:9);send (httpcore/_async/x.py:3) 3",
            "run (asyncio/runners.py:1);handle (s2s_daemon/messaging/consumer.py:9) 1",
            "malformed line without a count",
        ]
    )
    summary = summarize(stacks)
    assert summary["samples"] == 4
    assert summary["self_by_package_pct"] == [("httpcore", 75.0), ("s2s_daemon", 25.0)]
    assert summary["inclusive_s2s_daemon_pct"] == [("handle (s2s_daemon/messaging/consumer.py)", 100.0)]


def test_load_spec_round_trips_through_json() -> None:
    """The spec handed to the load-generator process comes back equal."""
    spec = LoadSpec(
        "amqp://x",
        "p.commands",
        (
            StreamSpec("service-a.create-resource", "inflight", 200, 1000),
            StreamSpec("service-b.get-resource", "rate", 50),
        ),
        warmup=10,
        watch={"daemon": 123},
    )
    assert LoadSpec.from_json(spec.to_json()) == spec


def test_cpu_per_command_sums_every_measured_process_over_the_completed_commands() -> None:
    """CPU ms per command = the measured processes' % of a core (the machine row left out) / commands per second;
    the webhook scenario, one stream of its own, counts its deliveries; nothing completed gives None."""
    procs = {
        "daemon": {"cpu_pct_of_core": 50.0},
        "nx-27017": {"cpu_pct_of_core": 30.0},
        "machine": {"cpu_pct_of_core": 190.0},
    }
    streams = [{"throughput_per_s": 150.0}, {"throughput_per_s": 50.0}]
    assert cpu_ms_per_command({"processes": procs, "streams": streams}) == pytest.approx(4.0)
    assert cpu_ms_per_command({"processes": procs, "throughput_per_s": 400.0}) == pytest.approx(2.0)
    assert cpu_ms_per_command({"processes": procs, "streams": [{"throughput_per_s": 0.0}]}) is None


def test_cpu_per_command_over_named_processes_only() -> None:
    """``only`` sums the named processes (the set a recorded figure was summed over), not every one."""
    procs = {"daemon": {"cpu_pct_of_core": 50.0}, "rabbitmq": {"cpu_pct_of_core": 30.0}}
    scenario = {"processes": procs, "streams": [{"throughput_per_s": 100.0}]}
    assert cpu_ms_per_command(scenario, ("daemon", "demo")) == pytest.approx(5.0)
    assert cpu_ms_per_command(scenario) == pytest.approx(8.0)


# the issue-13 targets ---------------------------------------------------------------------------------
def test_combine_names_what_missed_and_what_was_not_measured() -> None:
    """A row is met only when every check was measured and met; a miss names the check."""
    assert combine([("p50", True), ("p99", True)]) == "met"
    assert combine([("p50", False), ("p99", True)]) == "MISSED: p50"
    assert combine([("p50", False), ("p99", None)]) == "MISSED: p50; not measured: p99"
    assert combine([("RSS", True), ("growth", None)]) == "met: RSS; not measured: growth"
    assert combine([("RSS", None), ("growth", None)]) == "not measured"


def test_ratio_of_missing_or_zero_is_none() -> None:
    """A ratio needs both sides and a non-zero denominator."""
    assert ratio(600.0, 400.0) == pytest.approx(1.5)
    assert ratio(None, 400.0) is None
    assert ratio(600.0, 0.0) is None


def test_issue_table_has_a_row_per_target_even_without_results() -> None:
    """An empty run prints the six issue-13 targets, each not measured; the render puts them first."""
    rows = issue_rows({})
    assert len(rows) == 6
    assert {row.verdict for row in rows} == {"not measured"}
    assert issue_table(rows).splitlines()[0].split("|")[4].strip() == "verdict"
    text = render({})
    assert text.index("Issue targets") < text.index("Original targets") < text.index("start to ready")


def _max(tput: float, *, duplicates: int = 0, cpu_pct: float = 0.0) -> dict[str, Any]:
    return {
        "streams": [_tput(tput)],
        "replicas": 1,
        "guarantees": {"duplicate_effects": duplicates, "lost": 0},
        "processes": {"daemon": {"cpu_pct_of_core": cpu_pct}},
    }


def test_throughput_target_needs_one_and_a_half_times_both_references_and_the_guarantees() -> None:
    """1.5x of each reference measured in the run, and no duplicate effect, lost or failed command."""

    def row(ours: float, ref: float, hand: float, duplicates: int = 0) -> tuple[str, str]:
        scenarios = {
            "max": _max(ours, duplicates=duplicates),
            "reference": {"streams": [_tput(ref)]},
            "handwritten": {"streams": [_tput(hand)]},
        }
        got = throughput_row({"scenarios": scenarios})
        return got.measured, got.verdict

    measured, verdict = row(600.0, 400.0, 300.0)
    assert measured == "600/s: 1.50x FastStream (400/s), 2.00x hand-written (300/s)"
    assert verdict == "met"
    assert row(590.0, 400.0, 300.0)[1] == "MISSED: 1.5x FastStream"
    assert row(600.0, 400.0, 300.0, duplicates=1)[1] == "MISSED: guarantees"
    alone = throughput_row({"scenarios": {"max": _max(600.0)}})
    assert alone.measured == "600/s: FastStream not run, hand-written not run"
    assert alone.verdict.startswith("met: guarantees; not measured")


def test_throughput_target_reports_the_stretch() -> None:
    """2x of both references is the stretch, printed in the notes."""
    scenarios = {
        "max": _max(800.0),
        "reference": {"streams": [_tput(400.0)]},
        "handwritten": {"streams": [_tput(390.0)]},
    }
    assert "stretch 2x of both: met" in throughput_row({"scenarios": scenarios}).notes
    scenarios["handwritten"] = {"streams": [_tput(401.0)]}
    assert "stretch 2x of both: not met" in throughput_row({"scenarios": scenarios}).notes


def test_cpu_target_is_half_of_todays_measured_in_the_same_run() -> None:
    """Ours over the baseline's CPU per command of this run: met at 0.5x, missed above."""
    # 100% of a core at 200/s = 5 ms per command; the baseline at 100% and 100/s = 10 ms
    results: dict[str, Any] = {
        "baseline": {"rev": "56fe34b"},
        "scenarios": {"max": _max(200.0, cpu_pct=100.0), "baseline-max": _max(100.0, cpu_pct=100.0)},
    }
    row = cpu_row(results)
    assert row.measured == "5.00 ms vs 10.00 ms today's: 0.50x"
    assert row.verdict == "met"
    assert "daemon of 56fe34b" in row.notes
    results["scenarios"]["baseline-max"] = _max(120.0, cpu_pct=100.0)  # 8.33 ms: ours 0.60x
    assert cpu_row(results).verdict == "MISSED: 0.5x"


def test_cpu_target_falls_back_to_the_recorded_figure_over_the_same_processes() -> None:
    """Without a baseline in the run, ours (summed over the processes the issue summed) is set against the
    recorded 5.77 ms, labelled as recorded, with the reason the baseline is missing."""
    scenario = _max(100.0, cpu_pct=20.0)
    scenario["processes"] |= {"nx-27017": {"cpu_pct_of_core": 8.0}, "rabbitmq": {"cpu_pct_of_core": 50.0}}
    row = cpu_row({"baseline": {"error": "RuntimeError: git archive failed"}, "scenarios": {"max": scenario}})
    assert row.measured == f"2.80 ms vs {RECORDED_CPU_MS} ms {RECORDED}: 0.49x"
    assert row.verdict == "met (vs recorded)"
    assert "the baseline failed: RuntimeError: git archive failed" in row.notes
    assert "every process: 7.80 ms" in row.notes


def _latency(p50: float, p99: float) -> dict[str, Any]:
    return {
        "streams": [
            {
                "throughput_per_s": 50.0,
                "offered_per_s": 50.0,
                "failed": 0,
                "missing": 0,
                "value": 50.0,
                "latency": {"p50_ms": p50, "p99_ms": p99},
            }
        ]
    }


def test_latency_target_at_fifty_per_second() -> None:
    """rate-low's p50 and p99 against 5 and 15 ms, each named when it misses."""
    assert latency_row({"scenarios": {"rate-low": _latency(4.9, 15.0)}}).verdict == "met"
    assert latency_row({"scenarios": {"rate-low": _latency(5.1, 12.0)}}).verdict == "MISSED: p50"
    assert latency_row({"scenarios": {"rate-low": _latency(7.9, 16.0)}}).verdict == "MISSED: p50, p99"


def test_latency_row_gives_the_references_floor_at_the_same_rate() -> None:
    """The references' own latency at 50/s, when they ran, is printed beside ours (the floor of the machine)."""
    scenarios = {"rate-low": _latency(7.9, 12.0), "reference-low": _latency(3.1, 6.0)}
    row = latency_row({"scenarios": scenarios})
    assert "bare FastStream at the same rate: p50 3.1 ms, p99 6.0 ms" in row.notes
    assert "hand-written" not in row.notes
    scenarios["handwritten-low"] = _latency(6.2, 9.5)
    assert (
        "hand-written pipeline at the same rate: p50 6.2 ms, p99 9.5 ms" in latency_row({"scenarios": scenarios}).notes
    )


def test_lag_target_reads_the_rate_80_run_and_says_when_it_was_not_at_80_percent() -> None:
    """The outbox lag p99 of rate-80 against 50 ms; an offer from the plan (no max) is flagged."""
    scenario = _latency(3.0, 9.0) | {"outbox": {"lag_p99_ms": 42.0, "lag_p50_ms": 9.0, "lag_observations": 800}}
    results: dict[str, Any] = {
        "rate80": {"rate": 320.0, "source": "max", "max_per_s": 400.0},
        "scenarios": {"rate-80": scenario},
    }
    row = lag_row(results)
    assert row.measured == "p99 ≈ 42.0 ms at 320/s offered"
    assert row.verdict == "met"
    assert "80% of this run's max (400/s)" in row.notes
    scenario["outbox"]["lag_p99_ms"] = 75.0
    results["rate80"] = {"rate": 500.0, "source": "plan", "max_per_s": None}
    row = lag_row(results)
    assert row.verdict == "MISSED: p99 (not at 80% of max)"
    assert "not 80% of a measured max" in row.notes


def _webhook(tput: float, p99: float = 10.0, ok: int = 1000) -> dict[str, Any]:
    return {
        "throughput_per_s": tput,
        "offered_per_s": tput,
        "requests": 1000,
        "ok_2xx": ok,
        "statuses": {"202": ok},
        "latency": {"p50_ms": p99 / 2, "p99_ms": p99},
    }


def test_webhook_target_is_two_and_a_half_times_todays_rate_and_the_p99_at_500() -> None:
    """Max rate over the baseline's of this run (2.5x) and the p99 of the 500/s run (20 ms), every answer 2xx."""
    scenarios = {"webhook": _webhook(1500.0), "webhook-500": _webhook(500.0, 18.0), "baseline-webhook": _webhook(600.0)}
    results: dict[str, Any] = {"baseline": {"rev": "56fe34b"}, "scenarios": scenarios}
    row = webhook_row(results)
    assert row.measured == "1,500/s vs 600/s today's (this run): 2.50x; p99 18.0 ms at 500/s offered"
    assert row.verdict == "met"
    scenarios["webhook-500"] = _webhook(480.0, 25.0, ok=999)
    assert webhook_row(results).verdict == "MISSED: p99 at 500/s, every answer 2xx"


def test_webhook_target_falls_back_to_the_recorded_figure_of_the_same_mode() -> None:
    """Without a baseline, the issue's figure for the run's mode stands in, labelled as recorded."""
    results = {"plan": {"mode": "quick"}, "scenarios": {"webhook": _webhook(1648.0)}}
    row = webhook_row(results)
    assert row.measured.startswith(f"1,648/s vs 824/s today's {RECORDED}: 2.00x")
    assert row.verdict == "MISSED: 2.5x of recorded; not measured: p99 at 500/s"
    results["plan"] = {"mode": "full"}
    assert "vs 608/s" in webhook_row(results).measured


def test_rss_growth_is_judged_only_over_a_ten_minute_soak() -> None:
    """The peak is judged against 150 MB; growth only when the soak lasted 10 minutes."""
    soak = {"rss_series": {"daemon": [[0, 100.0], [60, 100.0], [600, 103.0]]}}
    results: dict[str, Any] = {
        "plan": {"soak_seconds": 600.0},
        "scenarios": {"max": {"processes": {"daemon": {"peak_rss_mb": 120.0}}}, "soak": soak},
    }
    assert rss_row(results).verdict == "met"
    results["plan"] = {"soak_seconds": 60.0}
    assert rss_row(results).verdict == "met: RSS; not measured: growth"
    results["daemon_final"] = {"peak_rss_mb": 151.0}
    assert rss_row(results).verdict == "MISSED: RSS; not measured: growth"
