"""The operator console: ``GET /console`` (a page with its assets under ``/console/static/``) and ``/api/console/*``.

Reads need nothing: the charts' history (``observability/history.py``), dead letters (a list with filters, one
message in full), dead outbox documents and a command looked up by id. Writes (replay or purge dead letters,
retry dead outbox documents) need ``Authorization: Bearer <admin.token>`` (``AdminToken``; no cookie is ever
read) and answer 401 without it; each is logged as ``console.write`` with who (the ``X-Operator`` name the page
sends, the client address) and what.

The dead-letter endpoints call the functions ``s2s-daemon dlq`` calls (``ops/dlq.py``) and the outbox ones those
of ``s2s-daemon outbox`` (``ops/outbox.py``, synchronous PyMongo in a worker thread), so both surfaces have the
same semantics: a replay acks a dead letter only after its confirmed re-publish, keeps its idempotency key, and an
edited body gets the derived key. Replays and purges run as background jobs (``http/jobs.py``) the page polls.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping, Sequence
from importlib.resources import files
from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pymongo import MongoClient
from pymongo.collection import Collection
from pymongo.errors import PyMongoError
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from s2s_daemon.errors import DeadLetterQueueError, DependencyUnavailable
from s2s_daemon.http.admin import AdminToken
from s2s_daemon.http.jobs import JobBody, JobRunner, JobsBusy
from s2s_daemon.http.responses import (
    CommandLookup,
    CommandRecordBody,
    DeadLetterList,
    DeadLetterShow,
    DeadOutboxDocument,
    DeadOutboxList,
    ErrorBody,
    HistoryBody,
    JobAccepted,
    JobStatus,
    OutboxRetried,
    model_response,
)
from s2s_daemon.messaging.contracts import Reply
from s2s_daemon.observability.correlation import TraceContext
from s2s_daemon.observability.history import MetricsHistory
from s2s_daemon.observability.logging import get_logger
from s2s_daemon.ops.dlq import (
    DeadLetterQueue,
    ProgressFn,
    Selection,
    edited_body,
    list_dead_letters,
    show_dead_letter,
)
from s2s_daemon.ops.outbox import dead_documents, mongo_client, outbox_collection, retry_dead
from s2s_daemon.outbox.record import OutboxRecord, command_key
from s2s_daemon.outbox.writer import OutboxWriter
from s2s_daemon.settings import Settings

__all__ = ["STATIC", "Console", "OutboxRetryRequest", "PurgeRequest", "ReplayRequest"]

log = get_logger("s2s.http.console")

STATIC = files("s2s_daemon.http") / "static"
FILTER_PARAMS = ("id", "reason", "routing_key", "correlation_id")
_MAX_LIST = 1000
# The browser itself refuses anything from another origin (and framing by another site's page).
_PAGE_HEADERS = {
    "content-security-policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}
_OPERATOR = re.compile(r"^[\w .@-]{1,64}$")


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    filters: dict[str, list[str]] = Field(
        default_factory=dict,
        description="id, reason, routing_key, correlation_id -> shell patterns; keys must all match, the patterns "
        "of one key any (as `s2s-daemon dlq --filter KEY=PATTERN`).",
    )

    def selection(self, older_than: str | None) -> Selection:
        texts = [f"{key}={pattern}" for key, patterns in self.filters.items() for pattern in patterns]
        return Selection.parse(texts, older_than)


class ReplayRequest(_Request):
    """Replay the matching dead letters (all of them without filters), like `s2s-daemon dlq replay`."""

    older_than: str | None = Field(default=None, description="Only dead letters older than this (7d, 12h, 90s).")
    limit: int | None = Field(default=None, ge=1, description="Replay at most this many.")
    body: Any = Field(
        default=None,
        description="A repaired JSON body for exactly one message (filters must pin one id); the copy gets a new "
        "idempotency key derived from the original key and this body.",
    )


class PurgeRequest(_Request):
    """Delete the matching dead letters older than ``older_than``, like `s2s-daemon dlq purge`."""

    older_than: str = Field(description="A duration: 7d, 12h, 1h30m, 0s.")
    dry_run: bool = Field(default=False, description="Only count what would be deleted.")


class OutboxRetryRequest(BaseModel):
    """Move dead outbox documents back to pending, like `s2s-daemon outbox retry-dead`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    keys: list[str] | None = Field(default=None, description="Only these keys; all dead documents when absent.")
    limit: int | None = Field(default=None, ge=1, description="At most this many, oldest first.")


def _error(status: int, error: str, detail: str) -> Response:
    return model_response(ErrorBody(error=error, detail=detail), status)


def _invalid(detail: str) -> Response:
    return _error(400, "invalid", detail)


def _validation_detail(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors())


class Console:
    def __init__(
        self,
        settings: Settings,
        history: MetricsHistory,
        token: AdminToken,
        outbox: OutboxWriter,
        downstreams: Sequence[str],
    ) -> None:
        self._settings = settings
        self.history = history
        self._token = token
        self._outbox = outbox
        self._downstreams = list(downstreams)
        self.jobs = JobRunner()
        self._mongo: MongoClient[dict[str, Any]] | None = None
        self._mongo_lock = asyncio.Lock()
        self._dlq_reads = asyncio.Lock()  # one pass at a time from this process (a page's list, a show)

    def routes(self) -> list[BaseRoute]:
        return [
            Route("/console", self.page, methods=["GET"]),
            Mount("/console/static", StaticFiles(directory=str(STATIC)), name="console-static"),
            Route("/api/console/history", self.history_json, methods=["GET"]),
            Route("/api/console/dlq", self.dlq_list, methods=["GET"]),
            Route("/api/console/dlq/messages/{id:path}", self.dlq_show, methods=["GET"]),
            Route("/api/console/dlq/replay", self.dlq_replay, methods=["POST"]),
            Route("/api/console/dlq/purge", self.dlq_purge, methods=["POST"]),
            Route("/api/console/jobs/{job_id}", self.job, methods=["GET"]),
            Route("/api/console/outbox/dead", self.outbox_dead, methods=["GET"]),
            Route("/api/console/outbox/retry", self.outbox_retry, methods=["POST"]),
            Route("/api/console/commands/{command_id:path}", self.command, methods=["GET"]),
        ]

    async def start(self) -> None:
        await self.history.sample_once()  # the first point now: the page has something to draw at once
        self.history.start()

    async def stop(self) -> None:
        await self.jobs.stop()
        await self.history.stop()
        if self._mongo is not None:
            self._mongo.close()
            self._mongo = None

    # reads ---------------------------------------------------------------------------------------
    async def page(self, _: Request) -> Response:
        html = (STATIC / "console.html").read_text(encoding="utf-8")
        return HTMLResponse(html, headers={"cache-control": "no-store", **_PAGE_HEADERS})

    async def history_json(self, _: Request) -> Response:
        body = HistoryBody.model_validate(self.history.as_json())
        return model_response(body, headers={"cache-control": "no-store"})

    async def dlq_list(self, request: Request) -> Response:
        params = request.query_params
        unknown = set(params) - {*FILTER_PARAMS, "older_than", "limit"}
        if unknown:
            return _invalid(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        texts = [f"{key}={value}" for key in FILTER_PARAMS for value in params.getlist(key)]
        try:
            selection = Selection.parse(texts, params.get("older_than"))
            limit = _limit(params.get("limit"), 100)
        except ValueError as exc:
            return _invalid(str(exc))
        busy = self._busy()
        if busy is not None:
            return busy
        async with self._dlq_reads:
            try:
                async with DeadLetterQueue.from_settings(self._settings) as dlq:
                    listing = await list_dead_letters(dlq, selection, limit)
            except (DeadLetterQueueError, DependencyUnavailable) as exc:
                return _error(503, "unavailable", str(exc))
        body = DeadLetterList.model_validate({"queue": listing.queue, "depth": listing.depth, "messages": listing.rows})
        return model_response(body, headers={"cache-control": "no-store"})

    async def dlq_show(self, request: Request) -> Response:
        dead_letter_id = request.path_params["id"]
        busy = self._busy()
        if busy is not None:
            return busy
        async with self._dlq_reads:
            try:
                async with DeadLetterQueue.from_settings(self._settings) as dlq:
                    found = await show_dead_letter(dlq, dead_letter_id)
            except (DeadLetterQueueError, DependencyUnavailable) as exc:
                return _error(503, "unavailable", str(exc))
        if not found:
            return _error(404, "not_found", f"no dead letter with id {dead_letter_id!r}")
        return model_response(DeadLetterShow.model_validate({"id": dead_letter_id, "messages": found}))

    async def job(self, request: Request) -> Response:
        job = self.jobs.get(request.path_params["job_id"])
        if job is None:
            return _error(404, "not_found", "unknown job (the console keeps the last 20)")
        return model_response(JobStatus.model_validate(job.as_json()), headers={"cache-control": "no-store"})

    async def outbox_dead(self, request: Request) -> Response:
        unknown = set(request.query_params) - {"limit"}
        if unknown:
            return _invalid(f"unknown query parameter(s): {', '.join(sorted(unknown))}")
        try:
            limit = _limit(request.query_params.get("limit"), 100)
            collection = await self._collection()
            records = await asyncio.to_thread(dead_documents, collection, limit)
        except ValueError as exc:
            return _invalid(str(exc))
        except (DependencyUnavailable, PyMongoError) as exc:
            return _error(503, "unavailable", f"mongodb: {exc}")
        documents = [
            DeadOutboxDocument(
                key=r.key,
                kind=r.kind,
                event_routing_key=r.event_routing_key,
                correlation_id=r.correlation_id,
                attempts=r.attempts,
                last_error=r.last_error,
                created_at=r.created_at,
            )
            for r in records
        ]
        return model_response(DeadOutboxList(documents=documents), headers={"cache-control": "no-store"})

    async def command(self, request: Request) -> Response:
        command_id = request.path_params["command_id"]
        try:
            found = await asyncio.gather(*(self._outbox.find(command_key(d, command_id)) for d in self._downstreams))
        except DependencyUnavailable as exc:
            return _error(503, "unavailable", f"{exc.dependency} unavailable")
        records = [_command_record(d, r) for d, r in zip(self._downstreams, found, strict=True) if r is not None]
        if not records:
            return _error(404, "not_found", f"no outbox record of command {command_id!r} for any downstream")
        return model_response(CommandLookup(command_id=command_id, records=records))

    # writes --------------------------------------------------------------------------------------
    async def dlq_replay(self, request: Request) -> Response:
        parsed = await self._write_request(request, ReplayRequest)
        if isinstance(parsed, Response):
            return parsed
        try:
            selection = parsed.selection(parsed.older_than)
            body = None if parsed.body is None else edited_body(orjson.dumps(parsed.body))
        except ValueError as exc:
            return _invalid(str(exc))
        if body is not None and not selection.pins_one_id():
            return _invalid('an edited body needs exactly one message: filters {"id": [ID]}')
        settings, limit = self._settings, parsed.limit

        async def run(progress: ProgressFn, stop: asyncio.Event) -> dict[str, Any]:
            async with self._dlq_reads, DeadLetterQueue.from_settings(settings) as dlq:
                report = await dlq.replay(selection, limit=limit, body=body, stop=stop, progress=progress)
            return report.as_json()

        what = {"filters": parsed.filters, "older_than": parsed.older_than, "limit": limit, "edited": body is not None}
        return self._submit(request, "replay", what, run)

    async def dlq_purge(self, request: Request) -> Response:
        parsed = await self._write_request(request, PurgeRequest)
        if isinstance(parsed, Response):
            return parsed
        try:
            selection = parsed.selection(parsed.older_than)
        except ValueError as exc:
            return _invalid(str(exc))
        settings, dry_run = self._settings, parsed.dry_run

        async def run(progress: ProgressFn, stop: asyncio.Event) -> dict[str, Any]:
            async with self._dlq_reads, DeadLetterQueue.from_settings(settings) as dlq:
                report = await dlq.purge(selection, dry_run=dry_run, stop=stop, progress=progress)
            return report.as_json()

        what = {"filters": parsed.filters, "older_than": parsed.older_than, "dry_run": dry_run}
        return self._submit(request, "purge", what, run)

    async def outbox_retry(self, request: Request) -> Response:
        parsed = await self._write_request(request, OutboxRetryRequest)
        if isinstance(parsed, Response):
            return parsed
        try:
            collection = await self._collection()
            moved = await asyncio.to_thread(retry_dead, collection, parsed.limit, parsed.keys)
        except (DependencyUnavailable, PyMongoError) as exc:
            return _error(503, "unavailable", f"mongodb: {exc}")
        log.warning(
            "console.write", action="outbox.retry", who=_who(request), keys=parsed.keys, limit=parsed.limit, moved=moved
        )
        return model_response(OutboxRetried(moved=moved))

    # internals -----------------------------------------------------------------------------------
    async def _write_request(self, request: Request, model: type[_M]) -> _M | Response:
        """A write's body as ``model``, or the answer that ends it: 401 without the admin token, 400 naming
        the bad field."""
        refusal = self._token.refusal(request)
        if refusal is not None:
            return refusal
        return await _parse(request, model)

    def _busy(self) -> Response | None:
        running = self.jobs.running
        if running is None:
            return None
        return model_response(
            ErrorBody(error="busy", detail=f"a {running.kind} is running (job {running.id}); retry when it is done"),
            409,
            {"retry-after": "2"},
        )

    def _submit(self, request: Request, kind: str, what: Mapping[str, Any], run: JobBody) -> Response:
        who = _who(request)
        try:
            job = self.jobs.submit(kind, who, run)
        except JobsBusy as exc:
            return _error(409, "busy", f"{exc}; retry when it is done")
        log.warning("console.write", action=f"dlq.{kind}", who=who, job=job.id, **what)
        status_url = f"/api/console/jobs/{job.id}"
        body = JobAccepted(job=JobStatus.model_validate(job.as_json()), status_url=status_url)
        return model_response(body, 202, {"location": status_url})

    async def _collection(self) -> Collection[dict[str, Any]]:
        async with self._mongo_lock:
            if self._mongo is None:
                self._mongo = await asyncio.to_thread(mongo_client, self._settings)
            return outbox_collection(self._mongo, self._settings)


_M = TypeVar("_M", bound=BaseModel)


async def _parse(request: Request, model: type[_M]) -> _M | Response:
    raw = await request.body()
    try:
        return model.model_validate_json(raw or b"{}")
    except ValidationError as exc:
        return _invalid(_validation_detail(exc))


def _limit(text: str | None, default: int) -> int:
    if text is None:
        return default
    if not text.isdigit() or not 1 <= int(text) <= _MAX_LIST:
        raise ValueError(f"limit {text!r}: use a whole number from 1 to {_MAX_LIST}")
    return int(text)


def _who(request: Request) -> str:
    """The operator's name the page sends (free text, checked) at the client's address."""
    name = request.headers.get("x-operator", "").strip()
    client = request.client.host if request.client is not None else "unknown"
    return f"{name if _OPERATOR.match(name) else 'anonymous'}@{client}"


def _command_record(downstream: str, record: OutboxRecord) -> CommandRecordBody:
    reply = Reply.model_validate(record.reply) if record.reply else None
    trace = TraceContext.parse(record.headers.get("traceparent"))
    return CommandRecordBody(
        downstream=downstream,
        key=record.key,
        status=reply.status if reply is not None else "in_flight",
        outbox_status=record.status.value,
        attempts=reply.attempts if reply is not None else None,
        relay_attempts=record.attempts,
        reply=reply,
        trace_id=trace.trace_id if trace is not None else None,
        correlation_id=record.correlation_id,
        created_at=record.created_at,
        sent_at=record.sent_at,
        last_error=record.last_error,
    )
