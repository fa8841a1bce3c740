"""The sidecar's ASGI app: health, probes, metrics and the read side of the command API."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from s2s_daemon.http.health import HealthCheck, run_checks

HEALTH_JSON = "application/health+json"


@dataclass
class SidecarContext:
    """What the sidecar reads from the daemon; built in the composition root."""

    service_id: str
    version: str
    checks: list[HealthCheck]
    render_metrics: Callable[[], bytes]
    is_draining: Callable[[], bool]
    find_command: Callable[[str], Awaitable[dict[str, Any] | None]]
    heartbeat: Callable[[], float]  # monotonic time of the last event-loop heartbeat
    liveness_max_lag_s: float = 10.0


class _HealthJSON(JSONResponse):
    media_type = HEALTH_JSON


def create_app(ctx: SidecarContext) -> Starlette:
    async def health(_: Request) -> Response:
        report = await run_checks(ctx.checks)
        body = report.body(ctx.service_id, ctx.version)
        if ctx.is_draining():
            body["status"] = "fail"
            body["output"] = "draining: shutting down"
        return _HealthJSON(body, status_code=503 if body["status"] == "fail" else 200)

    async def livez(_: Request) -> Response:
        lag = time.monotonic() - ctx.heartbeat()
        ok = lag <= ctx.liveness_max_lag_s
        return _HealthJSON(
            {"status": "pass" if ok else "fail", "output": None if ok else f"event loop stalled {lag:.1f}s"},
            status_code=200 if ok else 503,
        )

    async def readyz(_: Request) -> Response:
        if ctx.is_draining():
            return _HealthJSON({"status": "fail", "output": "draining"}, status_code=503)
        report = await run_checks(ctx.checks, readiness_only=True)
        return _HealthJSON(
            report.body(ctx.service_id, ctx.version), status_code=503 if report.status == "fail" else 200
        )

    async def metrics(_: Request) -> Response:
        return Response(ctx.render_metrics(), media_type=CONTENT_TYPE_LATEST)

    async def command_status(request: Request) -> Response:
        command_id = request.path_params["command_id"]
        downstream = request.query_params.get("downstream", "service-a")
        doc = await ctx.find_command(f"cmd:{downstream}:{command_id}")
        if doc is None:
            return JSONResponse({"error": "unknown command id", "command_id": command_id}, status_code=404)
        return JSONResponse(
            {
                "command_id": command_id,
                "downstream": downstream,
                "outbox_status": doc.get("status"),
                "reply": doc.get("reply"),
                "created_at": doc.get("created_at"),
                "sent_at": doc.get("sent_at"),
            }
        )

    return Starlette(
        routes=[
            Route("/health", health, methods=["GET"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            Route("/api/commands/{command_id}", command_status, methods=["GET"]),
        ]
    )
