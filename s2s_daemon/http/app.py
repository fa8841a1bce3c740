"""The sidecar's ASGI app: health, probes, metrics, OpenAPI, the command and read API, webhooks, status page,
operator console.

The command and read API is what the configuration exposes (``expose:`` of a route); the sidecar's own paths
are ``settings.SIDECAR_PATHS``, which no exposure may overlap.

Everything it needs comes in one ``SidecarContext`` built by the composition root. The app owns one resource
of its own, the AMQP gateway (command publishes and their replies), started and stopped by its lifespan.
Every response, errors included, is JSON (or health+json, text, HTML where documented) and carries
``X-Correlation-ID``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from s2s_daemon.delivery import DeliveryLog, EndpointStates
from s2s_daemon.http.admin import AdminToken, BreakerAdmin
from s2s_daemon.http.command_api import CommandStatus, CommandSubmission
from s2s_daemon.http.console import Console
from s2s_daemon.http.correlation import CorrelationMiddleware
from s2s_daemon.http.deliveries import DeliveryLogApi
from s2s_daemon.http.exposures import declared_exposures
from s2s_daemon.http.health import HealthCheck, run_checks
from s2s_daemon.http.openapi import build_openapi
from s2s_daemon.http.read_through import ResourceRead, StaleCache
from s2s_daemon.http.status import StatusBoard
from s2s_daemon.http.webhook_intake import WebhookIntake
from s2s_daemon.idempotency.submissions import SubmissionLedger
from s2s_daemon.messaging.gateway import CommandGateway
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.observability.history import MetricsHistory
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, Tracing
from s2s_daemon.outbox.writer import OutboxWriter
from s2s_daemon.resilience.client import DownstreamClient
from s2s_daemon.settings import Settings

__all__ = ["HEALTH_JSON", "SidecarContext", "create_app"]

HEALTH_JSON = "application/health+json"
_ERROR_NAMES = {404: "not_found", 405: "method_not_allowed"}


@dataclass
class SidecarContext:
    """What the sidecar reads from the daemon; built in the composition root."""

    service_id: str
    version: str
    settings: Settings
    checks: list[HealthCheck]  # every dependency and breaker check; add more here
    render_metrics: Callable[[str | None], tuple[bytes, str]]  # Accept header -> body, content type
    is_draining: Callable[[], bool]
    heartbeat: Callable[[], float]  # monotonic time of the last event-loop heartbeat
    metrics: Metrics
    topology: Topology
    redis: Redis
    outbox: OutboxWriter
    outbox_counts: Callable[[], Awaitable[dict[str, int]]]  # documents by status: pending, publishing, dead
    clients: Mapping[str, DownstreamClient]
    gateway: CommandGateway
    liveness_max_lag_s: float = 10.0
    tracing: Tracing = NO_TRACING
    # webhook subscriptions: the delivery log, the endpoints' states and resilient clients (by subscription)
    delivery_log: DeliveryLog | None = None
    endpoint_states: EndpointStates | None = None
    endpoint_clients: Mapping[str, DownstreamClient] = field(default_factory=dict)


class _HealthJSON(JSONResponse):
    media_type = HEALTH_JSON


async def _http_error(_: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return JSONResponse(
        {"error": _ERROR_NAMES.get(exc.status_code, "http_error"), "detail": exc.detail},
        status_code=exc.status_code,
        headers=exc.headers,
    )


def _exposure_routes(ctx: SidecarContext, ledger: SubmissionLedger) -> list[BaseRoute]:
    """``POST <path>`` per route exposed as a command, ``GET <path>`` per route exposed as a read."""
    s = ctx.settings
    cache = StaleCache(ctx.redis, s.api.stale_cache.key_prefix, s.api.stale_cache.ttl_seconds)
    routes: list[BaseRoute] = []
    for exposure in declared_exposures(s):
        if exposure.kind == "read":
            reader = ResourceRead(
                ctx.clients[exposure.downstream], exposure.routing_key, exposure.route, cache, ctx.tracing
            )
            routes.append(Route(exposure.path, reader.handle, methods=["GET"]))
            continue
        submission = CommandSubmission(
            exposure.downstream,
            exposure.action,
            exposure.route,
            gateway=ctx.gateway,
            ledger=ledger,
            outbox=ctx.outbox,
            require_key=s.amqp.require_idempotency_key,
            # The consumer dead-letters what is larger than its own limit: never accept what it would refuse.
            max_body_bytes=min(s.api.max_body_bytes, s.amqp.max_body_bytes),
            max_wait_seconds=s.api.max_wait_seconds,
        )
        routes.append(Route(exposure.path, submission.handle, methods=["POST"]))
    return routes


def create_app(ctx: SidecarContext) -> ASGIApp:
    s = ctx.settings
    ledger = SubmissionLedger(
        ctx.redis,
        s.idempotency.key_prefix,
        lease_ms=int(s.idempotency.lease_seconds * 1000),
        ttl_ms=s.idempotency.done_ttl_seconds * 1000,
    )
    breakers = {name: client.breaker for name, client in ctx.clients.items()}
    # webhook endpoints are rows of the status page too, named as their clients are (subscriptions.<name>)
    queues = {name: ctx.topology.command_queue_name(name) for name in s.downstreams}
    for name, client in ctx.endpoint_clients.items():
        queues[client.name] = ctx.topology.subscription_queue_name(name)
    board = StatusBoard(
        service_id=ctx.service_id,
        breakers={**breakers, **{c.name: c.breaker for c in ctx.endpoint_clients.values()}},
        queues=queues,
        dlq=ctx.topology.dlq_name,
        metrics=ctx.metrics,
        queue_depth=ctx.gateway.queue_depth,
        outbox_counts=ctx.outbox_counts,
        window_seconds=s.api.status_window_seconds,
    )
    history = MetricsHistory(
        metrics=ctx.metrics,
        queues=queues,
        dlq=ctx.topology.dlq_name,
        queue_depth=ctx.gateway.queue_depth,
        outbox_counts=ctx.outbox_counts,
        interval=s.api.console_sample_seconds,
        retention=s.api.console_history_seconds,
    )
    token = s.admin.token.get_secret_value() if s.admin.token is not None else None
    console = Console(s, history, AdminToken(token), ctx.outbox, list(s.downstreams))
    openapi = build_openapi(s, ctx.version)

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

    async def metrics(request: Request) -> Response:
        body, content_type = ctx.render_metrics(request.headers.get("accept"))  # OpenMetrics carries exemplars
        return Response(body, headers={"content-type": content_type})

    async def openapi_json(_: Request) -> Response:
        return JSONResponse(openapi)

    webhooks = Route(
        "/api/webhooks/{service}",
        WebhookIntake(s.webhooks, ctx.outbox, ctx.metrics, s.service_name, ctx.tracing),
        methods=["POST"],
    )
    routes: list[BaseRoute] = [
        webhooks,
        Route("/health", health, methods=["GET"]),
        Route("/livez", livez, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        Route("/status", board.page, methods=["GET"]),
        Route("/api/status", board.api, methods=["GET"]),
        Route(
            "/api/commands/{command_id:path}",  # ids may contain "/"
            CommandStatus(ctx.outbox, ledger, frozenset(s.downstreams)).handle,
            methods=["GET"],
        ),
    ]
    if ctx.delivery_log is not None and ctx.endpoint_states is not None:
        deliveries = DeliveryLogApi(ctx.delivery_log, ctx.endpoint_states, s.subscriptions, ctx.topology)
        routes.append(Route("/api/deliveries/{event_id:path}", deliveries.deliveries, methods=["GET"]))
        routes.append(Route("/api/subscriptions", deliveries.subscriptions, methods=["GET"]))
    routes.extend(console.routes())
    routes.extend(_exposure_routes(ctx, ledger))
    if s.admin.token is not None:
        admin = BreakerAdmin(s.admin.token.get_secret_value(), breakers)
        routes.append(Route("/admin/breakers/{downstream}/open", admin.open, methods=["POST"]))
        routes.append(Route("/admin/breakers/{downstream}/close", admin.close, methods=["POST"]))

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await ctx.gateway.start()
        try:
            await console.start()
            yield
        finally:
            await console.stop()
            await ctx.gateway.stop()

    handlers: dict[Any, Any] = {HTTPException: _http_error}
    starlette = Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)
    return CorrelationMiddleware(_RouteFirst(webhooks, starlette), ctx.tracing)


class _RouteFirst:
    """One route served ahead of the Starlette app: a request it fully matches (path and method, by the route's
    own ``matches``) goes straight to its endpoint, with the scope Starlette's router would give it; anything
    else, a wrong method included (405), goes to the app. For the webhook intake, the busiest path: Starlette's
    error and exception middlewares and its router loop were ~5% of the daemon's CPU per delivery. The endpoint
    answers a failure itself as ServerErrorMiddleware would (``WebhookIntake``)."""

    def __init__(self, route: Route, app: ASGIApp) -> None:
        self._route = route
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            match, child_scope = self._route.matches(scope)
            if match is Match.FULL:
                scope["route"] = self._route
                scope.update(child_scope)
                await self._route.handle(scope, receive, send)
                return
        await self._app(scope, receive, send)
