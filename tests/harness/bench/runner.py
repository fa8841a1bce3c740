"""One benchmark run: start everything, run the scenarios, measure, stop everything, clean up.

Order (each scenario drives load from a separate ``bench.load`` process):

1. nx-27017, the demo downstreams, the daemon (start -> ``/readyz`` 200 is timed), the two reference apps.
2. ``max``        service-a commands, ``inflight`` in flight, on the daemon (on ``replicas`` daemons sharing
                  one namespace when ``--replicas N`` > 1).
   ``replicas``   the same load on 2 daemons sharing one namespace (same AMQP prefix, Redis key prefix and
                  outbox database, own sidecar ports) competing on the same queues: combined commands/s,
                  CPU per daemon, duplicate effects at the demo service-a and lost commands (skipped when
                  ``max`` already ran on several replicas).
3. ``reference``  the same load on the bare FastStream reference.
   ``handwritten`` the same load on the hand-written aio-pika pipeline (SET NX, HTTP, insert_one, confirmed reply).
4. ``rate-80``    service-a commands offered at 80% of the ``max`` scenario's commands/s of this run (at ``rate``
                  when max did not run on one daemon): the outbox lag (from /metrics) below saturation.
   ``rate``       service-a commands offered at ``rate``/s: latency and outbox lag (from /metrics).
   ``rate-low``   the same at ``low_rate``/s, well below saturation: the latency floor.
5. ``soak``       optional: ``soak_seconds`` at a rate the daemon sustains (``rate``, at most 80% of the
                  measured max), sampling the daemon's RSS every 5 s.
6. ``profile``    optional: max load with py-spy attached to the daemon.
7. ``iso-healthy`` service-a at max while service-b commands arrive at ``iso_b_rate``/s, both healthy.
   ``webhook``    signed Standard Webhooks deliveries (source ``acme``) POSTed ``webhook_concurrency`` at a
                  time to the daemon's sidecar by ``bench.webhook_load``: requests/s, latency, every answer 2xx.
   ``webhook-500`` the same deliveries offered at ``webhook_rate``/s (open loop): latency below saturation.
8. ``baseline``   "today's" daemon: the package at git ``baseline_rev`` (the code when issue 13 was filed), exported
                  and started alone in a namespace of its own (``baseline``), under the ``max`` load
                  (``baseline-max``) and the webhook max load (``baseline-webhook``): CPU per command and webhook
                  rate side by side with ours. A failure is recorded and the run goes on.
9. ``iso-dead``   the same on a second daemon whose service-b points at a dead port.
10. ``tracing``    the max load on three fresh daemons of their own namespace, one after the other: no OTEL_*
                  variable (``tracing-off``), then exporting every trace (``tracing-100``,
                  ``parentbased_always_on``) and one in ten (``tracing-10``, ``parentbased_traceidratio`` 0.1)
                  over OTLP/HTTP to a local receiver process (``tests.otlp``); the throughput ratios to the
                  untraced run are printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from s2s_daemon.cli import EXAMPLE_CONFIG
from s2s_daemon.local import EmbeddedMongo, free_port
from tests.harness.bench import profile as pyspy
from tests.harness.bench.baseline import BASELINE_REV, baseline_argv, export_package
from tests.harness.bench.figures import share_of_max
from tests.harness.bench.harness import (
    RABBITMQ_URL,
    REDIS_URL,
    BenchProcess,
    DaemonNamespace,
    daemon_config,
    delete_namespaces,
    harness_env,
    python_module,
    start_mongo,
    wait_http_ok,
)
from tests.harness.bench.issue_targets import LAG_SHARE
from tests.harness.bench.procstat import find_pids_by_name
from tests.harness.bench.report import bucket_delta, counter_total, histogram_quantile, parse_histogram
from tests.harness.bench.spec import LoadSpec, StreamSpec, WebhookSpec

__all__ = ["EXAMPLE_CONFIG", "FULL", "QUICK", "SCENARIOS", "Bench", "Plan", "guarantees"]

ROUTE_A = "service-a.create-resource"
ROUTE_B = "service-b.get-resource"
LAG_METRIC = "s2s_outbox_publish_lag_seconds"
WEBHOOK_SOURCE = "acme"
SCENARIOS = ("max", "replicas", "reference", "handwritten", "rate", "iso", "webhook", "baseline", "tracing")
# the traced runs: name -> the OTEL_* variables of the daemon (besides exporter and endpoint when traced)
TRACING_RUNS: tuple[tuple[str, dict[str, str] | None], ...] = (
    ("tracing-off", None),
    ("tracing-100", {"OTEL_TRACES_SAMPLER": "parentbased_always_on"}),
    ("tracing-10", {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.1"}),
)


@dataclass(frozen=True, slots=True)
class Plan:
    """How much load each scenario gets."""

    mode: str
    count: int  # commands in the max-throughput runs (daemon and reference)
    seconds: float  # > 0: max-throughput runs stop sending after this long (keeps --quick bounded)
    warmup: int
    inflight: int
    rate: float
    rate_seconds: float
    low_rate: float
    low_seconds: float
    iso_count: int
    iso_seconds: float
    iso_b_rate: float
    reply_timeout: float
    soak_seconds: float = 0.0
    profile_seconds: float = 0.0
    scenarios: tuple[str, ...] = SCENARIOS
    replicas: int = 1  # daemons in the ``max`` run; 1 adds a separate 2-replica run (scenario ``replicas``)
    webhook_count: int = 100_000
    webhook_seconds: float = 3.0
    webhook_concurrency: int = 32
    webhook_warmup: int = 200
    rate80_seconds: float = 20.0  # the rate-80 run (80% of max, for the outbox lag)
    webhook_rate: float = 500.0  # the webhook-500 run: offered deliveries/s ...
    webhook_rate_seconds: float = 20.0  # ... for this long
    baseline_rev: str = BASELINE_REV  # "today's" daemon of the baseline scenario


# --quick is bounded by time (the daemon's speed changes as issues land), the full run by command counts
QUICK = Plan("quick", count=100_000, seconds=3.5, warmup=50, inflight=200, rate=500, rate_seconds=1.5,
             low_rate=50, low_seconds=2, iso_count=100_000, iso_seconds=2.5, iso_b_rate=50, reply_timeout=10,
             webhook_count=100_000, webhook_seconds=2.5, webhook_warmup=100, rate80_seconds=2.0,
             webhook_rate_seconds=1.5)  # fmt: skip
FULL = Plan("full", count=20_000, seconds=0, warmup=1000, inflight=200, rate=500, rate_seconds=20,
            low_rate=50, low_seconds=20, iso_count=5000, iso_seconds=0, iso_b_rate=100, reply_timeout=120,
            webhook_count=20_000, webhook_seconds=0, webhook_warmup=1000)  # fmt: skip


class Bench:
    def __init__(self, plan: Plan, root: Path, *, keep_files: bool = False, log: Any = print) -> None:
        self.plan = plan
        self.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        self.run_id = "bench" + uuid.uuid4().hex[:8]
        self.root = root
        self.dir = root / f"run-{self.stamp}"
        self.keep_files = keep_files
        self.log = log
        self.ns = DaemonNamespace(self.run_id)
        self.ns_iso = DaemonNamespace(self.run_id + "-iso")
        # the reference app's exchange and queue, named as the daemon names its own
        self.ns_ref = DaemonNamespace(self.run_id + "-ref", ("service-a",))
        self.ref_exchange = self.ns_ref.commands_exchange
        self.ref_queue = self.ns_ref.topology.command_queue_name("service-a")
        # the hand-written pipeline's: AMQP names, Redis key prefix and Mongo database all from its own prefix
        self.ns_hand = DaemonNamespace(self.run_id + "-hand", ("service-a",))
        self.ns_trace = DaemonNamespace(self.run_id + "-trace")
        self.ns_base = DaemonNamespace(self.run_id + "-base")
        self.mongo: EmbeddedMongo | None = None
        self.procs: list[BenchProcess] = []
        self.results: dict[str, Any] = {
            "run_id": self.run_id,
            "started_at": self.stamp,
            "plan": asdict(plan),
            "scenarios": {},
            "startup": {},
        }

    # the run ---------------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        self.dir.mkdir(parents=True, exist_ok=True)
        wall = time.perf_counter()
        try:
            self._run_scenarios()
        finally:
            self.results["cleanup"] = self._teardown()
            self.results["wall_seconds"] = round(time.perf_counter() - wall, 1)
        return self.results

    def _run_scenarios(self) -> None:
        p = self.plan
        wanted = set(p.scenarios)
        scenarios = self.results["scenarios"]
        self._start_shared()
        daemon, sidecar = self._start_daemon("daemon", self.ns, dead_b=False)
        reference = self._start_reference() if "reference" in wanted else None
        handwritten = self._start_handwritten() if "handwritten" in wanted else None
        a_max = StreamSpec(ROUTE_A, "inflight", p.inflight, p.count, p.seconds)
        a_rate = StreamSpec(ROUTE_A, "rate", p.rate, int(p.rate * p.rate_seconds))
        mixed = [
            StreamSpec(ROUTE_A, "inflight", p.inflight, p.iso_count, p.iso_seconds),
            StreamSpec(ROUTE_B, "rate", p.iso_b_rate),
        ]
        on_daemon: dict[str, Any] = {"serving": [daemon], "sidecar": sidecar}

        if "max" in wanted:
            extra = self._start_replicas(p.replicas)
            serving = [daemon, *extra]
            scenarios["max"] = self._max_run("max", a_max, serving, sidecar)
            for proc in extra:
                proc.stop()
        if "replicas" in wanted and p.replicas == 1:
            extra = self._start_replicas(2)
            scenarios["replicas"] = self._max_run("replicas", a_max, [daemon, *extra], sidecar)
            for proc in extra:
                proc.stop()
        low = StreamSpec(ROUTE_A, "rate", p.low_rate, int(p.low_rate * p.low_seconds))
        if reference is not None:
            scenarios["reference"] = self._load(
                "reference", self.ref_exchange, [a_max], warmup=p.warmup, serving=[reference]
            )
            if "rate" in wanted:  # the references' latency floor, beside ours
                scenarios["reference-low"] = self._load(
                    "reference-low", self.ref_exchange, [low], warmup=0, serving=[reference]
                )
            # stopped so it does not sit on the cores the next scenarios measure
            reference.stop()
        if handwritten is not None:
            scenarios["handwritten"] = self._load(
                "handwritten", self.ns_hand.commands_exchange, [a_max], warmup=p.warmup, serving=[handwritten]
            )
            if "rate" in wanted:
                scenarios["handwritten-low"] = self._load(
                    "handwritten-low", self.ns_hand.commands_exchange, [low], warmup=0, serving=[handwritten]
                )
            handwritten.stop()
        if "rate" in wanted:
            rate80, source, measured = share_of_max(self.results, LAG_SHARE, p.rate)
            self.results["rate80"] = {"rate": rate80, "source": source, "max_per_s": measured}
            if source == "plan":
                self.log(f"bench: rate-80: no max of one daemon in this run; offering the plan's {p.rate:g}/s instead")
            s80 = StreamSpec(ROUTE_A, "rate", rate80, max(1, int(rate80 * p.rate80_seconds)))
            scenarios["rate-80"] = self._load("rate-80", self.ns.commands_exchange, [s80], warmup=0, **on_daemon)
            scenarios["rate"] = self._load("rate", self.ns.commands_exchange, [a_rate], warmup=0, **on_daemon)
            scenarios["rate-low"] = self._load("rate-low", self.ns.commands_exchange, [low], warmup=0, **on_daemon)
        if p.soak_seconds > 0:
            measured = (scenarios.get("max", {}).get("streams") or [{}])[0].get("throughput_per_s")
            soak_rate = min(p.rate, 0.8 * measured) if measured else p.rate
            self.results["soak_rate"] = soak_rate
            soak = StreamSpec(ROUTE_A, "rate", soak_rate, int(soak_rate * p.soak_seconds))
            scenarios["soak"] = self._load(
                "soak", self.ns.commands_exchange, [soak], warmup=0, rss_every=5.0, **on_daemon
            )
        if p.profile_seconds > 0:
            self.results["profile"] = self._profile(daemon, sidecar)
        if "iso" in wanted:
            scenarios["iso-healthy"] = self._load(
                "iso-healthy", self.ns.commands_exchange, mixed, warmup=p.warmup, **on_daemon
            )
        if "webhook" in wanted:
            scenarios["webhook"] = self._webhooks("webhook", daemon, sidecar)
            scenarios["webhook-500"] = self._webhooks("webhook-500", daemon, sidecar, rate=p.webhook_rate, lag=False)
        # one daemon at a time: the second must not share the two cores with an idle-but-alive first
        daemon.stop()
        self.results["daemon_final"] = asdict(daemon.last_sample) if daemon.last_sample else None
        if "baseline" in wanted:
            self.results["baseline"] = self._baseline_runs(a_max)
        if "iso" in wanted:
            dead, dead_sidecar = self._start_daemon("daemon-iso", self.ns_iso, dead_b=True)
            scenarios["iso-dead"] = self._load(
                "iso-dead", self.ns_iso.commands_exchange, mixed, warmup=p.warmup, serving=[dead], sidecar=dead_sidecar
            )
            dead.stop()
        if "tracing" in wanted:
            self.results["tracing"] = self._tracing_runs(a_max)

    def _tracing_runs(self, stream: StreamSpec) -> dict[str, Any]:
        """The max load on an untraced daemon, one tracing every command, one tracing one in ten; the receiver
        counts what arrives. Each daemon runs alone (the previous one stopped) in the tracing namespace."""
        scenarios = self.results["scenarios"]
        port = free_port()
        receiver = self._spawn("otlp-receiver", python_module("tests.otlp", str(port)), ports=(port,))
        for name, sampler in TRACING_RUNS:
            env = None
            if sampler is not None:
                env = {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}"}
                env.update(sampler)
            daemon, sidecar = self._start_daemon(name, self.ns_trace, dead_b=False, extra_env=env)
            scenarios[name] = self._load(
                name, self.ns_trace.commands_exchange, [stream], warmup=self.plan.warmup, serving=[daemon],
                sidecar=sidecar,
            )  # fmt: skip
            daemon.stop()  # drains: the spans it still buffers are exported before it exits
        received = httpx.get(f"http://127.0.0.1:{port}/stats", timeout=5).json()
        receiver.stop()
        off = stream_rate(scenarios.get("tracing-off"))
        off_cpu = cpu_ms_per_command(scenarios.get("tracing-off"), "tracing-off", self.plan.warmup)
        out: dict[str, Any] = {
            "spans_received": received["spans"],
            "export_requests": received["requests"],
            "tracing-off": {"per_s": off, "cpu_ms_per_command": off_cpu},
        }
        for name, _ in TRACING_RUNS[1:]:
            rate = stream_rate(scenarios.get(name))
            cpu = cpu_ms_per_command(scenarios.get(name), name, self.plan.warmup)
            out[name] = {
                "per_s": rate,
                "of_off": round(rate / off, 3) if rate is not None and off else None,
                "cpu_ms_per_command": cpu,
                "cpu_of_off": round(cpu / off_cpu, 3) if cpu is not None and off_cpu else None,
            }
        self.log(
            f"bench:   tracing: throughput on 100% {out['tracing-100']['of_off']}x, on 10% "
            f"{out['tracing-10']['of_off']}x of untraced; daemon CPU per command {out['tracing-100']['cpu_of_off']}x "
            f"and {out['tracing-10']['cpu_of_off']}x; {received['spans']:,} spans received"
        )
        return out

    def _baseline_runs(self, stream: StreamSpec) -> dict[str, Any]:
        """Today's daemon (the package at ``baseline_rev``) alone on the machine: the max load, then the webhook
        max load. Whatever fails is recorded (the summary then falls back to the issue's recorded figures) and
        the run goes on; the export is removed afterwards."""
        rev = self.plan.baseline_rev
        out: dict[str, Any] = {"rev": rev}
        scenarios = self.results["scenarios"]
        tree = self.dir / "baseline-src"
        try:
            export_package(rev, tree)
            daemon, sidecar = self._start_daemon("baseline", self.ns_base, dead_b=False, package=tree)
            scenarios["baseline-max"] = self._max_run(
                "baseline-max", stream, [daemon], sidecar, exchange=self.ns_base.commands_exchange
            )
            scenarios["baseline-webhook"] = self._webhooks(
                "baseline-webhook", daemon, sidecar, example=_example_of(tree), lag=False
            )
        except Exception as exc:
            out["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            self.log(f"bench: baseline {rev} failed: {type(exc).__name__}: {exc}")
        finally:
            for proc in self.procs:
                if proc.name == "baseline":
                    proc.stop()
            shutil.rmtree(tree, ignore_errors=True)
        return out

    # processes -------------------------------------------------------------------------------------
    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str] | None = None, ports: tuple[int, ...] = ()
    ) -> BenchProcess:
        """Start a child (and wait for ``ports``); the teardown stops it whatever happens."""
        proc = BenchProcess(name, argv, self.dir / f"{name}.log", harness_env(env), ports=ports, start_timeout=20)
        self.procs.append(proc)
        return proc.start()

    def _start_shared(self) -> None:
        self.mongo, seconds = start_mongo(self.dir / "mongo")
        self.results["startup"]["nx-27017_s"] = round(seconds, 3)
        self.log(f"bench: nx-27017 at {self.mongo.uri} ({seconds:.2f}s)")
        self.port_a, self.port_b = free_port(), free_port()
        self._spawn(
            "demo",
            python_module("s2s_daemon", "demo", "--port-a", str(self.port_a), "--port-b", str(self.port_b)),
            ports=(self.port_a, self.port_b),
        )
        self.log(f"bench: demo downstreams on :{self.port_a} and :{self.port_b}")

    def _start_daemon(
        self,
        name: str,
        ns: DaemonNamespace,
        *,
        dead_b: bool,
        extra_env: dict[str, str] | None = None,
        package: Path | None = None,
    ) -> tuple[BenchProcess, str]:
        """A daemon of ours, or with ``package`` the exported one found there (its own example config)."""
        assert self.mongo is not None
        http_port = free_port()
        # a port nobody listens on: connection refused at once
        port_b = free_port() if dead_b else self.port_b
        config = daemon_config(
            EXAMPLE_CONFIG if package is None else _example_of(package),
            ns,
            http_port,
            {"service-a": f"http://127.0.0.1:{self.port_a}", "service-b": f"http://127.0.0.1:{port_b}"},
        )
        config_path = self.dir / f"{name}.yaml"
        config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
        env = {
            "RABBITMQ_URL": RABBITMQ_URL,
            "REDIS_URL": REDIS_URL,
            "MONGODB_URI": self.mongo.uri,
            "LOG_LEVEL": "WARNING",
            **(extra_env or {}),
        }
        argv = python_module("s2s_daemon", "run", "--config", str(config_path))
        if package is not None:
            argv = baseline_argv(config_path)
            env["PYTHONPATH"] = str(package)
        proc = self._spawn(name, argv, env)
        sidecar = f"http://127.0.0.1:{http_port}"
        ready = wait_http_ok(f"{sidecar}/readyz", 30, proc)
        self.results["startup"][f"{name}_ready_s"] = round(ready, 3)
        self.log(f"bench: {name} pid {proc.pid} ready in {ready:.2f}s (prefix {ns.prefix}, dead service-b: {dead_b})")
        return proc, sidecar

    def _start_reference(self) -> BenchProcess:
        argv = ["--exchange", self.ref_exchange, "--queue", self.ref_queue]
        return self._start_app("reference", "tests.harness.bench.reference", argv)

    def _start_handwritten(self) -> BenchProcess:
        assert self.mongo is not None
        ns = self.ns_hand
        argv = [
            "--exchange", ns.commands_exchange,
            "--queue", ns.topology.command_queue_name("service-a"),
            "--redis-url", REDIS_URL,
            "--key-prefix", ns.key_prefix,
            "--mongo-uri", self.mongo.uri,
            "--database", ns.prefix,
        ]  # fmt: skip
        return self._start_app("handwritten", "tests.harness.bench.handwritten", argv)

    def _start_app(self, name: str, module: str, args: list[str]) -> BenchProcess:
        """A reference app on the demo service-a; ready once it writes its ready file (its consumer runs)."""
        ready_file = self.dir / f"{name}.ready"
        argv = python_module(
            module, *args, "--service-url", f"http://127.0.0.1:{self.port_a}", "--ready-file", str(ready_file)
        )
        proc = self._spawn(name, argv)
        deadline = time.perf_counter() + 30
        while not ready_file.exists():
            proc.check_alive()
            if time.perf_counter() > deadline:
                raise TimeoutError(f"the {name} app did not start; see {proc.log_path}")
            time.sleep(0.02)
        self.log(f"bench: {name} pid {proc.pid} ready in {time.perf_counter() - proc.started_at:.2f}s")
        return proc

    def _start_replicas(self, total: int) -> list[BenchProcess]:
        """``total - 1`` more daemons in the main namespace: same queues, Redis keys and outbox database."""
        return [self._start_daemon(f"daemon-r{i}", self.ns, dead_b=False)[0] for i in range(2, total + 1)]

    def _demo_a(self, path: str, *, post: bool = False) -> dict[str, Any]:
        url = f"http://127.0.0.1:{self.port_a}{path}"
        response = httpx.post(url, timeout=10) if post else httpx.get(url, timeout=10)
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    # scenarios -------------------------------------------------------------------------------------
    def _max_run(
        self, name: str, stream: StreamSpec, serving: list[BenchProcess], sidecar: str, exchange: str | None = None
    ) -> dict[str, Any]:
        """Max throughput on one or more daemons, with the guarantees checked at the demo service-a.

        The demo forgets everything first, so its counters after the run cover exactly this run's commands
        (warm-up included). Several replicas: the outbox lag is not scraped (each sidecar sees only its share).
        """
        self._demo_a("/_reset", post=True)
        result = self._load(
            name,
            exchange or self.ns.commands_exchange,
            [stream],
            warmup=self.plan.warmup,
            serving=serving,
            sidecar=sidecar if len(serving) == 1 else None,
        )
        result["replicas"] = len(serving)
        result["guarantees"] = guarantees(result, self._demo_a("/_stats"), self.plan.warmup)
        g = result["guarantees"]
        self.log(
            f"bench:   {name}: {len(serving)} daemon(s), duplicate effects {g['duplicate_effects']}, "
            f"lost {g['lost']}, downstream re-calls {g['downstream_recalls']}, duplicated replies "
            f"{g['duplicated_replies']}"
        )
        return result

    def _webhooks(
        self,
        name: str,
        daemon: BenchProcess,
        sidecar: str,
        *,
        rate: float = 0.0,
        example: Path = EXAMPLE_CONFIG,
        lag: bool = True,
    ) -> dict[str, Any]:
        """Signed deliveries to ``POST /api/webhooks/acme`` from a separate process, ``webhook_concurrency`` in
        flight or (``rate`` > 0) offered at ``rate``/s; outbox lag from /metrics once the relay has published
        them (``lag=False``, when the daemon stops next: neither the wait nor the lag figures)."""
        p = self.plan
        config = yaml.safe_load(example.read_text(encoding="utf-8"))
        secret = config["webhooks"][WEBHOOK_SOURCE]["secrets"][0]
        spec = WebhookSpec(
            f"{sidecar}/api/webhooks/{WEBHOOK_SOURCE}",
            secret,
            concurrency=p.webhook_concurrency,
            count=max(1, int(rate * p.webhook_rate_seconds)) if rate > 0 else p.webhook_count,
            seconds=0.0 if rate > 0 else p.webhook_seconds,
            warmup=p.webhook_warmup,
            watch=self._watch(),
            rate=rate,
        )
        before = _scrape(sidecar) if lag else ""
        self.log(f"bench: scenario {name} ...")
        result = self._run_loadgen(name, python_module("tests.harness.bench.webhook_load", spec.to_json()), [daemon])
        if lag:
            after = _scrape_settled(sidecar, before, p.webhook_warmup + result["accepted_202"])
            result["outbox"] = _metrics_stats(before, after)
        lat = result["latency"]
        self.log(
            f"bench:   {name}: {result['throughput_per_s'] or 0:,.0f}/s, p50 {_ms(lat['p50_ms'])}, "
            f"p99 {_ms(lat['p99_ms'])}, {result['ok_2xx']}/{result['requests']} 2xx, statuses {result['statuses']}"
        )
        return result

    def _run_loadgen(
        self, name: str, argv: list[str], serving: list[BenchProcess], on_started: Any = None
    ) -> dict[str, Any]:
        """Run one load generator to its end, watching the served processes; its last JSON line is the result."""
        proc = self._spawn(f"load-{name}", argv)
        if on_started is not None:
            on_started(proc)
        try:
            while proc.alive():
                for p in serving:
                    p.check_alive()
                time.sleep(0.1)
        finally:
            code = proc.stop()
        if code != 0:
            raise RuntimeError(f"load generator for {name} exited with {code}:\n{proc.tail()}")
        log = self.dir / f"load-{name}.log"
        lines = [line for line in log.read_text().splitlines() if line.startswith("{")]
        result: dict[str, Any] = orjson.loads(lines[-1])
        return result

    def _watch(self) -> dict[str, int]:
        """Every long-running process of ours that is alive, plus the shared RabbitMQ and Redis (read only)."""
        watch = {p.name: p.pid for p in self.procs if p.alive() and not p.name.startswith("load-")}
        if self.mongo is not None and self.mongo.pid is not None:
            watch["nx-27017"] = self.mongo.pid
        for comm, label in (("beam.smp", "rabbitmq"), ("redis-server", "redis")):
            pids = find_pids_by_name(comm)
            if len(pids) == 1:
                watch[label] = pids[0]
        return watch

    def _load(
        self,
        name: str,
        exchange: str,
        streams: list[StreamSpec],
        *,
        warmup: int,
        serving: list[BenchProcess],
        sidecar: str | None = None,
        rss_every: float = 0.0,
        on_started: Any = None,
    ) -> dict[str, Any]:
        spec = LoadSpec(
            RABBITMQ_URL,
            exchange,
            tuple(streams),
            warmup=warmup,
            reply_timeout=self.plan.reply_timeout,
            # the other streams (service-b in the isolation runs) only load the daemon; a paused consumer
            # (open breaker) leaves their commands queued, and the run need not wait for them
            secondary_drain=2.0,
            watch=self._watch(),
            rss_every=rss_every,
        )
        before = _scrape(sidecar) if sidecar else None
        self.log(f"bench: scenario {name} ...")
        argv = python_module("tests.harness.bench.load", spec.to_json())
        result = self._run_loadgen(name, argv, serving, on_started)
        if sidecar is not None and before is not None:
            replies = sum(s["replies"] for s in result["streams"])
            after = _scrape_settled(sidecar, before, replies)
            result["outbox"] = _metrics_stats(before, after)
        primary = result["streams"][0]
        self.log(
            f"bench:   {name}: {primary['throughput_per_s'] or 0:,.0f}/s, p50 {_ms(primary['latency']['p50_ms'])}, "
            f"p99 {_ms(primary['latency']['p99_ms'])}, failed {primary['failed']}, missing {primary['missing']}"
        )
        return result

    def _profile(self, daemon: BenchProcess, sidecar: str) -> dict[str, Any]:
        """Max load with py-spy on the daemon (and on nx-27017, which the relay waits for)."""
        if pyspy.py_spy_path() is None:
            return {"error": "py-spy is not installed (.venv/bin/pip install py-spy)"}
        seconds = self.plan.profile_seconds
        targets = {"daemon": daemon.pid}
        if self.mongo is not None and self.mongo.pid is not None:
            targets["nx-27017"] = self.mongo.pid
        spies: dict[str, tuple[Any, Path, Path]] = {}

        def attach(_: BenchProcess) -> None:
            time.sleep(3)  # past the warm-up
            for name, pid in targets.items():
                spies[name] = pyspy.start_py_spy(pid, seconds, self.dir, name)
            spies["daemon-svg"] = pyspy.start_py_spy(daemon.pid, seconds, self.dir, "daemon", svg=True)

        load = StreamSpec(ROUTE_A, "inflight", self.plan.inflight, 10_000_000, seconds + 6)
        result = self._load(
            "profile", self.ns.commands_exchange, [load], warmup=self.plan.warmup, on_started=attach, serving=[daemon],
            sidecar=sidecar,
        )  # fmt: skip
        out: dict[str, Any] = {"seconds": seconds, "load": result}
        for name, (proc, raw, log) in spies.items():
            proc.wait(seconds + 30)
            if not raw.exists():
                out[name] = {"error": f"py-spy wrote nothing; see {log}"}
                continue
            shutil.copy(raw, self.root / raw.name)
            if raw.suffix == ".svg":
                out[name] = {"flamegraph": str(self.root / raw.name)}
                continue
            summary = pyspy.summarize(pyspy.parse_collapsed(raw.read_text(errors="replace").splitlines()), top=12)
            self.log(f"bench: profile of {name}\n{pyspy.format_summary(summary)}")
            out[name] = {"raw": str(raw), "summary": summary}
        return out

    # teardown --------------------------------------------------------------------------------------
    def _teardown(self) -> dict[str, Any]:
        cleanup: dict[str, Any] = {}
        for proc in reversed(self.procs):
            with contextlib.suppress(Exception):
                proc.stop()
        if self.mongo is not None:
            self.mongo.stop()
        try:
            cleanup["deleted"] = asyncio.run(
                delete_namespaces(
                    [self.ns, self.ns_iso, self.ns_hand, self.ns_trace, self.ns_base],
                    extra_queues=[self.ref_queue],
                    extra_exchanges=[self.ref_exchange],
                )
            )
        except Exception as exc:  # report it, never mask the run's own error
            cleanup["error"] = f"{type(exc).__name__}: {exc}"
        if not self.keep_files:
            shutil.rmtree(self.dir / "mongo", ignore_errors=True)
        return cleanup


def _example_of(package: Path) -> Path:
    """The example config inside an exported package (the keys that code understands)."""
    return package / "s2s_daemon" / "config" / "example.yaml"


# /metrics --------------------------------------------------------------------------------------------
def _scrape(sidecar: str) -> str:
    return httpx.get(f"{sidecar}/metrics", timeout=5).text


def _scrape_settled(sidecar: str, before: str, replies: int, timeout: float = 5.0) -> str:
    """Scrape once the relay has recorded every reply the load generator got.

    The reply reaches the caller before the relay marks its batch sent and observes the lag, so an
    immediate scrape would push the last batch's observations into the next scenario.
    """
    published = "s2s_outbox_published_total"
    deadline = time.perf_counter() + timeout
    while True:
        after = _scrape(sidecar)
        if counter_total(after, published) - counter_total(before, published) >= replies:
            return after
        if time.perf_counter() > deadline:
            return after
        time.sleep(0.05)


def _metrics_stats(before: str, after: str) -> dict[str, Any]:
    """What the daemon saw between two scrapes: outbox lag, handler and downstream-call time, relay batches.

    Quantiles are estimated from histogram buckets (1, 2.5, 5, 10, 25, 50, 100, 250 ms, ...): coarse.
    """

    def quantiles(name: str, match: dict[str, str] | None = None) -> dict[str, float | None]:
        delta = bucket_delta(parse_histogram(after, name, match), parse_histogram(before, name, match))
        p50, p99 = histogram_quantile(0.5, delta), histogram_quantile(0.99, delta)
        return {
            "observations": delta[-1][1] if delta else 0,
            "p50_ms": None if p50 is None else round(p50 * 1000, 2),
            "p99_ms": None if p99 is None else round(p99 * 1000, 2),
        }

    lag = quantiles(LAG_METRIC)
    batches = bucket_delta(
        parse_histogram(after, "s2s_relay_batch_size"), parse_histogram(before, "s2s_relay_batch_size")
    )
    published = counter_total(after, "s2s_outbox_published_total") - counter_total(before, "s2s_outbox_published_total")
    return {
        "lag_observations": lag["observations"],
        "lag_p50_ms": lag["p50_ms"],
        "lag_p99_ms": lag["p99_ms"],
        "lag_buckets": bucket_delta(parse_histogram(after, LAG_METRIC), parse_histogram(before, LAG_METRIC)),
        "handler_service_a": quantiles("s2s_handler_duration_seconds", {"downstream": "service-a"}),
        "downstream_call_service_a": quantiles("s2s_downstream_call_duration_seconds", {"downstream": "service-a"}),
        "relay_rounds": batches[-1][1] if batches else 0,
        "relay_mean_batch": round(published / batches[-1][1], 1) if batches and batches[-1][1] else None,
        "published": published,
        "publish_failures": counter_total(after, "s2s_outbox_publish_failures_total")
        - counter_total(before, "s2s_outbox_publish_failures_total"),
    }


def guarantees(result: dict[str, Any], demo_stats: dict[str, Any], warmup: int) -> dict[str, Any]:
    """Duplicate effects and lost commands of one max run, from the load generator and the demo's /_stats.

    The demo applies one effect per new Idempotency-Key, so ``effects - distinct keys`` counts effects
    applied without (or beyond) a key. Effects beyond the commands answered "succeeded" (warm-up included)
    are effects nobody was told about (a failed reply after a successful call). A re-call (the same key
    twice at the demo) is allowed by the contract (the key makes it harmless) and is reported apart.
    Lost: published and confirmed, but no reply within the reply timeout.
    """
    streams = result.get("streams", [])
    succeeded = sum(s["succeeded"] for s in streams)
    effects, calls, distinct = int(demo_stats["effects"]), int(demo_stats["calls"]), int(demo_stats["distinct_keys"])
    return {
        "effects": effects,
        "calls": calls,
        "distinct_keys": distinct,
        "expected_effects": warmup + succeeded,
        "duplicate_effects": effects - distinct,
        "effects_beyond_successes": effects - (warmup + succeeded),
        "downstream_recalls": calls - distinct,
        "lost": sum(s["missing"] for s in streams),
        "publish_errors": sum(s["publish_errors"] for s in streams),
        "duplicated_replies": int(result.get("stray_replies", 0)),
    }


def stream_rate(scenario: dict[str, Any] | None) -> float | None:
    """The first stream's commands/s of a scenario's result, None when it did not run."""
    if not scenario or not scenario.get("streams"):
        return None
    rate: float | None = scenario["streams"][0]["throughput_per_s"]
    return rate


def cpu_ms_per_command(scenario: dict[str, Any] | None, process: str, warmup: int) -> float | None:
    """The daemon's CPU milliseconds per command over a load run (warm-up included): less sensitive than
    commands/s to other work on the machine."""
    if not scenario or not scenario.get("streams"):
        return None
    stats = scenario.get("processes", {}).get(process)
    done = int(scenario["streams"][0]["succeeded"]) + warmup
    if not stats or not done:
        return None
    return round(float(stats["cpu_seconds"]) * 1000 / done, 3)


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"
