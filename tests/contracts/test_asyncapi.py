"""The AsyncAPI document: what it says about our exchanges, routes, headers and payloads, and that
``@asyncapi/parser`` (npm, installed by ``make asyncapi-parser``) accepts it."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from s2s_daemon.cli import main
from s2s_daemon.messaging.asyncapi import build_asyncapi
from s2s_daemon.messaging.contracts import Reply
from s2s_daemon.settings import Settings, load_settings

ROOT = Path(__file__).parents[2]
EXAMPLE = ROOT / "s2s_daemon" / "config" / "example.yaml"
VALIDATOR = Path(__file__).with_name("asyncapi_validate.cjs")


@pytest.fixture
def settings() -> Settings:
    return load_settings(EXAMPLE, amqp={"prefix": "acme"}, rabbitmq_url="amqps://user:secret@mq.example:5671/prod")


@pytest.fixture
def doc(settings: Settings) -> dict[str, Any]:
    return build_asyncapi(settings, "1.2.3")


def _resolve(doc: dict[str, Any], ref: str) -> Any:
    node: Any = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def test_commands_one_channel_per_route_on_the_commands_exchange(doc: dict[str, Any], settings: Settings) -> None:
    """Every configured route is a channel on <prefix>.commands (topic) addressed by its routing key, whose
    message carries the route's JSON Schema and the command headers; the daemon receives it and replies."""
    routes = {f"{d}.{a}": r for d, ds in settings.downstreams.items() for a, r in ds.routes.items()}
    commands = {ch["address"]: ch for ch in doc["channels"].values() if ch["title"].startswith("Commands ")}
    assert set(commands) == set(routes)
    for routing_key, channel in commands.items():
        exchange = channel["bindings"]["amqp"]["exchange"]
        assert (exchange["name"], exchange["type"], channel["bindings"]["amqp"]["is"]) == (
            "acme.commands",
            "topic",
            "routingKey",
        )
        message = _resolve(doc, channel["messages"]["command"]["$ref"])
        assert message["payload"] == routes[routing_key].json_schema
        headers = _resolve(doc, message["headers"]["$ref"])["properties"]
        assert {"idempotency-key", "x-correlation-id", "traceparent", "x-deadline"} <= set(headers)
    receive = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert len(receive) == len(routes)
    assert all(op["reply"]["channel"] == {"$ref": "#/channels/replies"} for op in receive)


def test_replies_events_and_dead_letters(doc: dict[str, Any], settings: Settings) -> None:
    """Replies carry the Reply model; events are CloudEvents on <prefix>.events per route and outcome and per
    webhook sender; dead letters are described on <prefix>.dlq with their reason headers."""
    reply = _resolve(doc, doc["channels"]["replies"]["messages"]["reply"]["$ref"])
    schema = _resolve(doc, reply["payload"]["$ref"])
    assert set(schema["required"]) == {n for n, f in Reply.model_fields.items() if f.is_required()}
    assert "ReplyError" in doc["components"]["schemas"]

    events = {ch["address"] for ch in doc["channels"].values() if ch["title"].startswith(("Events ", "Webhook "))}
    expected = {
        f"{d}.{a}.{s}" for d, ds in settings.downstreams.items() for a in ds.routes for s in ("succeeded", "failed")
    }
    expected |= {f"webhook.{service}.{{type}}" for service in settings.webhooks}
    assert events == expected
    event_channel = next(ch for ch in doc["channels"].values() if ch["address"] == "service-a.create-resource.failed")
    assert event_channel["bindings"]["amqp"]["exchange"]["name"] == "acme.events"
    event = _resolve(doc, event_channel["messages"]["event"]["$ref"])
    assert event["contentType"] == "application/cloudevents+json"
    assert doc["components"]["schemas"]["CloudEvent"]["properties"]["specversion"]["const"] == "1.0"

    dlq = doc["channels"]["deadLetters"]
    assert dlq["address"] == "acme.dlq"
    headers = _resolve(doc, _resolve(doc, dlq["messages"]["deadLetter"]["$ref"])["headers"]["$ref"])["properties"]
    assert "schema-violation" in headers["x-s2s-reason"]["enum"]


def test_server_has_no_credentials(doc: dict[str, Any]) -> None:
    """The broker URL's host, protocol and vhost are documented; its password is not."""
    assert doc["servers"]["rabbitmq"] == {
        "host": "mq.example:5671",
        "protocol": "amqps",
        "protocolVersion": "0.9.1",
        "pathname": "/prod",
        "description": doc["servers"]["rabbitmq"]["description"],
    }
    assert b"secret" not in orjson.dumps(doc)


def test_every_cluster_node_is_a_server() -> None:
    """With rabbitmq_urls, each node is a server of the document (the first keeps the name "rabbitmq")."""
    urls = [f"amqps://user:secret@mq-{i}.example:5671/prod" for i in (1, 2, 3)]
    doc = build_asyncapi(load_settings(EXAMPLE, rabbitmq_urls=urls), "1.2.3")
    assert {name: server["host"] for name, server in doc["servers"].items()} == {
        "rabbitmq": "mq-1.example:5671",
        "rabbitmq-2": "mq-2.example:5671",
        "rabbitmq-3": "mq-3.example:5671",
    }
    assert b"secret" not in orjson.dumps(doc)


def test_cli_writes_json_and_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`s2s-daemon docs asyncapi` writes the document to stdout, a JSON file or a YAML file."""
    assert main(["docs", "asyncapi", "-c", str(EXAMPLE)]) == 0
    assert orjson.loads(capsys.readouterr().out)["asyncapi"] == "3.0.0"
    assert main(["docs", "asyncapi", "-c", str(EXAMPLE), "-o", str(tmp_path / "a.yaml")]) == 0
    assert yaml.safe_load((tmp_path / "a.yaml").read_text())["channels"]["deadLetters"]["address"] == "s2s.dlq"


def _validate(path: Path) -> subprocess.CompletedProcess[str]:
    node = shutil.which("node")
    assert node, "node is needed for @asyncapi/parser"
    return subprocess.run([node, str(VALIDATOR), str(path)], capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_asyncapi_parser_accepts_the_document(tmp_path: Path, fmt: str) -> None:
    """@asyncapi/parser validates the generated document (example config) without errors or warnings."""
    out = tmp_path / f"asyncapi.{fmt}"
    assert main(["docs", "asyncapi", "-c", str(EXAMPLE), "-o", str(out)]) == 0
    result = _validate(out)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "valid AsyncAPI 3.0.0: 0 errors, 0 warnings" in result.stdout, result.stdout


def test_asyncapi_parser_rejects_a_broken_document(tmp_path: Path, doc: dict[str, Any]) -> None:
    """The validator is not vacuous: a dangling reference and a wrong binding fail it."""
    doc["operations"]["deadLetter"]["channel"] = {"$ref": "#/channels/nowhere"}
    doc["channels"]["deadLetters"]["bindings"]["amqp"]["is"] = "topic"
    out = tmp_path / "broken.json"
    out.write_bytes(orjson.dumps(doc))
    result = _validate(out)
    assert result.returncode == 1
    assert "invalid-ref" in result.stdout
