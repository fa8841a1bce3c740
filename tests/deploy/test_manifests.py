"""The shipping artifacts agree with the daemon: probes, drain budget, security, compose wiring, metric names.

Schema validity is `make lint-deploy`'s job (hadolint, compose-spec, kubernetes-validate, promtool); these
tests pin the properties a schema cannot see.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.settings import Settings, load_settings

ROOT = Path(__file__).parents[2]
BASE = ROOT / "deploy" / "k8s" / "base"
SIDECAR_PORT = 8080
SECRET_NAME = "s2s-daemon-secrets"


def _load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _container() -> dict[str, Any]:
    (container,) = _load(BASE / "deployment.yaml")["spec"]["template"]["spec"]["containers"]
    assert isinstance(container, dict)
    return container


def _named_port(container: dict[str, Any], name: str) -> int:
    (port,) = [p["containerPort"] for p in container["ports"] if p["name"] == name]
    return int(port)


def _compose() -> dict[str, Any]:
    compose = _load(ROOT / "docker-compose.yml")
    assert isinstance(compose, dict)
    return compose


def _healthcheck_command(service: dict[str, Any]) -> str:
    test = service["healthcheck"]["test"]
    return " ".join(test) if isinstance(test, list) else str(test)


def _configmap_settings(tmp_path: Path) -> Settings:
    config = tmp_path / "config.yaml"
    config.write_text(_load(BASE / "configmap.yaml")["data"]["config.yaml"], encoding="utf-8")
    return load_settings(config)


def test_probes_hit_livez_and_readyz_on_the_sidecar_port() -> None:
    """Startup and liveness probe /livez, readiness probes /readyz, all on the sidecar's port 8080."""
    container = _container()
    probes = {kind: container[f"{kind}Probe"]["httpGet"] for kind in ("startup", "liveness", "readiness")}
    assert {kind: probe["path"] for kind, probe in probes.items()} == {
        "startup": "/livez",
        "liveness": "/livez",
        "readiness": "/readyz",
    }
    for probe in probes.values():
        port = probe["port"]
        assert (_named_port(container, port) if isinstance(port, str) else port) == SIDECAR_PORT
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["S2S_HTTP__HOST"] == "0.0.0.0"


def test_termination_grace_outlasts_the_drain(tmp_path: Path) -> None:
    """terminationGracePeriodSeconds covers the preStop pause plus the daemon's graceful_timeout (20 s)."""
    pod = _load(BASE / "deployment.yaml")["spec"]["template"]["spec"]
    grace = pod["terminationGracePeriodSeconds"]
    pre_stop = _container()["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = _configmap_settings(tmp_path).amqp.graceful_timeout
    assert drain == Settings().amqp.graceful_timeout == 20.0
    assert grace > 20
    assert grace >= int(pre_stop[1]) + drain + 10, "leave room to close connections after the drain"


def test_pod_runs_non_root_read_only_and_without_capabilities() -> None:
    """runAsNonRoot, read-only root filesystem, all capabilities dropped, RuntimeDefault seccomp, /tmp writable."""
    pod = _load(BASE / "deployment.yaml")["spec"]["template"]["spec"]
    container = _container()
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]


def _stages() -> dict[str, str]:
    """The Dockerfile's stages by name, in order, continuation lines joined."""
    text = (ROOT / "Dockerfile").read_text(encoding="utf-8").replace("\\\n", " ")
    parts = re.split(r"^FROM\s+\S+\s+AS\s+(\S+)$", text, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_production_image_is_the_default_target_and_installs_only_the_otel_extra() -> None:
    """`docker build .` builds the runtime stage (the last one): the wheel with the `otel` extra only (tracing,
    off until OTEL_* turn it on); the demo stage adds `local`."""
    stages = _stages()
    assert list(stages)[-1] == "runtime"
    (install,) = [line for line in stages["runtime"].splitlines() if "pip install" in line]
    assert "/wheels/s2s_daemon-*.whl" in install
    assert re.findall(r"\[([^\]]*)\]", install.partition("pip install")[2]) == ["otel"]
    assert "otel" in re.search(r"pip wheel .*'\.\[([^\]]*)\]'", stages["build"]).group(1).split(",")
    assert "[local]" in stages["demo"]
    compose = _load(ROOT / "docker-compose.yml")
    assert compose["services"]["demo"]["build"]["target"] == "demo"
    assert "target" not in compose["services"]["daemon"].get("build", {})


def test_image_user_is_the_numeric_pod_user() -> None:
    """The Dockerfile's USER is numeric and equals runAsUser, so the kubelet can verify runAsNonRoot."""
    dockerfile = _stages()["runtime"]
    (user,) = re.findall(r"^USER\s+(\S+)$", dockerfile, flags=re.MULTILINE)
    uid, _, gid = user.partition(":")
    pod_security = _load(BASE / "deployment.yaml")["spec"]["template"]["spec"]["securityContext"]
    assert uid.isdigit()
    assert int(uid) != 0
    assert (int(uid), int(gid)) == (pod_security["runAsUser"], pod_security["runAsGroup"])


def test_dockerfile_healthcheck_and_entrypoint() -> None:
    """The image checks /livez on 8080, stops with SIGTERM and runs `s2s-daemon run` in exec form."""
    dockerfile = _stages()["runtime"]
    (healthcheck,) = [line for line in dockerfile.splitlines() if line.startswith("HEALTHCHECK")]
    assert "/livez" in healthcheck
    assert "'8080'" in healthcheck
    assert re.search(r"^STOPSIGNAL SIGTERM$", dockerfile, flags=re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["s2s-daemon"\]$', dockerfile, flags=re.MULTILINE)
    assert re.search(r'^CMD \["run"\]$', dockerfile, flags=re.MULTILINE)
    assert "S2S_CONFIG=/etc/s2s/config.yaml" in _stages()["base"]


def test_connection_urls_come_from_the_secret_and_the_example_secret_is_not_applied() -> None:
    """RABBITMQ_URL, REDIS_URL and MONGODB_URI are secretKeyRefs; secret.example.yaml is not in the kustomization."""
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in _container()["env"] if "valueFrom" in e}
    for name in ("RABBITMQ_URL", "REDIS_URL", "MONGODB_URI"):
        assert refs[name] == {"name": SECRET_NAME, "key": name}
    example = _load(BASE / "secret.example.yaml")
    assert example["metadata"]["name"] == SECRET_NAME
    assert set(example["stringData"]) == {"RABBITMQ_URL", "REDIS_URL", "MONGODB_URI"}
    assert "secret.example.yaml" not in _load(BASE / "kustomization.yaml")["resources"]


def test_compose_mongo_is_a_replica_set_the_daemon_names() -> None:
    """Compose MongoDB runs --replSet rs0, its healthcheck initiates it, and the daemon's URI names rs0."""
    services = _compose()["services"]
    command = services["mongo"]["command"]
    args = shlex.split(command) if isinstance(command, str) else command
    assert args[args.index("--replSet") + 1] == "rs0"
    assert "rs.initiate" in _healthcheck_command(services["mongo"])
    assert services["daemon"]["environment"]["MONGODB_URI"] == "mongodb://mongo:27017/?replicaSet=rs0"


def test_compose_dependencies_have_healthchecks() -> None:
    """Every service another one depends on has a healthcheck; service_healthy never waits on one without."""
    services = _compose()["services"]
    depended_on = {
        (name, dep, spec.get("condition", "service_started"))
        for name, service in services.items()
        for dep, spec in service.get("depends_on", {}).items()
    }
    assert depended_on, "the daemon must wait for its dependencies"
    for name, dep, condition in depended_on:
        assert "healthcheck" in services[dep], f"{name} depends on {dep}, which has no healthcheck"
        assert condition in {"service_healthy", "service_started"}
    daemon_deps = {dep for name, dep, cond in depended_on if name == "daemon" and cond == "service_healthy"}
    assert daemon_deps == {"rabbitmq", "redis", "mongo", "demo"}


def test_compose_daemon_reaches_the_demo_service(tmp_path: Path) -> None:
    """The compose config loads and its base_urls point at compose services; mounted files exist."""
    services = _compose()["services"]
    settings = load_settings(ROOT / "deploy" / "compose" / "config.yaml")
    for downstream in settings.downstreams.values():
        host = urlsplit(downstream.base_url).hostname
        assert host in services
        assert services[host]["build"]["target"] == "demo"  # the demo downstreams, not the production image
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), f"bind mount {source} does not exist"
    assert services["daemon"]["stop_grace_period"] == "45s"
    assert _configmap_settings(tmp_path).downstreams.keys() == settings.downstreams.keys()


def test_scrapers_and_autoscaler_name_real_ports_and_queues(tmp_path: Path) -> None:
    """ServiceMonitor and compose Prometheus scrape /metrics on 8080; KEDA watches a real command queue."""
    service_ports = {p["name"]: p["port"] for p in _load(BASE / "service.yaml")["spec"]["ports"]}
    (endpoint,) = _load(BASE / "servicemonitor.yaml")["spec"]["endpoints"]
    assert (service_ports[endpoint["port"]], endpoint["path"]) == (SIDECAR_PORT, "/metrics")
    scrape_configs = _load(ROOT / "deploy" / "compose" / "prometheus.yml")["scrape_configs"]
    (job,) = [j for j in scrape_configs if j["job_name"] == "s2s-daemon"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"daemon:{SIDECAR_PORT}"]
    settings = _configmap_settings(tmp_path)
    topology = Topology.from_settings(settings.amqp, tuple(settings.downstreams))
    (trigger,) = _load(ROOT / "deploy/k8s/keda/scaledobject.yaml")["spec"]["triggers"]
    assert trigger["metadata"]["queueName"] == topology.command_queue_name("service-a")


def test_network_policy_opens_only_the_sidecar_and_the_dependencies() -> None:
    """Ingress reaches port 8080 only; egress allows DNS, AMQP, Redis, MongoDB and HTTP(S)."""
    spec = _load(BASE / "networkpolicy.yaml")["spec"]
    assert [p["port"] for rule in spec["ingress"] for p in rule["ports"]] == [SIDECAR_PORT]
    egress = {p["port"] for rule in spec["egress"] for p in rule["ports"]}
    assert {53, 5672, 6379, 27017, 443, 80} <= egress


def _metric_names() -> set[str]:
    """Every sample name the daemon can expose: counters with _total, histograms with their series."""
    names: set[str] = set()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    for family in Metrics().registry.collect():
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
    return names


def _promql(path: str) -> list[str]:
    """The PromQL a file holds: rule expressions, unit-test input series, dashboard targets."""
    if path.endswith(".json"):
        panels = json.loads((ROOT / path).read_text(encoding="utf-8"))["panels"]
        return [t["expr"] for p in panels for t in p.get("targets", [])]
    data = _load(ROOT / path)
    if "tests" in data:
        return [s["series"] for test in data["tests"] for s in test["input_series"]]
    return [rule["expr"] for group in data["groups"] for rule in group["rules"]]


@pytest.mark.parametrize(
    "path", ["deploy/prometheus/alerts.yml", "deploy/prometheus/alerts.test.yml", "deploy/grafana/s2s-daemon.json"]
)
def test_alerts_and_dashboard_use_existing_metric_names(path: str) -> None:
    """Every s2s_ metric in the alert rules, their tests and the dashboard exists in metrics.py (or is announced)."""
    used = {name for expr in _promql(path) for name in re.findall(r"\bs2s_[a-z_]+\b", expr)}
    assert used, f"{path} uses no s2s_ metric"
    assert used <= _metric_names(), f"unknown metrics in {path}: {sorted(used - _metric_names())}"


def test_broker_refuses_what_the_daemon_could_never_take_and_compose_mounts_it() -> None:
    """The shipped rabbitmq.conf caps message size above the daemon's body limit (bodies in between are
    dead-lettered by the daemon as too-large) and compose loads it into the broker's conf.d."""
    conf = ROOT / "s2s_daemon" / "config" / "rabbitmq.conf"
    lines = [line.partition("=") for line in conf.read_text().splitlines() if line.strip() and line[0] != "#"]
    settings = {key.strip(): value.strip() for key, _, value in lines}
    max_message_size = int(settings["max_message_size"])
    assert Settings().amqp.max_body_bytes < max_message_size <= 16 * 1024 * 1024  # RabbitMQ 4.x's default
    volumes = _compose()["services"]["rabbitmq"]["volumes"]
    assert "./s2s_daemon/config/rabbitmq.conf:/etc/rabbitmq/conf.d/20-s2s.conf:ro" in volumes


def test_dashboard_latency_panels_link_to_traces() -> None:
    """The two latency panels ask for exemplars (each a traced command) and link to the traces data source chosen
    by the dashboard's `traces` variable; compose's Prometheus stores exemplars."""
    dashboard = json.loads((ROOT / "deploy/grafana/s2s-daemon.json").read_text(encoding="utf-8"))
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert (variables["traces"]["type"], variables["traces"]["query"]) == ("datasource", "tempo")
    panels = {p["title"]: p for p in dashboard["panels"]}
    for title in ("Handler latency p50 / p99", "Downstream call latency p50 / p99"):
        panel = panels[title]
        assert all(target["exemplar"] is True for target in panel["targets"])
        [link] = panel["fieldConfig"]["defaults"]["links"]
        assert link["url"].startswith("/explore?")
        assert "${traces}" in link["url"]
    prometheus = _compose()["services"]["prometheus"]["command"]
    assert "--enable-feature=exemplar-storage" in prometheus
