"""deploy/k8s/clusters: the operators' custom resources and the daemon's settings that point at them agree.

Schema validity (strict, against the operators' own CRD schemas in deploy/schemas) is also checked by
`make lint-deploy`; these tests pin the wiring a schema cannot see: names the operators derive, replica counts,
and that the patched environment is one the daemon accepts.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from jsonschema import Draft7Validator

from s2s_daemon.settings import load_settings
from tests.deploy.crd_schemas import schema_file_name, schemas_from_crd

ROOT = Path(__file__).parents[2]
CLUSTERS = ROOT / "deploy" / "k8s" / "clusters"
SCHEMAS = ROOT / "deploy" / "schemas"
BASE_DEPLOYMENT = ROOT / "deploy" / "k8s" / "base" / "deployment.yaml"
CUSTOM_RESOURCES = ("rabbitmqcluster.yaml", "redis-replication.yaml", "redis-sentinel.yaml", "mongodbcommunity.yaml")


def _load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((CLUSTERS / name).read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def _validator(resource: dict[str, Any]) -> Draft7Validator:
    group, _, version = resource["apiVersion"].rpartition("/")
    schema = json.loads((SCHEMAS / schema_file_name(group, resource["kind"], version)).read_text(encoding="utf-8"))
    return Draft7Validator(schema)


@pytest.mark.parametrize("name", CUSTOM_RESOURCES)
def test_custom_resource_matches_its_operators_schema(name: str) -> None:
    """Each custom resource validates against the schema made from its operator's CRD."""
    resource = _load(name)
    errors = [e.message for e in _validator(resource).iter_errors(resource)]
    assert errors == []


@pytest.mark.parametrize("name", CUSTOM_RESOURCES)
def test_a_misspelt_field_is_refused(name: str) -> None:
    """The vendored schemas are strict: a field the operator does not know fails (the API server would drop it)."""
    resource = copy.deepcopy(_load(name))
    resource["spec"]["replicaz"] = 3
    assert any("replicaz" in e.message for e in _validator(resource).iter_errors(resource))


def test_schemas_are_made_strict_from_a_crd() -> None:
    """The converter keeps the served version's schema, pins apiVersion/kind and closes objects with properties."""
    crd = {
        "spec": {
            "group": "example.com",
            "names": {"kind": "Thing"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "description": "dropped",
                            "properties": {
                                "spec": {"type": "object", "properties": {"size": {"type": "integer"}}},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                },
                {"name": "v0", "served": False, "schema": {"openAPIV3Schema": {"type": "object"}}},
            ],
        }
    }
    (name, schema), *rest = schemas_from_crd(crd).items()
    assert rest == []
    assert name == "thing-example-v1.json"
    assert "description" not in schema
    assert schema["properties"]["spec"]["additionalProperties"] is False
    assert "additionalProperties" not in schema["properties"]["status"]
    good = {"apiVersion": "example.com/v1", "kind": "Thing", "metadata": {"name": "t"}, "spec": {"size": 1}}
    assert list(Draft7Validator(schema).iter_errors(good)) == []
    assert list(Draft7Validator(schema).iter_errors({**good, "apiVersion": "example.com/v2"}))


def test_three_of_each() -> None:
    """Three RabbitMQ nodes, Redis with a primary, replicas and three sentinels, a 3-member replica set."""
    assert _load("rabbitmqcluster.yaml")["spec"]["replicas"] == 3
    assert _load("redis-replication.yaml")["spec"]["clusterSize"] >= 2
    assert _load("redis-sentinel.yaml")["spec"]["clusterSize"] == 3
    mongo = _load("mongodbcommunity.yaml")["spec"]
    assert (mongo["members"], mongo["type"]) == (3, "ReplicaSet")


def _patched_env() -> list[dict[str, Any]]:
    """The base Deployment's env with daemon-env.yaml merged in by name, as `kubectl kustomize` renders it: the
    patch's entries first, in its order (so $(VAR) references see their variables), then the base's others."""
    (base,) = yaml.safe_load(BASE_DEPLOYMENT.read_text(encoding="utf-8"))["spec"]["template"]["spec"]["containers"]
    (patch,) = _load("daemon-env.yaml")["spec"]["template"]["spec"]["containers"]
    original = {e["name"]: e for e in base["env"]}
    env: dict[str, dict[str, Any]] = {}
    for entry in patch["env"]:
        if entry.get("$patch") == "delete":
            original.pop(entry["name"])
            continue
        merged = {**original.pop(entry["name"], {}), **entry}
        env[entry["name"]] = {k: v for k, v in merged.items() if v is not None}
    return [*env.values(), *original.values()]


def _resolve(env: list[dict[str, Any]], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """Values as the kubelet makes them: secretKeyRefs looked up, $(VAR) of variables defined earlier expanded."""
    out: dict[str, str] = {}
    for entry in env:
        if "valueFrom" in entry:
            ref = entry["valueFrom"]["secretKeyRef"]
            out[entry["name"]] = secrets[(ref["name"], ref["key"])]
        else:
            out[entry["name"]] = re.sub(r"\$\((\w+)\)", lambda m: out.get(m[1], m[0]), entry["value"])
    return out


def test_daemon_environment_points_at_the_operators_clusters(monkeypatch: pytest.MonkeyPatch) -> None:
    """The patched environment loads, and names what the operators create: every RabbitMQ pod, the sentinel
    Service and primary name, the replica set's connection-string Secret."""
    rabbit = _load("rabbitmqcluster.yaml")["metadata"]["name"]
    sentinel = _load("redis-sentinel.yaml")
    replication = _load("redis-replication.yaml")
    mongo = _load("mongodbcommunity.yaml")
    (user,) = mongo["spec"]["users"]
    mongo_secret = f"{mongo['metadata']['name']}-{user['db']}-{user['name']}"  # the operator's naming
    redis_secret = replication["spec"]["kubernetesConfig"]["redisSecret"]
    secrets = {
        (f"{rabbit}-default-user", "username"): "default_user_abc",
        (f"{rabbit}-default-user", "password"): "Zm9vYmFy123",
        (redis_secret["name"], redis_secret["key"]): "redis-secret-pw",
        (mongo_secret, "connectionString.standard"): "mongodb://s2s:pw@m-0.svc:27017,m-1.svc:27017/s2s?replicaSet=s2s",
    }
    env = _resolve(_patched_env(), secrets)
    assert "RABBITMQ_URL" not in env
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("S2S_CONFIG")
    settings = load_settings()
    assert settings.rabbitmq_nodes == tuple(
        f"amqp://default_user_abc:Zm9vYmFy123@{rabbit}-server-{i}.{rabbit}-nodes:5672/%2F" for i in range(3)
    )
    assert settings.redis_sentinel is not None
    assert settings.redis_sentinel.addresses == (f"{sentinel['metadata']['name']}-sentinel:26379",)
    assert settings.redis_sentinel.primary_name == sentinel["spec"]["redisSentinelConfig"]["masterGroupName"]
    assert sentinel["spec"]["redisSentinelConfig"]["redisReplicationName"] == replication["metadata"]["name"]
    assert settings.redis_url.get_secret_value() == "redis://:redis-secret-pw@s2s-redis:6379/0"
    assert settings.mongodb_uri is not None
    assert "replicaSet=" in settings.mongodb_uri.get_secret_value()


def test_network_policy_lets_the_daemon_reach_the_sentinels() -> None:
    """The patch adds the sentinel port to the base egress rule that holds the Redis port."""
    policy = yaml.safe_load((ROOT / "deploy" / "k8s" / "base" / "networkpolicy.yaml").read_text(encoding="utf-8"))
    (op,) = yaml.safe_load((CLUSTERS / "networkpolicy-sentinel.yaml").read_text(encoding="utf-8"))
    index = int(op["path"].split("/")[3])
    assert 6379 in [p["port"] for p in policy["spec"]["egress"][index]["ports"]]
    assert op["value"]["port"] == 26379
