"""``GET /api/service-b/resource/{id}``: a read through the resilient client with a stale fallback.

A successful read is returned and stored in Redis as the last good copy (``api.stale_cache``). When the
call fails (timeout, connection error, 5xx, 429) or the breaker rejects it, the last good copy is served
with ``X-Cache: stale``, ``Age`` and ``Warning: 110``; without one the answer is 503 with ``Retry-After``
(the breaker's remaining open time when it is open). A 404 from the downstream is a 404 and forgets the
copy; any other 4xx means the sidecar built a request the downstream refused: 502.
"""

from __future__ import annotations

import math
import time
from typing import Any

import orjson
from jsonschema import Draft202012Validator
from redis.asyncio import Redis
from redis.exceptions import RedisError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from s2s_daemon.clock import now_ms
from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.http.correlation import correlation_of
from s2s_daemon.messaging.contracts import ErrorKind
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.resilience.client import CallOutcome, DownstreamClient
from s2s_daemon.settings import RouteSettings

__all__ = ["ResourceRead", "StaleCache"]

log = get_logger("s2s.http.read")

_DEFAULT_RETRY_AFTER_S = 5


class StaleCache:
    """Last good copies: ``<prefix><downstream>:<id>`` = ``{"stored_at": epoch ms, "body": ...}`` with a TTL."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._ttl = ttl_seconds

    def redis_key(self, downstream: str, resource_id: str) -> str:
        return f"{self._prefix}{downstream}:{resource_id}"

    async def put(self, downstream: str, resource_id: str, body: Any) -> None:
        value = orjson.dumps({"stored_at": now_ms(), "body": body})
        await self._call(self._redis.set(self.redis_key(downstream, resource_id), value, ex=self._ttl))

    async def get(self, downstream: str, resource_id: str) -> tuple[Any, float] | None:
        """(body, age in seconds), or None."""
        raw = await self._call(self._redis.get(self.redis_key(downstream, resource_id)))
        if raw is None:
            return None
        try:
            stored = orjson.loads(raw)
            return stored["body"], max(0.0, time.time() - stored["stored_at"] / 1000)
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return None

    async def forget(self, downstream: str, resource_id: str) -> None:
        await self._call(self._redis.delete(self.redis_key(downstream, resource_id)))

    @staticmethod
    async def _call(awaitable: Any) -> Any:
        try:
            return await awaitable
        except (RedisError, OSError) as exc:
            raise DependencyUnavailable("redis", f"{type(exc).__name__}: {exc}") from exc


class ResourceRead:
    """Reads ``{id}`` through one downstream route whose path has one parameter."""

    def __init__(self, client: DownstreamClient, route: RouteSettings, cache: StaleCache) -> None:
        if len(route.path_params) != 1:
            raise ValueError(f"route {route.path} must have exactly one path parameter")
        self._client = client
        self._route = route
        self._param = route.path_params[0]
        self._validator = Draft202012Validator(route.json_schema) if route.json_schema else None
        self._cache = cache

    async def handle(self, request: Request) -> Response:
        resource_id = request.path_params["resource_id"]
        params = {self._param: resource_id}
        if self._validator is not None:
            error = next(iter(self._validator.iter_errors(params)), None)
            if error is not None:
                return JSONResponse({"error": "invalid", "detail": error.message[:300]}, status_code=400)
        correlation = correlation_of(request)
        headers = {"x-correlation-id": correlation.correlation_id, "traceparent": correlation.trace.child().header}
        outcome = await self._client.call(self._route, params, headers)
        name = self._client.name
        if outcome.ok:
            try:
                await self._cache.put(name, resource_id, outcome.body)
            except DependencyUnavailable:
                log.warning("http.stale_cache_write_failed", downstream=name, exc_info=True)
            return JSONResponse(outcome.body)
        if outcome.status_code == 404:
            try:
                await self._cache.forget(name, resource_id)
            except DependencyUnavailable:
                log.warning("http.stale_cache_forget_failed", downstream=name, exc_info=True)
            return JSONResponse({"error": "not_found", "detail": f"{name} has no such resource"}, status_code=404)
        if outcome.error_kind in (ErrorKind.REJECTED, ErrorKind.CONFLICT):
            return JSONResponse(
                {"error": "bad_gateway", "detail": f"{name} refused the request ({outcome.status_code})"},
                status_code=502,
            )
        return await self._fallback(resource_id, outcome)

    async def _fallback(self, resource_id: str, outcome: CallOutcome) -> Response:
        name = self._client.name
        try:
            stale = await self._cache.get(name, resource_id)
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
        return JSONResponse(
            {"error": "unavailable", "detail": f"{name}: {outcome.message}"[:300]},
            status_code=503,
            headers={"retry-after": str(max(1, math.ceil(wait)))},
        )
