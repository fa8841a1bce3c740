"""Turn a run's results (the JSON the runner saves) into the printed tables. Pure: dict in, text out."""

from __future__ import annotations

from typing import Any

from tests.harness.bench.figures import cpu_ms_per_command, rss_growth, stream, verdict
from tests.harness.bench.issue_targets import issue_rows, issue_table
from tests.harness.bench.report import TargetRow, fmt_num, fmt_ratio, format_table, targets_table

E2E_TARGET = 1300.0
E2E_STRETCH = 2000.0
P50_TARGET_MS = 5.0
P99_TARGET_MS = 25.0
LAG_P99_TARGET_MS = 20.0
ISOLATION_TARGET = 0.90
RSS_TARGET_MB = 150.0
RSS_GROWTH_TARGET = 0.05
READY_TARGET_S = 2.0
WEBHOOK_TARGET = 1500.0
WEBHOOK_P99_TARGET_MS = 20.0

SCENARIO_ORDER = ("max", "replicas", "reference", "handwritten", "reference-low", "handwritten-low", "rate-80", "rate",
                  "rate-low", "soak", "iso-healthy",
                  "webhook", "webhook-500", "baseline-max", "baseline-webhook", "iso-dead", "tracing-off",
                  "tracing-100", "tracing-10")  # fmt: skip
PROCESS_ORDER = ("daemon", "daemon-r2", "daemon-iso", "baseline", "reference", "handwritten", "loadgen", "demo",
                 "nx-27017", "rabbitmq", "redis")  # fmt: skip


# the scenarios our max throughput is compared with, and how the summary names them
REFERENCES = (("reference", "bare FastStream"), ("handwritten", "hand-written pipeline"))


def reference_ratios(results: dict[str, Any]) -> dict[str, Any]:
    """Our max throughput, each reference's and our ratio to it (None where a side was not measured)."""
    ours = stream(results, "max")
    tput = ours["throughput_per_s"] if ours else None
    out: dict[str, Any] = {"ours_per_s": tput}
    for scenario, _ in REFERENCES:
        ref = stream(results, scenario)
        ref_tput = ref["throughput_per_s"] if ref else None
        ratio = tput / ref_tput if tput is not None and ref_tput else None
        out[scenario] = {"per_s": ref_tput, "ours_x": None if ratio is None else round(ratio, 3)}
    return out


def versus_references(results: dict[str, Any], tput: float | None) -> str:
    """``bare FastStream 174/s (ours 0.93x), hand-written pipeline 160/s (ours 1.01x)``."""
    parts = []
    for scenario, label in REFERENCES:
        ref = stream(results, scenario)
        if ref is None:
            parts.append(f"{label} not run")
        else:
            parts.append(
                f"{label} {fmt_num(ref['throughput_per_s'])}/s (ours {fmt_ratio(tput, ref['throughput_per_s'])})"
            )
    return ", ".join(parts)


def target_rows(results: dict[str, Any]) -> list[TargetRow]:
    rows = [_throughput_row(results), _replicas_row(results), _latency_row(results), _lag_row(results)]
    rows.extend([_isolation_row(results), _webhook_row(results), _rss_row(results), _ready_row(results)])
    rows.append(_tracing_row(results))
    return rows


def _tracing_row(results: dict[str, Any]) -> TargetRow:
    """Max throughput traced (OTLP/HTTP to a local receiver) against the same daemon untraced."""
    measure = "cost of tracing: max commands/s traced / untraced"
    target = "off: within noise of before; on: printed"
    tracing = results.get("tracing")
    off = stream(results, "tracing-off")
    if not tracing or off is None:
        return TargetRow(measure, target, "not measured", "the tracing scenario did not run")
    full, tenth = tracing.get("tracing-100", {}), tracing.get("tracing-10", {})
    untraced = tracing.get("tracing-off", {})
    measured = f"100%: {fmt_num(full.get('of_off'), 2)}x, 10%: {fmt_num(tenth.get('of_off'), 2)}x"
    notes = (
        f"untraced {fmt_num(off['throughput_per_s'])}/s, every trace {fmt_num(full.get('per_s'))}/s, one in ten "
        f"{fmt_num(tenth.get('per_s'))}/s; daemon CPU per command {fmt_num(untraced.get('cpu_ms_per_command'), 2)} "
        f"/ {fmt_num(full.get('cpu_ms_per_command'), 2)} / {fmt_num(tenth.get('cpu_ms_per_command'), 2)} ms "
        f"({fmt_num(full.get('cpu_of_off'), 2)}x and {fmt_num(tenth.get('cpu_of_off'), 2)}x); "
        f"{fmt_num(tracing.get('spans_received'))} spans received by the local OTLP/HTTP receiver; "
        "single short runs on a shared machine: noisy"
    )
    return TargetRow(measure, target, measured, notes)


def _throughput_row(results: dict[str, Any]) -> TargetRow:
    measure = "end-to-end commands/s (dedupe + outbox + confirmed reply, demo on loopback)"
    target = "≥ 1,300/s (stretch 2,000/s)"
    ours = stream(results, "max")
    if ours is None:
        return TargetRow(measure, target, "not measured", "the run stopped before this scenario")
    tput = ours["throughput_per_s"]
    notes = (
        f"{verdict((tput or 0) >= E2E_TARGET)}: {fmt_ratio(tput, E2E_TARGET)} of target; "
        f"{versus_references(results, tput)}; "
        f"{ours['failed']} failed, {ours['missing']} missing"
    )
    return TargetRow(measure, target, f"{fmt_num(tput)}/s", notes)


def _replica_scenario(results: dict[str, Any]) -> str | None:
    """The run with several daemons: ``max`` itself under ``--replicas N``, else the separate ``replicas`` run."""
    for name in ("max", "replicas"):
        got = results.get("scenarios", {}).get(name)
        if got and got.get("replicas", 1) > 1:
            return name
    return None


def _replicas_row(results: dict[str, Any]) -> TargetRow:
    name = _replica_scenario(results)
    planned = results.get("plan", {}).get("replicas", 1)
    n = results["scenarios"][name]["replicas"] if name else max(2, planned)
    measure = f"end-to-end commands/s, {n} replicas"
    target = "≥ 1,300/s (stretch 2,000/s); 0 duplicate effects, 0 lost"
    if name is None:
        return TargetRow(measure, target, "not measured", "the replicas scenario did not run")
    scenario = results["scenarios"][name]
    ours = scenario["streams"][0]
    tput = ours["throughput_per_s"]
    single = stream(results, "max") if name == "replicas" else None
    g = scenario.get("guarantees", {})
    daemons = {p: s for p, s in scenario.get("processes", {}).items() if p.startswith("daemon")}
    cpu = ", ".join(f"{p} {fmt_num(s['cpu_pct_of_core'], 0, '%')}" for p, s in sorted(daemons.items()))
    guarantees_ok = g.get("duplicate_effects") == 0 and g.get("lost") == 0
    notes = (
        f"{verdict((tput or 0) >= E2E_TARGET and guarantees_ok)}: {fmt_ratio(tput, E2E_TARGET)} of target"
        + (f"; {fmt_ratio(tput, single['throughput_per_s'])} of one daemon" if single else "")
        + f"; {versus_references(results, tput)}"
        + f"; CPU per daemon (% of a core): {cpu or 'n/a'}"
        + f"; duplicate effects {g.get('duplicate_effects', 'n/a')} ({g.get('effects', 'n/a')} effects, "
        f"{g.get('distinct_keys', 'n/a')} distinct keys), lost {g.get('lost', 'n/a')}, "
        f"downstream re-calls {g.get('downstream_recalls', 'n/a')}, duplicated replies "
        f"{g.get('duplicated_replies', 'n/a')}; {ours['failed']} failed"
    )  # fmt: skip
    return TargetRow(measure, target, f"{fmt_num(tput)}/s", notes)


def _webhook_row(results: dict[str, Any]) -> TargetRow:
    measure = "webhook ingest (verify + dedupe + outbox)"
    target = "≥ 1,500/s, p99 ≤ 20 ms"
    got = results.get("scenarios", {}).get("webhook")
    if not got:
        return TargetRow(measure, target, "not measured", "the run stopped before this scenario")
    tput, lat = got["throughput_per_s"], got["latency"]
    ok = (
        (tput or 0) >= WEBHOOK_TARGET
        and (lat["p99_ms"] or 1e9) <= WEBHOOK_P99_TARGET_MS
        and got["ok_2xx"] == got["requests"]
    )
    outbox = got.get("outbox") or {}
    notes = (
        f"{verdict(ok)}: {fmt_ratio(tput, WEBHOOK_TARGET)} of target; {got['ok_2xx']:,} of {got['requests']:,} "
        f"answers 2xx ({got['accepted_202']:,} of them 202), statuses {got['statuses']}, errors {got['errors'] or 0}; "
        f"{got['concurrency']} in flight, Standard Webhooks signed by the standardwebhooks library; "
        f"outbox lag p99 ≈ {fmt_num(outbox.get('lag_p99_ms'), 1)} ms"
    )
    measured = f"{fmt_num(tput)}/s, p50 {fmt_num(lat['p50_ms'], 1)} ms, p99 {fmt_num(lat['p99_ms'], 1)} ms"
    return TargetRow(measure, target, measured, notes)


def _latency_row(results: dict[str, Any]) -> TargetRow:
    plan_rate = results.get("plan", {}).get("rate", 500)
    measure = f"command → reply latency at {fmt_num(plan_rate)}/s offered"
    target = "p50 ≤ 5 ms, p99 ≤ 25 ms"
    got = stream(results, "rate")
    if got is None:
        return TargetRow(measure, target, "not measured", "the run stopped before this scenario")
    lat = got["latency"]
    ok = (lat["p50_ms"] or 1e9) <= P50_TARGET_MS and (lat["p99_ms"] or 1e9) <= P99_TARGET_MS
    measured = (
        f"p50 {fmt_num(lat['p50_ms'], 1)} ms, p95 {fmt_num(lat['p95_ms'], 1)} ms, p99 {fmt_num(lat['p99_ms'], 1)} ms"
    )
    notes = (
        f"{verdict(ok)}; offered {fmt_num(got['offered_per_s'])}/s, completed {fmt_num(got['throughput_per_s'])}/s; "
        f"{got['failed']} failed, {got['missing']} missing"
    )
    if (got["throughput_per_s"] or 0) < 0.9 * (got["offered_per_s"] or 0):
        notes += "; saturated below the offered rate, so this is mostly queueing"
    low = stream(results, "rate-low")
    if low is not None:
        low_lat = low["latency"]
        notes += (
            f"; at {fmt_num(low['offered_per_s'])}/s: p50 {fmt_num(low_lat['p50_ms'], 1)} ms, "
            f"p99 {fmt_num(low_lat['p99_ms'], 1)} ms"
        )
    return TargetRow(measure, target, measured, notes)


def _lag_row(results: dict[str, Any]) -> TargetRow:
    measure = "outbox write → confirmed publish lag at 500/s"
    target = "p99 ≤ 20 ms"
    outbox = results.get("scenarios", {}).get("rate", {}).get("outbox")
    if not outbox or outbox.get("lag_p99_ms") is None:
        return TargetRow(measure, target, "not measured", "no lag observations scraped from /metrics")
    p99 = outbox["lag_p99_ms"]
    notes = (
        f"{verdict(p99 <= LAG_P99_TARGET_MS)}; estimated from s2s_outbox_publish_lag_seconds buckets "
        f"(p50 ≈ {fmt_num(outbox['lag_p50_ms'], 1)} ms, {fmt_num(outbox['lag_observations'])} observations)"
    )
    return TargetRow(measure, target, f"p99 ≈ {fmt_num(p99, 1)} ms", notes)


def _isolation_row(results: dict[str, Any]) -> TargetRow:
    measure = "one downstream dead (service-b refused): service-a throughput"
    target = "≥ 90% of healthy"
    healthy, dead = stream(results, "iso-healthy"), stream(results, "iso-dead")
    if healthy is None or dead is None:
        return TargetRow(measure, target, "not measured", "the run stopped before this scenario")
    h, d = healthy["throughput_per_s"], dead["throughput_per_s"]
    ratio = d / h if h and d is not None else None
    b_dead = stream(results, "iso-dead", 1) or {}
    b_rate = results.get("plan", {}).get("iso_b_rate")
    pct = None if ratio is None else ratio * 100
    notes = (
        f"{verdict(ratio is not None and ratio >= ISOLATION_TARGET)}: {fmt_num(pct)}% "
        f"of healthy; service-b offered {fmt_num(b_rate)}/s in both runs, dead run: "
        f"{b_dead.get('failed', 'n/a')} failed replies, {b_dead.get('missing', 'n/a')} unanswered when the run ended"
    )
    return TargetRow(measure, target, f"{fmt_num(d)}/s dead-b vs {fmt_num(h)}/s healthy", notes)


def _rss_row(results: dict[str, Any]) -> TargetRow:
    measure = "daemon RSS at max load; growth over a soak"
    target = "≤ 150 MB; ≤ 5% over 10 min"
    procs = results.get("scenarios", {}).get("max", {}).get("processes", {})
    daemon = procs.get("daemon")
    final = results.get("daemon_final") or {}
    peak = max(final.get("peak_rss_mb", 0.0), daemon["peak_rss_mb"] if daemon else 0.0) or None
    measured = f"{fmt_num(daemon['rss_mb'] if daemon else None)} MB after max load, peak {fmt_num(peak)} MB"
    soak = results.get("scenarios", {}).get("soak")
    if soak:
        growth = rss_growth(soak.get("rss_series", {}).get("daemon", []))
        seconds = results.get("plan", {}).get("soak_seconds", 0)
        soak_note = (
            f"growth {fmt_num(None if growth is None else growth * 100, 1)}% over a {fmt_num(seconds)} s soak "
            f"at {fmt_num(results.get('soak_rate'))}/s "
            f"({verdict(growth is not None and growth <= RSS_GROWTH_TARGET)})"
        )
    else:
        soak_note = "growth not measured (run with --soak 600)"
    return TargetRow(measure, target, measured, f"{verdict((peak or 1e9) <= RSS_TARGET_MB)} for RSS; {soak_note}")


def _ready_row(results: dict[str, Any]) -> TargetRow:
    startup = results.get("startup", {})
    first = startup.get("daemon_ready_s")
    second = startup.get("daemon-iso_ready_s")
    notes = f"{verdict(first is not None and first <= READY_TARGET_S)}; process start → GET /readyz 200"
    if second is not None:
        notes += f"; second daemon {second:.2f} s"
    return TargetRow("start to ready", "≤ 2 s", f"{fmt_num(first, 2)} s", notes)


def scenarios_table(results: dict[str, Any]) -> str:
    headers = ("scenario", "routing key", "mode", "cmds/s", "offered/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
               "ok", "failed", "missing", "pub err", "outbox lag p99")  # fmt: skip
    rows = []
    for name in (*SCENARIO_ORDER, "profile"):
        scenario = results.get("scenarios", {}).get(name)
        if scenario is None and name == "profile":
            scenario = results.get("profile", {}).get("load")
        if not scenario or "streams" not in scenario:
            continue
        lag = (scenario.get("outbox") or {}).get("lag_p99_ms")
        for s in scenario["streams"]:
            lat = s["latency"]
            rows.append(
                (
                    name,
                    s["routing_key"],
                    f"{s['mode']} {fmt_num(s['value'])}",
                    fmt_num(s["throughput_per_s"]),
                    fmt_num(s["offered_per_s"]),
                    fmt_num(lat["p50_ms"], 1),
                    fmt_num(lat["p95_ms"], 1),
                    fmt_num(lat["p99_ms"], 1),
                    fmt_num(lat["max_ms"], 1),
                    str(s["succeeded"]),
                    str(s["failed"]),
                    str(s["missing"]),
                    str(s["publish_errors"]),
                    "" if lag is None or s is not scenario["streams"][0] else f"≈ {fmt_num(lag, 1)} ms",
                )
            )
    return format_table(headers, rows)


def cpu_table(results: dict[str, Any]) -> str:
    """% of one core per process and scenario (the box has two cores: 200% is all of it), and RSS."""
    scenarios = [n for n in SCENARIO_ORDER if n in results.get("scenarios", {})]
    seen: dict[str, float] = {}
    cells: dict[str, dict[str, str]] = {}
    for name in scenarios:
        for proc, stats in results["scenarios"][name].get("processes", {}).items():
            label = "daemon" if proc == "daemon-iso" else proc
            cells.setdefault(label, {})[name] = fmt_num(stats["cpu_pct_of_core"], 0, "%")
            seen[label] = max(seen.get(label, 0.0), stats.get("peak_rss_mb", 0.0))
    cells.pop("machine", None)
    order = [p for p in PROCESS_ORDER if p in cells] + sorted(set(cells) - set(PROCESS_ORDER))
    rows = [(proc, *(cells[proc].get(n, "") for n in scenarios), fmt_num(seen.get(proc), 0)) for proc in order]
    ours, machine, other = [], [], []
    for name in scenarios:
        procs = results["scenarios"][name].get("processes", {})
        total = sum(s["cpu_pct_of_core"] for p, s in procs.items() if p != "machine")
        ours.append(fmt_num(total, 0, "%"))
        whole = procs.get("machine", {}).get("cpu_pct_of_core")
        machine.append(fmt_num(whole, 0, "%"))
        other.append(fmt_num(None if whole is None else max(0.0, whole - total), 0, "%"))
    rows.append(("all of the above", *ours, ""))
    rows.append(
        (
            "CPU ms per command (all of the above)",
            *(fmt_num(cpu_ms_per_command(results["scenarios"][n]), 2) for n in scenarios),
            "",
        )
    )
    rows.append(("whole machine (2 cores = 200%)", *machine, ""))
    rows.append(("not ours (noise)", *other, ""))
    return format_table(("process (% of one core)", *scenarios, "peak RSS MB"), rows)


def internals_table(results: dict[str, Any]) -> str:
    """Where a command's time goes inside the daemon, from its own histograms (bucket estimates)."""
    rows = []
    for name in SCENARIO_ORDER:
        stats = results.get("scenarios", {}).get(name, {}).get("outbox")
        if not stats:
            continue
        handler, call = stats.get("handler_service_a", {}), stats.get("downstream_call_service_a", {})
        rows.append(
            (
                name,
                f"{fmt_num(handler.get('p50_ms'), 1)} / {fmt_num(handler.get('p99_ms'), 1)}",
                f"{fmt_num(call.get('p50_ms'), 1)} / {fmt_num(call.get('p99_ms'), 1)}",
                f"{fmt_num(stats.get('lag_p50_ms'), 1)} / {fmt_num(stats.get('lag_p99_ms'), 1)}",
                fmt_num(stats.get("relay_rounds")),
                fmt_num(stats.get("relay_mean_batch"), 1),
            )
        )
    headers = ("scenario", "handler p50/p99 ms", "HTTP call p50/p99 ms", "outbox lag p50/p99 ms", "relay rounds",
               "docs/round")  # fmt: skip
    return format_table(headers, rows)


def render(results: dict[str, Any]) -> str:
    parts = [
        f"s2s-daemon bench ({results.get('plan', {}).get('mode')}), run {results.get('run_id')}, "
        f"{results.get('started_at')}, git {results.get('git', '?')}",
        "",
        "Issue targets (issue 13; relative targets measured side by side in this run):",
        "",
        issue_table(issue_rows(results)),
        "",
        "Original targets (issue 8):",
        "",
        targets_table(target_rows(results)),
        "",
        scenarios_table(results),
        "",
        internals_table(results),
        "",
        cpu_table(results),
    ]
    return "\n".join(parts)
