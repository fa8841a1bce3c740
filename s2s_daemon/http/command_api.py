"""HTTP -> command: ``POST <path>`` of each route exposed as a command, and ``GET /api/commands/{id}``.

A POST is validated like an AMQP command (the route's JSON Schema), keyed by its ``Idempotency-Key`` and
published to the commands exchange with publisher confirms; the consumer pipeline does the rest. IETF
Idempotency-Key semantics, decided before anything is published:

* the outbox already holds the key: same payload -> the stored reply is the answer, different -> 422;
* the key was accepted over HTTP and has no outcome yet: same payload -> 409 (in flight), different -> 422;
* otherwise the key is taken (Redis, atomically), the command published, 202 with a status URL.

``Prefer: wait=N`` (RFC 7240; N seconds, capped by ``api.max_wait_seconds``) waits for the reply on the
sidecar's reply queue and answers with it; 202 if it did not arrive in time.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import orjson
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from s2s_daemon.errors import DependencyUnavailable
from s2s_daemon.http.body import BodyTooLarge, InvalidContentLength, is_json_media_type, read_limited
from s2s_daemon.http.correlation import correlation_of
from s2s_daemon.http.responses import CommandAccepted, CommandConflict, CommandInFlight, ErrorBody, model_response
from s2s_daemon.idempotency.fingerprint import fingerprint
from s2s_daemon.idempotency.submissions import Recorded, SubmissionLedger
from s2s_daemon.messaging.contracts import ErrorKind
from s2s_daemon.messaging.gateway import CommandGateway
from s2s_daemon.observability.correlation import clean_id
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.outbox.record import command_key
from s2s_daemon.outbox.writer import OutboxWriter
from s2s_daemon.schemas import BodySchema
from s2s_daemon.settings import RouteSettings

__all__ = ["CommandStatus", "CommandSubmission", "parse_prefer_wait", "reply_status_code", "status_url"]

log = get_logger("s2s.http.commands")

_RETRY_AFTER_S = "2"
# Enum members hash by name, so the tables are keyed by the plain values.
_PASS_THROUGH = frozenset({ErrorKind.REJECTED.value, ErrorKind.CONFLICT.value})
_STATUS_BY_KIND = {
    ErrorKind.CONFLICT.value: 422,  # the same key reused with another payload
    ErrorKind.INVALID.value: 422,
    ErrorKind.TIMEOUT.value: 504,
    ErrorKind.EXPIRED.value: 504,
    ErrorKind.UNAVAILABLE.value: 502,
}


def status_url(command_id: str, downstream: str) -> str:
    return f"/api/commands/{quote(command_id, safe='')}?downstream={quote(downstream, safe='')}"


def parse_prefer_wait(values: list[str], cap: float) -> float | None:
    """Seconds of ``wait=N`` in ``Prefer`` headers (RFC 7240), capped; None when absent, zero or malformed."""
    for value in values:
        for preference in value.split(","):
            token, _, rest = preference.partition(";")[0].partition("=")
            if token.strip().lower() != "wait":
                continue
            text = rest.strip().strip('"')
            if text.isascii() and text.isdigit() and int(text) > 0:
                return min(float(text), cap)
            return None
    return None


def reply_status_code(reply: Mapping[str, Any]) -> int:
    """The HTTP status that carries a reply: the downstream's own where it has one, else by error kind."""
    result = reply.get("result") or {}
    error = reply.get("error") or {}
    if reply.get("status") == "succeeded":
        code = result.get("status_code")
        return code if isinstance(code, int) and 200 <= code < 300 else 200
    code = error.get("status_code")
    kind = str(error.get("kind"))
    if kind in _PASS_THROUGH and isinstance(code, int) and 400 <= code < 500:
        return code
    return _STATUS_BY_KIND.get(kind, 502)


def _error(status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> Response:
    return model_response(ErrorBody(error=error, detail=detail), status, headers)


def _unavailable(detail: str) -> Response:
    return _error(503, "unavailable", detail, {"retry-after": _RETRY_AFTER_S})


class CommandSubmission:
    """``POST <path>`` of one route exposed as a command: submits commands ``<downstream>.<action>``."""

    def __init__(
        self,
        downstream: str,
        action: str,
        route: RouteSettings,
        *,
        gateway: CommandGateway,
        ledger: SubmissionLedger,
        outbox: OutboxWriter,
        require_key: bool,
        max_body_bytes: int,
        max_wait_seconds: float,
    ) -> None:
        self.downstream = downstream
        self.routing_key = f"{downstream}.{action}"
        self._validator = BodySchema(route.json_schema) if route.json_schema else None
        self._gateway = gateway
        self._ledger = ledger
        self._outbox = outbox
        self._require_key = require_key
        self._max_body_bytes = max_body_bytes
        self._max_wait = max_wait_seconds

    async def handle(self, request: Request) -> Response:
        raw_key = request.headers.get("idempotency-key")
        key = clean_id(raw_key)
        if raw_key is None and self._require_key:
            return _error(400, "missing_idempotency_key", "this endpoint requires an Idempotency-Key header")
        if raw_key is not None and key is None:
            return _error(400, "invalid_idempotency_key", "Idempotency-Key: 1-200 printable ASCII characters")
        try:
            body = await read_limited(request, self._max_body_bytes)
        except BodyTooLarge as exc:
            return _error(413, "too_large", str(exc))
        except InvalidContentLength as exc:
            return _error(400, "invalid_request", str(exc))
        if not is_json_media_type(request.headers.get("content-type")):
            return _error(415, "unsupported_media_type", "send application/json")
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError:
            return _error(400, "invalid_json", "the body is not JSON")
        if self._validator is not None and (violation := self._validator.violation(payload)) is not None:
            return _error(422, "invalid", violation[:500])
        fp = fingerprint(self.routing_key, payload)
        key = key or f"fp-{fp}"
        try:
            return await self._submit(request, key, body, fp)
        except DependencyUnavailable as exc:
            log.warning("http.command_unavailable", command_id=key, error=str(exc))
            return _unavailable(f"{exc.dependency} unavailable; retry with the same Idempotency-Key")

    async def _submit(self, request: Request, key: str, body: bytes, fp: str) -> Response:
        done = await self._outbox.find(command_key(self.downstream, key))
        if done is not None:
            if done.fingerprint != fp:
                return self._conflict(key)
            if done.reply is not None:
                return self._reply(done.reply, key)
        recorded = await self._ledger.take(self.downstream, key, fp)
        if recorded is not None:
            if recorded.fingerprint != fp:
                return self._conflict(key)
            if recorded.state is Recorded.DONE:
                # completed since the outbox lookup above (or its document is gone): the outbox decides
                done = await self._outbox.find(command_key(self.downstream, key))
                if done is not None and done.reply is not None:
                    return self._reply(done.reply, key)
            in_flight = CommandInFlight(error="in_flight", command_id=key, status_url=status_url(key, self.downstream))
            return model_response(in_flight, 409, {"retry-after": "1"})

        correlation = correlation_of(request)
        wait = parse_prefer_wait(request.headers.getlist("prefer"), self._max_wait)
        future = self._gateway.expect_reply(correlation.correlation_id, key) if wait else None
        try:
            try:
                await self._gateway.publish_command(
                    body,
                    self.routing_key,
                    command_id=key,
                    correlation_id=correlation.correlation_id,
                    trace=correlation.trace,  # the caller's: the gateway sends it onward
                    want_reply=future is not None,
                )
            except DependencyUnavailable:
                with contextlib.suppress(DependencyUnavailable):
                    await self._ledger.release(self.downstream, key, fp)
                raise
            try:
                await self._ledger.confirm(self.downstream, key, fp)
            except DependencyUnavailable:
                log.warning("http.command_confirm_failed", command_id=key, exc_info=True)
            log.info("http.command_published", command_id=key, routing_key=self.routing_key, wait_s=wait)
            if future is not None and wait is not None:
                with contextlib.suppress(TimeoutError):
                    return self._reply(await asyncio.wait_for(future, wait), key)
        finally:
            if future is not None:
                self._gateway.forget(correlation.correlation_id, key)
        url = status_url(key, self.downstream)
        return model_response(CommandAccepted(command_id=key, status_url=url), 202, {"location": url})

    def _reply(self, reply: Mapping[str, Any], key: str) -> Response:
        return JSONResponse(
            dict(reply),
            status_code=reply_status_code(reply),
            headers={"location": status_url(key, self.downstream)},
        )

    @staticmethod
    def _conflict(key: str) -> Response:
        detail = "this Idempotency-Key was used with a different payload"
        return model_response(CommandConflict(error="conflict", command_id=key, detail=detail), 422)


class CommandStatus:
    """``GET /api/commands/{id}?downstream=<name>``: the outcome from the outbox, or "in flight"."""

    def __init__(self, outbox: OutboxWriter, ledger: SubmissionLedger, downstreams: frozenset[str]) -> None:
        self._outbox = outbox
        self._ledger = ledger
        self._downstreams = downstreams

    async def handle(self, request: Request) -> Response:
        command_id = request.path_params["command_id"]
        downstream = request.query_params.get("downstream")
        if downstream is None:
            return _error(400, "invalid_request", "the downstream query parameter is required")
        if downstream not in self._downstreams:
            return _error(404, "not_found", "unknown downstream")
        try:
            record = await self._outbox.find(command_key(downstream, command_id))
            accepted = None if record is not None else await self._ledger.get(downstream, command_id)
        except DependencyUnavailable as exc:
            return _unavailable(f"{exc.dependency} unavailable")
        if record is None and accepted is None:
            return JSONResponse(
                {"error": "not_found", "detail": "unknown command id", "command_id": command_id}, status_code=404
            )
        reply = record.reply if record is not None else None
        return JSONResponse(
            {
                "command_id": command_id,
                "downstream": downstream,
                "status": reply.get("status", "in_flight") if reply else "in_flight",
                "outbox_status": record.status.value if record is not None else None,
                "reply": reply,
                "created_at": record.created_at if record is not None else None,
                "sent_at": record.sent_at if record is not None else None,
            }
        )
