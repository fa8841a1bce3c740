"""JSON Schemas for the operators' custom resources, from their published CustomResourceDefinitions.

kubernetes-validate bundles only the built-in kinds. For ``RabbitmqCluster``, ``RedisReplication``,
``RedisSentinel`` and ``MongoDBCommunity`` the vendored schemas under ``deploy/schemas/`` are made from the
operators' own CRD YAML (the ``openAPIV3Schema`` of the served version) and checked with check-jsonschema.

Strict, as kubeconform's ``openapi2jsonschema`` makes them: an object that lists its properties and does not
say ``x-kubernetes-preserve-unknown-fields`` refuses other keys (the API server would silently prune them, so
a typo would be lost without a word); descriptions are dropped (size). ``apiVersion``, ``kind`` and
``metadata.name`` are required as the API server requires them.

Regenerate (after retrieving the CRD files named in deploy/schemas/SOURCES.md):
``python -m tests.deploy.crd_schemas CRD.yaml... --out deploy/schemas``
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

__all__ = ["schema_file_name", "schemas_from_crd"]


def _strict(node: Any) -> Any:
    if isinstance(node, list):
        return [_strict(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {k: _strict(v) for k, v in node.items() if k != "description"}
    if (
        out.get("type") == "object"
        and "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def schemas_from_crd(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{file name: JSON Schema} for every served version of one CRD."""
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"]
    out = {}
    for version in spec["versions"]:
        if not version.get("served", True):
            continue
        schema = _strict(version["schema"]["openAPIV3Schema"])
        properties = schema.setdefault("properties", {})
        properties["apiVersion"] = {"const": f"{group}/{version['name']}"}
        properties["kind"] = {"const": kind}
        properties["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string", "minLength": 1}},
        }
        schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema["title"] = f"{kind} {group}/{version['name']}"
        out[schema_file_name(group, kind, version["name"])] = schema
    return out


def schema_file_name(group: str, kind: str, version: str) -> str:
    return f"{kind.lower()}-{group.split('.')[0]}-{version}.json"


def main() -> None:  # pragma: no cover - run by hand when an operator version changes
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crds", nargs="+", type=Path)
    parser.add_argument("--out", type=Path, default=Path("deploy/schemas"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.crds:
        for name, schema in schemas_from_crd(yaml.safe_load(path.read_text(encoding="utf-8"))).items():
            (args.out / name).write_text(json.dumps(schema, sort_keys=True, separators=(",", ":")) + "\n")
            print(f"{path} -> {args.out / name}")


if __name__ == "__main__":  # pragma: no cover
    main()
