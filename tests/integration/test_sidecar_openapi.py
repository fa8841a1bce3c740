"""/openapi.json matches behaviour: schemathesis (CLI, every check) against the live sidecar, for the example config
and for a config whose downstreams have other names and paths (billing, inventory).

The daemon runs in this test's event loop with demo downstreams; schemathesis runs as a subprocess against its
port. Two expectations are tuned, both for the idempotency contract rather than to hide anything: an exposed
command may answer a schema-valid request with 409 (same key in flight) or 422 (same key, other payload), which
schemathesis' positive-data check would otherwise count as a refusal of valid data; and webhook requests go to a
configured source, so they reach the verifier instead of 404.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from s2s_daemon.app import Daemon
from s2s_daemon.http.server import SidecarServer
from s2s_daemon.local import EmbeddedMongo, ServiceState, demo_states, service_a, service_b
from s2s_daemon.settings import Settings, load_settings
from tests.conftest import drop_namespace
from tests.support import OWN_PATHS

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = """
[[operations]]
include-tag = "commands"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]

[[operations]]
include-path = "/api/webhooks/{service}"
parameters = { "path.service" = "acme" }
"""


@dataclass
class Storefront:
    """The demo services under other names and paths: billing creates invoices, inventory reads items."""

    billing: ServiceState
    inventory: ServiceState
    url_billing: str
    url_inventory: str

    def downstreams(self) -> dict[str, Any]:
        return {
            "billing": {
                "base_url": self.url_billing,
                "routes": {
                    "create-invoice": {
                        "method": "POST",
                        "path": "/v1/invoices",
                        "schema": {
                            "type": "object",
                            "required": ["name", "amount_cents"],
                            "properties": {
                                "name": {"type": "string", "minLength": 1, "maxLength": 100},
                                "amount_cents": {"type": "integer", "minimum": 0},
                            },
                            "additionalProperties": False,
                        },
                        "expose": {"path": "/v1/invoices", "summary": "Raise an invoice"},
                    },
                },
            },
            "inventory": {
                "base_url": self.url_inventory,
                "routes": {
                    "get-item": {
                        "method": "GET",
                        "path": "/v1/items/{sku}",
                        "schema": {
                            "type": "object",
                            "required": ["sku"],
                            "properties": {"sku": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,40}$"}},
                        },
                        "expose": {"path": "/v1/items/{sku}"},
                    },
                },
            },
        }


@pytest.fixture
async def storefront() -> AsyncIterator[Storefront]:
    """The demo's two services serving POST /v1/invoices and GET /v1/items/{sku}, over one store."""
    billing, inventory = demo_states()
    servers = [
        SidecarServer(service_a(billing, path="/v1/invoices"), "127.0.0.1", 0),
        SidecarServer(service_b(inventory, path="/v1/items/{sku}"), "127.0.0.1", 0),
    ]
    for server in servers:
        await server.start()
    yield Storefront(billing, inventory, f"http://127.0.0.1:{servers[0].port}", f"http://127.0.0.1:{servers[1].port}")
    for server in servers:
        await server.stop()


@pytest.fixture
async def storefront_settings(
    make_settings: Any, storefront: Storefront, run_id: str, mongo_server: EmbeddedMongo
) -> AsyncIterator[Settings]:
    """The test namespace with billing and inventory as the only downstreams; removed afterwards."""
    base = make_settings(
        api={"max_wait_seconds": 2, "stale_cache": {"key_prefix": f"{run_id}:stale:"}},
        webhooks={"acme": {"scheme": "standard-webhooks", "secrets": ["whsec_c2NoZW1hdGhlc2lzLWRlbW8="]}},
    )
    values = base.model_dump(by_alias=True, exclude={"downstreams"})
    yield load_settings(None, **values, downstreams=storefront.downstreams())
    await drop_namespace(run_id, mongo_server.uri, ("billing", "inventory"))


async def run_schemathesis(port: int, tmp_path: Path) -> None:
    """schemathesis with all checks (server errors, status codes, content types, headers, response schemas,
    positive/negative data, stateful links) against the sidecar on ``port``; fails the test on any issue."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    process = await asyncio.create_subprocess_exec(
        str(SCHEMATHESIS),
        "--config-file",
        str(config),
        "run",
        f"http://127.0.0.1:{port}/openapi.json",
        "--checks",
        "all",
        "--max-examples",
        "30",
        "--workers",
        "1",
        "--request-timeout",
        "10",
        "--generation-database",
        "none",
        "--no-color",
        cwd=tmp_path,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_TELEMETRY": "false"},
    )
    output, _ = await process.communicate()
    report = output.decode(errors="replace")
    assert process.returncode == 0, report[-10_000:]
    assert "No issues found" in report or " passed" in report


async def test_openapi_lists_every_route(sidecar_url: str) -> None:
    """Every sidecar route is in the document, as OpenAPI 3.1, with its status codes: the sidecar's own and the
    two the example config exposes."""
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        spec = (await http.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0"
    assert set(spec["paths"]) == OWN_PATHS | {"/api/service-a/resource", "/api/service-b/resource/{id}"}
    post = spec["paths"]["/api/service-a/resource"]["post"]
    assert {"200", "201", "202", "400", "409", "413", "415", "422", "503"} <= set(post["responses"])
    assert spec["components"]["schemas"]["service-a.create-resource"]["required"] == ["name"]


@pytest.mark.timeout(400)
async def test_schemathesis_finds_no_5xx_and_no_schema_violations(
    make_settings, cleanup_namespace: None, run_id: str, tmp_path: Path
) -> None:
    """schemathesis with every check passes against the sidecar serving the example config."""
    settings = make_settings(
        api={"max_wait_seconds": 2, "stale_cache": {"key_prefix": f"{run_id}:stale:"}},
        webhooks={"acme": {"scheme": "standard-webhooks", "secrets": ["whsec_c2NoZW1hdGhlc2lzLWRlbW8="]}},
    )
    async with Daemon(settings) as daemon:
        assert daemon.sidecar is not None
        await run_schemathesis(daemon.sidecar.port, tmp_path)


async def test_other_downstream_names_and_paths_get_their_api(
    storefront_settings: Settings, storefront: Storefront
) -> None:
    """With billing and inventory as downstreams, POST /v1/invoices submits billing.create-invoice and
    GET /v1/items/{sku} reads through inventory: the invoice created is read back by its id, and the document
    lists exactly those two besides the sidecar's own paths."""
    body = {"name": "acme", "amount_cents": 1200}
    async with (
        Daemon(storefront_settings) as daemon,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.sidecar.port}", timeout=20) as http,  # type: ignore[union-attr]
    ):
        spec = (await http.get("/openapi.json")).json()
        created = await http.post("/v1/invoices", json=body, headers={"Idempotency-Key": "inv-1", "Prefer": "wait=10"})
        assert created.status_code == 201, created.text
        invoice = created.json()["result"]["body"]
        read = await http.get(f"/v1/items/{invoice['id']}")
        status = await http.get(created.headers["location"])
        again = await http.post("/v1/invoices", json=body, headers={"Idempotency-Key": "inv-1"})
        invalid = await http.post("/v1/invoices", json={"name": "acme"}, headers={"Idempotency-Key": "inv-2"})
        bad_sku = await http.get("/v1/items/not_a_sku")
        seed = await http.post("/api/service-a/resource", json={"name": "x"}, headers={"Idempotency-Key": "k"})
    assert set(spec["paths"]) == OWN_PATHS | {"/v1/invoices", "/v1/items/{sku}"}
    assert spec["paths"]["/v1/invoices"]["post"]["summary"] == "Raise an invoice"
    assert created.headers["location"] == "/api/commands/inv-1?downstream=billing"
    assert (read.status_code, read.json()) == (200, invoice)
    assert (status.json()["downstream"], status.json()["status"]) == ("billing", "succeeded")
    assert (again.status_code, again.json()["result"]) == (201, created.json()["result"])
    assert (invalid.status_code, invalid.json()["error"]) == (422, "invalid")
    assert (bad_sku.status_code, bad_sku.json()["error"]) == (400, "invalid")
    assert seed.status_code == 404
    assert storefront.billing.calls_by_key["inv-1"] == 1
    assert storefront.inventory.calls == 1


@pytest.mark.timeout(400)
async def test_schemathesis_passes_with_other_downstream_names_and_paths(
    storefront_settings: Settings, tmp_path: Path
) -> None:
    """schemathesis with every check passes against a sidecar whose downstreams are billing and inventory."""
    async with Daemon(storefront_settings) as daemon:
        assert daemon.sidecar is not None
        await run_schemathesis(daemon.sidecar.port, tmp_path)
