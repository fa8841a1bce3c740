"""The sidecar's OpenAPI 3.1 document, derived from the configuration and the response models.

Every route the configuration exposes is an operation: a command's request body is the route's own JSON
Schema, a read's path fields take the schemas the route gives them. Every response body schema is generated
from its pydantic model (``http/responses.py``), so the document cannot drift from what the handlers send.
The admin paths exist only when admin is enabled. ``make test`` runs schemathesis against the live sidecar
with this document.
"""

from __future__ import annotations

from functools import cache
from typing import Annotated, Any, Literal

from pydantic import BaseModel, StringConstraints, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaMode, JsonSchemaValue, models_json_schema

from s2s_daemon.http.console import OutboxRetryRequest, PurgeRequest, ReplayRequest
from s2s_daemon.http.exposures import Exposure, declared_exposures
from s2s_daemon.http.responses import (
    BreakerForced,
    CommandAccepted,
    CommandConflict,
    CommandInFlight,
    CommandLookup,
    CommandStatusBody,
    DeadLetterList,
    DeadLetterShow,
    DeadOutboxList,
    DeliveriesBody,
    DownstreamBody,
    ErrorBody,
    Health,
    HistoryBody,
    JobAccepted,
    JobStatus,
    OutboxRetried,
    StatusSnapshot,
    SubscriptionsBody,
    WebhookAccepted,
    WebhookRejected,
)
from s2s_daemon.messaging.contracts import Reply
from s2s_daemon.settings import NAME_RE, Settings

__all__ = ["build_openapi"]

JSON = "application/json"
HEALTH_JSON = "application/health+json"

CommandId = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]
SourceName = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]
Seconds = Annotated[str, StringConstraints(pattern=r"^[0-9]+$")]

_MODELS: tuple[type[BaseModel], ...] = (
    ErrorBody,
    Reply,
    CommandAccepted,
    CommandInFlight,
    CommandConflict,
    CommandStatusBody,
    DeliveriesBody,
    DownstreamBody,
    Health,
    StatusSnapshot,
    BreakerForced,
    WebhookAccepted,
    WebhookRejected,
    DeliveriesBody,
    SubscriptionsBody,
    HistoryBody,
    DeadLetterList,
    DeadLetterShow,
    JobStatus,
    JobAccepted,
    DeadOutboxList,
    OutboxRetried,
    CommandLookup,
)
_STALE_HEADERS = ("X-Cache", "Age", "Warning")


class _ResponseBodySchema(GenerateJsonSchema):
    """Without defaults: they describe input, and a ``None`` default of a field that is absent rather than null
    would contradict its own schema."""

    def default_schema(self, schema: Any) -> JsonSchemaValue:  # pydantic_core's WithDefaultSchema, not our dependency
        return self.generate_inner(schema["schema"])


@cache
def _models() -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """(model name -> its $ref, component schemas) for every response body model."""
    mode: JsonSchemaMode = "serialization"
    refs, top = models_json_schema(
        [(m, mode) for m in _MODELS],
        ref_template="#/components/schemas/{model}",
        schema_generator=_ResponseBodySchema,
    )
    return {model.__qualname__: ref for (model, _), ref in refs.items()}, top["$defs"]


def _schema(tp: Any) -> dict[str, Any]:
    schema: dict[str, Any] = TypeAdapter(tp).json_schema()
    return schema


def _ref(model: type[BaseModel]) -> dict[str, Any]:
    return _models()[0][model.__qualname__]


def _any_of(*models: type[BaseModel]) -> dict[str, Any]:
    return {"anyOf": [_ref(m) for m in models]}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name.replace('-', '')}"}


def _response(
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    media_type: str = JSON,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "headers": {h: _header(h) for h in ("X-Correlation-ID", *headers)},
    }
    if schema is not None:
        response["content"] = {media_type: {"schema": schema}}
    return response


def _error(description: str, *, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    return _response(description, _ref(ErrorBody), headers=headers)


def _header_parameter(name: str, description: str, *, required: bool = False, tp: Any = str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": required, "description": description, "schema": _schema(tp)}


_CORRELATION_PARAMETERS = [
    _header_parameter(
        "X-Correlation-ID", "Kept end to end and returned; else X-Request-ID, else the trace id of traceparent."
    ),
    _header_parameter("traceparent", "W3C trace context; an invalid one starts a new trace."),
    _header_parameter("tracestate", "W3C tracestate; forwarded unchanged with a valid traceparent."),
]


def _get(summary: str, tag: str, responses: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {"get": {"summary": summary, "tags": [tag], **more, "responses": responses}}


def _health_paths() -> dict[str, Any]:
    def probe(summary: str, description: str) -> dict[str, Any]:
        health = _ref(Health)
        return _get(
            summary,
            "operations",
            {
                "200": _response("pass or warn", health, media_type=HEALTH_JSON),
                "503": _response("fail (or draining)", health, media_type=HEALTH_JSON),
            },
            description=description,
        )

    def text(summary: str, description: str, media_type: str) -> dict[str, Any]:
        return _get(summary, "operations", {"200": _response(description, _schema(str), media_type=media_type)})

    return {
        "/health": probe("Health of the daemon and each dependency", "An open breaker is `warn`; 503 on `fail`."),
        "/livez": probe("Liveness", "The event loop is turning; no dependency is checked."),
        "/readyz": probe("Readiness", "RabbitMQ, Redis and MongoDB answer and the daemon is not draining."),
        "/metrics": text("Prometheus metrics", "text exposition format", "text/plain"),
        "/openapi.json": _get("This document", "operations", {"200": _response("OpenAPI 3.1", _schema(dict))}),
        "/status": text("Status page (HTML; polls /api/status)", "the page", "text/html"),
        "/api/status": _get(
            "What the status page shows", "operations", {"200": _response("the snapshot", _ref(StatusSnapshot))}
        ),
    }


def _status_path(settings: Settings) -> dict[str, Any]:
    downstream = _schema(Literal[tuple(settings.downstreams)]) if settings.downstreams else _schema(str)
    return _get(
        "Status and reply of a command",
        "commands",
        {
            "200": _response("the outcome, or `in_flight` while accepted and not finished", _ref(CommandStatusBody)),
            "400": _error("no downstream given"),
            "404": _error("unknown command id or downstream"),
            "503": _error("MongoDB or Redis unavailable", headers=("Retry-After",)),
        },
        parameters=[
            {
                "name": "command_id",
                "in": "path",
                "required": True,
                "description": "The command's idempotency key.",
                "schema": _schema(CommandId),
            },
            {
                "name": "downstream",
                "in": "query",
                "required": True,
                "description": "The downstream the command went to (the status URL carries it).",
                "schema": downstream,
            },
            *_CORRELATION_PARAMETERS,
        ],
    )


def _command_operation(exposure: Exposure, key_required: bool) -> dict[str, Any]:
    return {
        "summary": exposure.expose.summary or f"Submit a {exposure.routing_key} command",
        "description": (
            f"Validates the body against the route's schema and publishes the command `{exposure.routing_key}` "
            "with publisher confirms. 202 with a status URL, or, with `Prefer: wait=N`, the reply (the "
            "downstream's status on success and for its 4xx refusals; 502 unavailable, 504 timeout or expired)."
        ),
        "operationId": exposure.routing_key,
        "tags": ["commands"],
        "parameters": [
            _header_parameter(
                "Idempotency-Key",
                "The command id. Same key + same payload: the stored reply; other payload: 422; while the first "
                "is in flight: 409.",
                required=key_required,
                tp=CommandId,
            ),
            _header_parameter("Prefer", "`wait=N`: wait up to N seconds (capped) for the reply (RFC 7240)."),
            *_CORRELATION_PARAMETERS,
        ],
        "requestBody": {"required": True, "content": {JSON: {"schema": {"$ref": _body_ref(exposure)}}}},
        "responses": {
            "200": _response("the reply (downstream answered 200)", _ref(Reply), headers=("Location",)),
            "201": _response("the reply (downstream answered 201)", _ref(Reply), headers=("Location",)),
            "202": _response("accepted; poll status_url", _ref(CommandAccepted), headers=("Location",)),
            "400": _error("missing or invalid Idempotency-Key, body not JSON"),
            "409": _response(
                "the same key is in flight, or the downstream answered 409",
                _any_of(CommandInFlight, Reply),
                headers=("Retry-After",),
            ),
            "413": _error("body too large"),
            "415": _error("not application/json"),
            "422": _response(
                "schema violation, the key reused with another payload, or the downstream answered 422",
                _any_of(CommandConflict, ErrorBody, Reply),
            ),
            "4XX": _response("the downstream refused the command (its status)", _any_of(Reply, ErrorBody)),
            "502": _response("failed reply: downstream unavailable", _ref(Reply)),
            "503": _error("RabbitMQ, Redis or MongoDB unavailable", headers=("Retry-After",)),
            "504": _response("failed reply: timeout or deadline expired", _ref(Reply)),
        },
    }


def _read_operation(exposure: Exposure) -> dict[str, Any]:
    fields = (exposure.route.json_schema or {}).get("properties") or {}
    name = exposure.downstream
    return {
        "summary": exposure.expose.summary or f"Read through {exposure.routing_key}",
        "description": f"Calls `{exposure.routing_key}` through the resilient client. On failure or an open "
        "breaker: the last good copy marked `X-Cache: stale`, else 503 with Retry-After.",
        "operationId": exposure.routing_key,
        "tags": ["reads"],
        "parameters": [
            *(
                {"name": field, "in": "path", "required": True, "schema": fields.get(field) or _schema(str)}
                for field in exposure.expose.path_params
            ),
            *_CORRELATION_PARAMETERS,
        ],
        "responses": {
            "200": _response(
                "the resource (fresh, or stale when marked)", _ref(DownstreamBody), headers=_STALE_HEADERS
            ),
            "400": _error("a path field the route's schema refuses"),
            "404": _error(f"{name} has no such resource"),
            "502": _error(f"{name} refused the request"),
            "503": _error(f"{name} unavailable and no stale copy", headers=("Retry-After",)),
        },
    }


def _body_ref(exposure: Exposure) -> str:
    # Routing keys hold a '.', model names never do: the two kinds of component cannot collide.
    return f"#/components/schemas/{exposure.routing_key}"


def _command_paths(settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """(paths, request body schemas by component name): the status path and every exposed route."""
    paths: dict[str, Any] = {"/api/commands/{command_id}": _status_path(settings)}
    bodies: dict[str, Any] = {}
    for exposure in declared_exposures(settings):
        if exposure.kind == "read":
            operation = _read_operation(exposure)
        else:
            operation = _command_operation(exposure, settings.amqp.require_idempotency_key)
            bodies[exposure.routing_key] = exposure.route.json_schema or {}
        paths.setdefault(exposure.path, {})[exposure.method.lower()] = operation
    return paths, bodies


def _webhook_paths() -> dict[str, Any]:
    rejected = _ref(WebhookRejected)
    return {
        "/api/webhooks/{service}": {
            "post": {
                "summary": "Receive a signed webhook",
                "description": (
                    "Sources and their signature schemes (Standard Webhooks v1, GitHub, Stripe) are configured "
                    "under `webhooks:`. Verified deliveries become CloudEvents on s2s.events with routing key "
                    "`webhook.<service>.<type>`, published by the outbox relay. 2xx only after the outbox write."
                ),
                "tags": ["webhooks"],
                "parameters": [
                    {"name": "service", "in": "path", "required": True, "schema": _schema(SourceName)},
                    *_CORRELATION_PARAMETERS,
                ],
                "requestBody": {"required": True, "content": {JSON: {"schema": _schema(dict[str, Any])}}},
                "responses": {
                    "200": _response("a replay of a recorded delivery: nothing new enqueued", _ref(WebhookAccepted)),
                    "202": _response("recorded in the outbox", _ref(WebhookAccepted)),
                    "400": _response("malformed headers or body", rejected),
                    "401": _response("missing, malformed or wrong signature; timestamp outside tolerance", rejected),
                    "404": _error("unknown webhook source"),
                    "413": _response("body too large", rejected),
                    "415": _response("not JSON", rejected),
                    "503": _error("the outbox is unavailable; retry", headers=("Retry-After",)),
                },
            }
        }
    }


def _delivery_paths() -> dict[str, Any]:
    return {
        "/api/deliveries/{event_id}": _get(
            "The delivery log of one event",
            "webhooks",
            {
                "200": _response("every subscription's delivery of the event", _ref(DeliveriesBody)),
                "404": _error("no delivery of this event is logged"),
                "503": _error("MongoDB unavailable", headers=("Retry-After",)),
            },
            description="Attempts (time, status code, error, duration), status and last error of the signed "
            "webhooks sent for the event (its id is the `webhook-id` the endpoints received).",
            parameters=[
                {"name": "event_id", "in": "path", "required": True, "schema": _schema(CommandId)},
                *_CORRELATION_PARAMETERS,
            ],
        ),
        "/api/subscriptions": _get(
            "The webhook endpoints and whether they are disabled",
            "webhooks",
            {"200": _response("every configured subscription", _ref(SubscriptionsBody))},
        ),
    }


def _admin_paths() -> dict[str, Any]:
    def force(action: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": f"Force a breaker {action}",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [{"name": "downstream", "in": "path", "required": True, "schema": _schema(str)}],
                "responses": {
                    "200": _response("the breaker's state now", _ref(BreakerForced)),
                    "401": _error("missing or wrong bearer token", headers=("WWW-Authenticate",)),
                    "404": _error("unknown downstream"),
                },
            }
        }

    return {
        "/admin/breakers/{downstream}/open": force("open"),
        "/admin/breakers/{downstream}/close": force("close"),
    }


def _console_paths() -> dict[str, Any]:
    """The operator console: reads for everyone, writes with the admin bearer token (401 without)."""
    unavailable = _error("RabbitMQ or MongoDB unavailable")
    busy = _error("a replay or purge job is running", headers=("Retry-After",))

    def text(pattern: str) -> dict[str, Any]:
        return _schema(Annotated[str, StringConstraints(pattern=pattern)])

    def write(summary: str, request: type[BaseModel], ok: dict[str, dict[str, Any]]) -> dict[str, Any]:
        return {
            "post": {
                "summary": summary,
                "description": request.__doc__,
                "tags": ["console"],
                "security": [{"adminToken": []}],
                "parameters": [_header_parameter("X-Operator", "Who acts (logged with the write).")],
                "requestBody": {"required": True, "content": {JSON: {"schema": _schema(request)}}},
                "responses": {
                    **ok,
                    "400": _error("a request body that is not valid (the detail names the field)"),
                    "401": _error(
                        "missing or wrong bearer token, or admin.token not set", headers=("WWW-Authenticate",)
                    ),
                    "503": unavailable,
                },
            }
        }

    patterns = [
        {
            "name": key,
            "in": "query",
            "required": False,
            "schema": {"type": "array", "items": {"type": "string", "minLength": 1}},
            "style": "form",
            "explode": True,
            "description": "Shell pattern; repeatable.",
        }
        for key in ("id", "reason", "routing_key", "correlation_id")
    ]
    job = {
        "202": _response("the job started; poll its status_url", _ref(JobAccepted), headers=("Location",)),
        "409": busy,
    }
    return {
        "/console": _get(
            "Operator console (HTML)", "console", {"200": _response("the page", _schema(str), media_type="text/html")}
        ),
        "/api/console/history": _get(
            "The charts' history (in-memory ring)", "console", {"200": _response("columns", _ref(HistoryBody))}
        ),
        "/api/console/dlq": _get(
            "Dead letters, filtered (a pass over the DLQ that keeps every message)",
            "console",
            {
                "200": _response("the matching dead letters", _ref(DeadLetterList)),
                "400": _error("a filter, age or limit that is not valid"),
                "409": busy,
                "503": unavailable,
            },
            parameters=[
                *patterns,
                {
                    "name": "older_than",
                    "in": "query",
                    "required": False,
                    "schema": text(r"^( *[0-9]+(\.[0-9]+)? *[smhdwSMHDW] *)+$"),
                    "description": "A duration: 7d, 12h, 1h30m.",
                },
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                },
            ],
        ),
        "/api/console/dlq/messages/{id}": _get(
            "One dead letter in full: properties, headers, body",
            "console",
            {
                "200": _response("the message(s) with this id", _ref(DeadLetterShow)),
                "404": _error("no dead letter with this id"),
                "409": busy,
                "503": unavailable,
            },
            parameters=[{"name": "id", "in": "path", "required": True, "schema": _schema(CommandId)}],
        ),
        "/api/console/dlq/replay": write("Replay dead letters (a background job)", ReplayRequest, job),
        "/api/console/dlq/purge": write("Purge dead letters (a background job)", PurgeRequest, job),
        "/api/console/jobs/{job_id}": _get(
            "Progress and report of a replay or purge",
            "console",
            {"200": _response("the job", _ref(JobStatus)), "404": _error("unknown job")},
            parameters=[{"name": "job_id", "in": "path", "required": True, "schema": _schema(str)}],
        ),
        "/api/console/outbox/dead": _get(
            "Dead outbox documents, oldest first",
            "console",
            {
                "200": _response("the documents and why", _ref(DeadOutboxList)),
                "400": _error("a limit that is not valid"),
                "503": unavailable,
            },
            parameters=[
                {
                    "name": "limit",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "integer", "minimum": 1, "maximum": 1000},
                }
            ],
        ),
        "/api/console/outbox/retry": write(
            "Move dead outbox documents back to pending",
            OutboxRetryRequest,
            {"200": _response("how many", _ref(OutboxRetried))},
        ),
        "/api/console/commands/{command_id}": _get(
            "A command by id, in every downstream's outbox",
            "console",
            {
                "200": _response("status, reply, attempts, trace id", _ref(CommandLookup)),
                "404": _error("no record of this id"),
                "503": unavailable,
            },
            parameters=[{"name": "command_id", "in": "path", "required": True, "schema": _schema(CommandId)}],
        ),
    }


def _headers() -> dict[str, Any]:
    def header(description: str, tp: Any = str) -> dict[str, Any]:
        return {"description": description, "schema": _schema(tp)}

    return {
        "XCorrelationID": header("The request's correlation id."),
        "RetryAfter": header("Seconds.", Seconds),
        "Location": header("The command's status URL."),
        "XCache": header("`stale` on a last good copy.", Literal["stale"]),
        "Age": header("Seconds since the copy was fetched.", Seconds),
        "Warning": header('`110 - "Response is Stale"`.'),
        "WWWAuthenticate": header("The bearer challenge."),
    }


def build_openapi(settings: Settings, version: str) -> dict[str, Any]:
    admin = settings.admin.token is not None  # the breaker endpoints exist only then; the console's always
    command_paths, bodies = _command_paths(settings)
    components: dict[str, Any] = {"schemas": {**_models()[1], **bodies}, "headers": _headers()}
    components["securitySchemes"] = {"adminToken": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "s2s-daemon sidecar",
            "version": version,
            "description": "Health, metrics, the configured command and read API, and signed webhooks.",
        },
        "paths": {
            **_health_paths(),
            **command_paths,
            **_webhook_paths(),
            **_delivery_paths(),
            **_console_paths(),
            **(_admin_paths() if admin else {}),
        },
        "components": components,
    }
