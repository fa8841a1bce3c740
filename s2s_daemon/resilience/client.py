"""The resilient HTTP client: one per downstream.

Layer order, fixed: deadline -> bulkhead -> breaker -> retry(timeout(call)). This module owns the order;
each layer is a small object of its own (``resilience.policy`` for the retry/breaker seams).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any, Protocol
from urllib.parse import quote

import httpx
import orjson

from s2s_daemon.errors import CommandRejected, DeadLetterReason
from s2s_daemon.messaging.contracts import ErrorKind
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.settings import DownstreamSettings, RouteSettings

log = get_logger("s2s.client")

_MAX_TEXT_BODY = 65_536
RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504}) | frozenset(range(505, 600))


@dataclass(frozen=True, slots=True)
class HttpRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes | None


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status_code: int
    headers: dict[str, str]
    body: bytes


@dataclass(frozen=True, slots=True)
class CallOutcome:
    """The result of calling a downstream for one command (all attempts included)."""

    status_code: int | None
    body: Any
    error_kind: ErrorKind | None
    message: str
    attempts: int
    retryable: bool = False
    retry_after: float | None = None

    @property
    def ok(self) -> bool:
        return self.error_kind is None


class Transport(Protocol):
    """What the client needs from an HTTP library; swap httpx for another behind it."""

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse: ...

    async def aclose(self) -> None: ...


class HttpxTransport:
    def __init__(self, max_connections: int) -> None:
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,
        )

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        response = await self._client.request(
            request.method, request.url, headers=request.headers, content=request.content, timeout=timeout
        )
        return HttpResponse(response.status_code, dict(response.headers), response.content)

    async def aclose(self) -> None:
        await self._client.aclose()


def build_request(base_url: str, route: RouteSettings, body: Any, headers: dict[str, str]) -> HttpRequest:
    """Fill the path template from the body; send the body as JSON or the leftovers as a query string."""
    params = route.path_params
    if params and not isinstance(body, dict):
        raise CommandRejected(DeadLetterReason.SCHEMA_VIOLATION, f"path {route.path} needs a JSON object body")
    path = route.path
    for name in params:
        value = body.get(name)
        if value is None or isinstance(value, dict | list):
            raise CommandRejected(DeadLetterReason.SCHEMA_VIOLATION, f"path parameter {name!r} missing or not a scalar")
        path = path.replace("{" + name + "}", quote(str(value), safe=""))
    url = base_url + path
    content: bytes | None = None
    if route.sends_body:
        content = orjson.dumps(body)
        headers = {**headers, "content-type": "application/json"}
    elif isinstance(body, dict):
        query = {k: v for k, v in body.items() if k not in params and isinstance(v, str | int | float | bool)}
        if query:
            url += "?" + "&".join(f"{quote(k, safe='')}={quote(str(v), safe='')}" for k, v in query.items())
    return HttpRequest(route.method, url, headers, content)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or HTTP-date); None if absent or unparsable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def decode_body(response: HttpResponse) -> Any:
    ctype = response.headers.get("content-type", "")
    if "json" in ctype and response.body:
        try:
            return orjson.loads(response.body)
        except orjson.JSONDecodeError:
            pass
    text = response.body[:_MAX_TEXT_BODY].decode("utf-8", errors="replace")
    return text or None


def classify(response: HttpResponse, attempts: int) -> CallOutcome:
    status = response.status_code
    body = decode_body(response)
    if 200 <= status < 300:
        return CallOutcome(status, body, None, "ok", attempts)
    retry_after = parse_retry_after(response.headers.get("retry-after"))
    if status in RETRYABLE_STATUS:
        kind = ErrorKind.TIMEOUT if status in {408, 504} else ErrorKind.UNAVAILABLE
        return CallOutcome(status, body, kind, f"downstream answered {status}", attempts, True, retry_after)
    kind = ErrorKind.CONFLICT if status == 409 else ErrorKind.REJECTED
    return CallOutcome(status, body, kind, f"downstream answered {status}", attempts)


class DownstreamClient:
    """Calls one downstream. Owns its transport, bulkhead and (later) breaker and retry policy."""

    def __init__(
        self, name: str, settings: DownstreamSettings, metrics: Metrics, transport: Transport | None = None
    ) -> None:
        self.name = name
        self.settings = settings
        self._metrics = metrics
        self._transport = transport or HttpxTransport(settings.max_concurrency)
        self._bulkhead = asyncio.Semaphore(settings.max_concurrency)
        self._calls = metrics.downstream_calls
        self._latency = metrics.downstream_seconds.labels(name)

    async def aclose(self) -> None:
        await self._transport.aclose()

    async def call(
        self, route: RouteSettings, body: Any, headers: dict[str, str], deadline_ms: int | None = None
    ) -> CallOutcome:
        """deadline -> bulkhead -> timeout(call). Never raises for downstream trouble."""
        request = build_request(self.settings.base_url, route, body, headers)
        async with self._bulkhead:
            timeout = self.settings.timeout
            if deadline_ms is not None:
                left = deadline_ms / 1000 - time.time()
                if left <= 0:
                    return CallOutcome(None, None, ErrorKind.EXPIRED, "deadline passed before the call", 0)
                timeout = min(timeout, left)
            return await self._attempt(request, timeout, attempts=1)

    async def _attempt(self, request: HttpRequest, timeout: float, attempts: int) -> CallOutcome:
        started = time.perf_counter()
        try:
            response = await self._transport.send(request, timeout)
        except httpx.TimeoutException as exc:
            outcome = CallOutcome(None, None, ErrorKind.TIMEOUT, f"timed out: {type(exc).__name__}", attempts, True)
        except httpx.TransportError as exc:
            outcome = CallOutcome(
                None,
                None,
                ErrorKind.UNAVAILABLE,
                f"transport error: {type(exc).__name__}: {exc}",
                attempts,
                True,
            )
        else:
            outcome = classify(response, attempts)
        self._latency.observe(time.perf_counter() - started)
        self._calls.labels(self.name, _outcome_label(outcome)).inc()
        return outcome


def _outcome_label(outcome: CallOutcome) -> str:
    if outcome.ok:
        return "success"
    if outcome.status_code is not None:
        return f"{outcome.status_code // 100}xx"
    return outcome.error_kind.value if outcome.error_kind else "error"
