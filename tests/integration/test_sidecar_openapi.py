"""/openapi.json matches behaviour: schemathesis (CLI, every check) against the live sidecar.

The daemon runs in this test's event loop with the demo downstreams; schemathesis runs as a subprocess
against its port. Two expectations are tuned, both for the idempotency contract rather than to hide
anything: POST /api/service-a/resource may answer a schema-valid request with 409 (same key in flight) or
422 (same key, other payload), which schemathesis' positive-data check would otherwise count as a refusal of
valid data; and webhook requests go to a configured source, so they reach the verifier instead of 404.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from s2s_daemon.app import Daemon

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
CONFIG = """
[[operations]]
include-path = "/api/service-a/resource"
checks.positive_data_acceptance.expected-statuses = ["2xx", "404", "409", "422"]

[[operations]]
include-path = "/api/webhooks/{service}"
parameters = { "path.service" = "acme" }
"""


async def test_openapi_lists_every_route(sidecar_url: str) -> None:
    """Every sidecar route is in the document, as OpenAPI 3.1, with its status codes."""
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        spec = (await http.get("/openapi.json")).json()
    assert spec["openapi"] == "3.1.0"
    assert set(spec["paths"]) == {
        "/health",
        "/livez",
        "/readyz",
        "/metrics",
        "/openapi.json",
        "/status",
        "/api/status",
        "/api/commands/{command_id}",
        "/api/service-a/resource",
        "/api/service-b/resource/{resource_id}",
        "/api/webhooks/{service}",
    }
    post = spec["paths"]["/api/service-a/resource"]["post"]
    assert {"200", "201", "202", "400", "409", "413", "415", "422", "503"} <= set(post["responses"])
    assert spec["components"]["schemas"]["CommandBody"]["required"] == ["name"]


@pytest.mark.timeout(400)
async def test_schemathesis_finds_no_5xx_and_no_schema_violations(
    make_settings, cleanup_namespace: None, run_id: str, tmp_path: Path
) -> None:
    """schemathesis with all checks (server errors, status codes, content types, headers, response schemas,
    positive/negative data, stateful links) passes against the live sidecar."""
    settings = make_settings(
        api={"max_wait_seconds": 2, "stale_cache": {"key_prefix": f"{run_id}:stale:"}},
        webhooks={"acme": {"scheme": "standard-webhooks", "secrets": ["whsec_c2NoZW1hdGhlc2lzLWRlbW8="]}},
    )
    config = tmp_path / "schemathesis.toml"
    config.write_text(CONFIG)
    async with Daemon(settings) as daemon:
        assert daemon.sidecar is not None
        process = await asyncio.create_subprocess_exec(
            str(SCHEMATHESIS),
            "--config-file",
            str(config),
            "run",
            f"http://127.0.0.1:{daemon.sidecar.port}/openapi.json",
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
