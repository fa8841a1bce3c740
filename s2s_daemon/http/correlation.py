"""Correlation for every sidecar request: a pure ASGI middleware.

The correlation id is ``X-Correlation-ID``, else ``X-Request-ID``, else the trace id of a valid
``traceparent``, else a new one. It is bound to structlog's context for the request (every log line of the
request carries it), stored on the request for the handlers (which carry it into AMQP properties and
headers), and returned in ``X-Correlation-ID`` on every response, errors included. The trace context
(``traceparent`` and its ``tracestate``) is the caller's when its ``traceparent`` is valid, else a new trace.

With tracing on, each request but the polled ones (health, probes, metrics, status) is a server span continuing
the caller's ``traceparent``, named ``<method> <route template>``, with the HTTP semantic-convention attributes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog
from starlette.datastructures import Headers, MutableHeaders
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from s2s_daemon.observability.correlation import (
    H_TRACEPARENT,
    H_TRACESTATE,
    TraceContext,
    clean_id,
    new_correlation_id,
)
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.tracing import NO_TRACING, Span, SpanKind, Tracing

__all__ = ["CorrelationMiddleware", "RequestCorrelation", "correlation_of", "scope_correlation"]

log = get_logger("s2s.http")

_STATE_KEY = "s2s_correlation"
# Polled or scraped often: their access lines go to DEBUG.
_QUIET_PATHS = frozenset({"/health", "/livez", "/readyz", "/metrics", "/api/status", "/status", "/openapi.json"})


@dataclass(frozen=True, slots=True)
class RequestCorrelation:
    correlation_id: str
    trace: TraceContext  # the caller's trace context, or a new trace when it sent none (or an invalid one)

    @classmethod
    def from_headers(cls, headers: Headers) -> RequestCorrelation:
        trace = _request_trace(headers)
        correlation_id = (
            clean_id(headers.get("x-correlation-id"))
            or clean_id(headers.get("x-request-id"))
            or (trace.trace_id if trace else None)
            or new_correlation_id()
        )
        return cls(correlation_id, trace or TraceContext.new())


def _request_trace(headers: Headers) -> TraceContext | None:
    """The caller's trace context. Two ``traceparent`` headers make it invalid; several ``tracestate`` headers
    are one list, joined with commas (RFC 9110 field lines)."""
    traceparents = headers.getlist(H_TRACEPARENT)
    if len(traceparents) != 1:
        return None
    tracestates = headers.getlist(H_TRACESTATE)
    return TraceContext.parse(traceparents[0], ",".join(tracestates) if tracestates else None)


def correlation_of(request: Request) -> RequestCorrelation:
    """The correlation the middleware stored for this request (a fresh one outside the middleware)."""
    return scope_correlation(request.scope)


def scope_correlation(scope: Scope) -> RequestCorrelation:
    """``correlation_of`` for a plain ASGI endpoint, from the request's scope."""
    found = scope.get("state", {}).get(_STATE_KEY)
    return found if isinstance(found, RequestCorrelation) else RequestCorrelation.from_headers(Headers(scope=scope))


class CorrelationMiddleware:
    def __init__(self, app: ASGIApp, tracing: Tracing = NO_TRACING) -> None:
        self.app = app
        self._tracing = tracing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        correlation = RequestCorrelation.from_headers(headers)
        scope.setdefault("state", {})[_STATE_KEY] = correlation
        status = 500
        started = time.perf_counter()
        path = scope.get("path", "")
        quiet = path in _QUIET_PATHS

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                MutableHeaders(scope=message)["x-correlation-id"] = correlation.correlation_id
            await send(message)

        # bind and reset by token: structlog's bound_contextvars() also snapshots the whole context first
        tokens = structlog.contextvars.bind_contextvars(
            correlation_id=correlation.correlation_id, traceparent=correlation.trace.header
        )
        try:
            if quiet or not self._tracing.enabled:
                await self.app(scope, receive, send_with_id)
            else:
                await self._traced(scope, receive, send_with_id, headers, lambda: status)
        finally:
            emit = log.debug if quiet else log.info
            emit(
                "http.request",
                method=scope.get("method"),
                path=path,
                status=status,
                ms=round((time.perf_counter() - started) * 1000, 2),
            )
            structlog.contextvars.reset_contextvars(**tokens)

    async def _traced(
        self, scope: Scope, receive: Receive, send: Send, headers: Headers, status: Callable[[], int]
    ) -> None:
        """The request as a server span: its parent is the caller's valid ``traceparent``, if any."""
        method = str(scope.get("method", "GET"))
        client, server = scope.get("client"), scope.get("server")
        with self._tracing.span(
            method,
            SpanKind.SERVER,
            {
                "http.request.method": method,
                "url.path": scope.get("path", ""),
                "url.query": scope.get("query_string", b"").decode("latin-1") or None,
                "url.scheme": scope.get("scheme", "http"),
                "network.protocol.version": scope.get("http_version"),
                "server.address": server[0] if server else None,
                "server.port": server[1] if server else None,
                "client.address": client[0] if client else None,
                "user_agent.original": headers.get("user-agent"),
            },
            parent=_request_trace(headers),
            root=True,
        ) as span:
            try:
                await self.app(scope, receive, send)
            finally:
                _finish(span, scope, method, status())


def _finish(span: Span, scope: Scope, method: str, status: int) -> None:
    route = getattr(scope.get("route"), "path", None)
    if route is not None:
        span.rename(f"{method} {route}")
        span.set("http.route", route)
    span.set("http.response.status_code", status)
    if status >= 500:
        span.error(str(status))
