"""``GET <path>`` of each route exposed as a read: a call through the resilient client with a stale fallback.

The path's fields are the route's own path fields. A successful read is returned and stored in Redis as the
last good copy (``api.stale_cache``), keyed by routing key and field values. When the call fails (timeout,
connection error, 5xx, 429) or the breaker rejects it, the last good copy is served with ``X-Cache: stale``,
``Age`` and ``Warning: 110``; without one the answer is 503 with ``Retry-After`` (the breaker's remaining open
time when it is open). A 404 from the downstream is a 404 and forgets the copy; any other 4xx means the
sidecar built a request the downstream refused: 502.
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import quote

import orjson
from jsonschema import Draft202012Validator
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.http.correlation import correlation_of
from s2s_daemon.http.responses import ErrorBody, model_response
from s2s_daemon.messaging.contracts import ErrorKind
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.tracing import NO_TRACING, Tracing
from s2s_daemon.resilience.client import CallOutcome, DownstreamClient
from s2s_daemon.settings import RouteSettings

__all__ = ["ResourceRead", "StaleCache", "stale_copy_key"]

log = get_logger("s2s.http.read")

_DEFAULT_RETRY_AFTER_S = 5


def stale_copy_key(routing_key: str, values: list[str]) -> str:
    """``service.get-item:a%2Fb``: quoted values, so no two reads share a copy."""
    return f"{routing_key}:" + "/".join(quote(value, safe="") for value in values)


class StaleCache:
    """Last good copies: ``<prefix><key>`` = ``{"stored_at": epoch ms, "body": ...}`` with a TTL."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_seconds

    async def put(self, key: str, body: Any) -> None:
        value = orjson.dumps({"stored_at": now_ms(), "body": body})
        await self._call(self._redis.set(self._prefix + key, value, ex=self._ttl))

    async def get(self, key: str) -> tuple[Any, float] | None:
        """(body, age in seconds), or None."""
        raw = await self._call(self._redis.get(self._prefix + key))
        if raw is None:
            return None
        try:
            stored = orjson.loads(raw)
            return stored["body"], max(0.0, time.time() - stored["stored_at"] / 1000)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None

    async def forget(self, key: str) -> None:
        await self._call(self._redis.delete(self._prefix + key))

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return model_response(ErrorBody(error=error, detail=detail), status, headers)


class ResourceRead:
    """``GET <path>`` of one read route: the path's fields fill the route's path template."""

    def __init__(
        self,
        client: DownstreamClient,
        routing_key: str,
        route: RouteSettings,
        cache: StaleCache,
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self._client = client
        self._tracing = tracing
        self._routing_key = routing_key
        self._route = route
        self._validator = Draft202012Validator(route.json_schema) if route.json_schema else None
        self._cache = cache

    async def handle(self, request: Request) -> Response:
        params = {name: str(request.path_params[name]) for name in self._route.path_params}
        if self._validator is not None:
            error = next(iter(self._validator.iter_errors(params)), None)
            if error is not None:
                return _error(400, "invalid", error.message[:300])
        key = stale_copy_key(self._routing_key, list(params.values()))
        correlation = correlation_of(request)
        # tracing on: each attempt's client span replaces these trace headers with its own context
        headers = {"x-correlation-id": correlation.correlation_id, **self._tracing.forward(correlation.trace).headers()}
        outcome = await self._client.call(self._route, params, headers)
        name = self._client.name
        if outcome.ok:
            try:
                await self._cache.put(key, outcome.body)
            except DependencyUnavailable:
                log.warning("http.stale_cache_write_failed", downstream=name, exc_info=True)
            return JSONResponse(outcome.body)
        if outcome.status_code == 404:
            try:
                await self._cache.forget(key)
            except DependencyUnavailable:
                log.warning("http.stale_cache_forget_failed", downstream=name, exc_info=True)
            return _error(404, "not_found", f"{name} has no such resource")
        if outcome.error_kind in (ErrorKind.REJECTED, ErrorKind.CONFLICT):
            return _error(502, "bad_gateway", f"{name} refused the request ({outcome.status_code})")
        return await self._fallback(key, outcome)

    async def _fallback(self, key: str, outcome: CallOutcome) -> Response:
        name = self._client.name
        try:
            stale = await self._cache.get(key)
        except DependencyUnavailable:
            stale = None
        if stale is not None:
            body, age = stale
            log.info("http.served_stale", downstream=name, reason=outcome.message, age_s=round(age, 1))
            return JSONResponse(
                body,
                headers={"x-cache": "stale", "age": str(int(age)), "warning": '110 - "Response is Stale"'},
            )
        wait = outcome.redeliver_after or outcome.retry_after or _DEFAULT_RETRY_AFTER_S
        return _error(
            503, "unavailable", f"{name}: {outcome.message}"[:300], {"retry-after": str(max(1, math.ceil(wait)))}
        )
