"""The sidecar's OpenAPI 3.1 document, written by hand and completed from the configuration.

Written by hand because the handlers are plain Starlette; the parts that depend on configuration are filled
in from it (the command body is the route's own JSON Schema, the downstream and resource-id parameters come
from the config, the admin paths exist only when admin is enabled), and the reply schema is generated from
the pydantic contract, so the document cannot drift from what the daemon sends. ``make test`` runs
schemathesis against the live sidecar with this document.
"""

from __future__ import annotations

from typing import Any

from s2s_daemon.http.webhooks import RejectReason
from s2s_daemon.messaging.contracts import Reply
from s2s_daemon.settings import NAME_RE, Settings

__all__ = ["build_openapi"]

JSON = "application/json"
HEALTH_JSON = "application/health+json"
_ID_PATTERN = r"^[\x21-\x7e]{1,200}$"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/headers/{name}"}


def _response(
    description: str,
    schema: dict[str, Any] | None = None,
    *,
    media_type: str = JSON,
    headers: tuple[str, ...] = (),
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "description": description,
        "headers": {"X-Correlation-ID": _header("XCorrelationId")} | {h: _header(h.replace("-", "")) for h in headers},
    }
    if schema is not None:
        response["content"] = {media_type: {"schema": schema}}
    return response


def _error(description: str, *, headers: tuple[str, ...] = ()) -> dict[str, Any]:
    return _response(description, _ref("Error"), headers=headers)


_CORRELATION_PARAMETERS = [
    {
        "name": "X-Correlation-ID",
        "in": "header",
        "required": False,
        "description": "Kept end to end and returned; else X-Request-ID, else the trace id of traceparent.",
        "schema": {"type": "string"},
    },
    {
        "name": "traceparent",
        "in": "header",
        "required": False,
        "description": "W3C trace context; a malformed one starts a new trace.",
        "schema": {"type": "string"},
    },
]


def _schemas(settings: Settings, command_schema: dict[str, Any]) -> dict[str, Any]:
    reply = Reply.model_json_schema(ref_template="#/components/schemas/{model}")
    reply_defs = reply.pop("$defs", {})
    check = {
        "type": "object",
        "required": ["status"],
        "properties": {
            "componentType": {"type": "string"},
            "status": {"enum": ["pass", "warn", "fail"]},
            "time": {"type": "string"},
            "output": {"type": "string"},
            "observedValue": {"type": "number"},
            "observedUnit": {"type": ["string", "null"]},
        },
    }
    return {
        **reply_defs,
        "Reply": reply,
        "Error": {
            "type": "object",
            "required": ["error"],
            "properties": {"error": {"type": "string"}, "detail": {"type": "string"}},
        },
        "Health": {
            "type": "object",
            "description": "application/health+json (draft-inadarei-api-health-check).",
            "required": ["status"],
            "properties": {
                "status": {"enum": ["pass", "warn", "fail"]},
                "serviceId": {"type": "string"},
                "version": {"type": "string"},
                "output": {"type": ["string", "null"]},
                "checks": {"type": "object", "additionalProperties": {"type": "array", "items": check}},
            },
        },
        "CommandBody": command_schema,
        "CommandAccepted": {
            "type": "object",
            "required": ["command_id", "status_url"],
            "properties": {"command_id": {"type": "string"}, "status_url": {"type": "string"}},
        },
        "CommandInFlight": {
            "type": "object",
            "required": ["error", "command_id", "status_url"],
            "properties": {
                "error": {"const": "in_flight"},
                "command_id": {"type": "string"},
                "status_url": {"type": "string"},
            },
        },
        "CommandConflict": {
            "type": "object",
            "required": ["error", "command_id", "detail"],
            "properties": {
                "error": {"const": "conflict"},
                "command_id": {"type": "string"},
                "detail": {"type": "string"},
            },
        },
        "CommandStatus": {
            "type": "object",
            "required": ["command_id", "downstream", "status", "outbox_status", "reply"],
            "properties": {
                "command_id": {"type": "string"},
                "downstream": {"type": "string"},
                "status": {"enum": ["in_flight", "succeeded", "failed"]},
                "outbox_status": {"enum": ["pending", "publishing", "sent", "dead", None]},
                "reply": {"anyOf": [_ref("Reply"), {"type": "null"}]},
                "created_at": {"type": ["integer", "null"], "description": "Epoch milliseconds."},
                "sent_at": {"type": ["integer", "null"], "description": "Epoch milliseconds."},
            },
        },
        "WebhookAccepted": {
            "type": "object",
            "required": ["service", "delivery_id", "event_type", "event_id", "duplicate"],
            "properties": {
                "service": {"type": "string"},
                "delivery_id": {"type": "string"},
                "event_type": {"type": "string"},
                "event_id": {"type": "string", "description": "The CloudEvent id (stable per delivery)."},
                "duplicate": {"type": "boolean"},
            },
        },
        "WebhookRejected": {
            "type": "object",
            "required": ["error", "reason"],
            "properties": {
                "error": {"const": "rejected"},
                "reason": {"enum": [r.value for r in RejectReason] + ["invalid content-length"]},
            },
        },
        "Breaker": {
            "type": "object",
            "required": ["state", "calls", "failure_rate", "slow_rate", "seconds_until_half_open"],
            "properties": {
                "state": {"enum": ["closed", "open", "half_open"]},
                "calls": {"type": "integer"},
                "failure_rate": {"type": "number", "description": "Percent, in the current window."},
                "slow_rate": {"type": "number"},
                "seconds_until_half_open": {"type": "number"},
            },
        },
        "Status": {
            "type": "object",
            "required": ["service_id", "time", "window_seconds", "downstreams", "outbox", "dlq_depth"],
            "properties": {
                "service_id": {"type": "string"},
                "time": {"type": "string"},
                "window_seconds": {"type": "number"},
                "downstreams": {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "required": ["name", "breaker", "calls_per_second", "error_rate", "queue_depth"],
                        "properties": {
                            "name": {"type": "string"},
                            "breaker": {"anyOf": [_ref("Breaker"), {"type": "null"}]},
                            "calls_per_second": {"type": "number"},
                            "error_rate": {"type": "number", "minimum": 0, "maximum": 1},
                            "queue_depth": {"type": ["integer", "null"]},
                        },
                    },
                },
                "outbox": {
                    "anyOf": [
                        {
                            "type": "object",
                            "required": ["pending", "publishing", "dead"],
                            "properties": {
                                "pending": {"type": "integer"},
                                "publishing": {"type": "integer"},
                                "dead": {"type": "integer"},
                            },
                        },
                        {"type": "null"},
                    ]
                },
                "dlq_depth": {"type": ["integer", "null"]},
            },
        },
        "BreakerForced": {
            "type": "object",
            "required": ["downstream", "state", "changed"],
            "properties": {
                "downstream": {"type": "string"},
                "state": {"enum": ["closed", "open", "half_open"]},
                "changed": {"type": "boolean"},
            },
        },
    }


def _health_paths() -> dict[str, Any]:
    def probe(summary: str, description: str) -> dict[str, Any]:
        return {
            "get": {
                "summary": summary,
                "description": description,
                "tags": ["operations"],
                "responses": {
                    "200": _response("pass or warn", _ref("Health"), media_type=HEALTH_JSON),
                    "503": _response("fail (or draining)", _ref("Health"), media_type=HEALTH_JSON),
                },
            }
        }

    return {
        "/health": probe("Health of the daemon and each dependency", "An open breaker is `warn`; 503 on `fail`."),
        "/livez": probe("Liveness", "The event loop is turning; no dependency is checked."),
        "/readyz": probe("Readiness", "RabbitMQ, Redis and MongoDB answer and the daemon is not draining."),
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "tags": ["operations"],
                "responses": {"200": _response("text exposition format", {"type": "string"}, media_type="text/plain")},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This document",
                "tags": ["operations"],
                "responses": {"200": _response("OpenAPI 3.1", {"type": "object"})},
            }
        },
        "/status": {
            "get": {
                "summary": "Status page (HTML; polls /api/status)",
                "tags": ["operations"],
                "responses": {"200": _response("the page", {"type": "string"}, media_type="text/html")},
            }
        },
        "/api/status": {
            "get": {
                "summary": "What the status page shows",
                "tags": ["operations"],
                "responses": {"200": _response("snapshot (computed at most once a second)", _ref("Status"))},
            }
        },
    }


def _command_paths(settings: Settings) -> dict[str, Any]:
    downstreams = sorted(settings.downstreams)
    paths: dict[str, Any] = {
        "/api/commands/{command_id}": {
            "get": {
                "summary": "Status and reply of a command",
                "tags": ["commands"],
                "parameters": [
                    {
                        "name": "command_id",
                        "in": "path",
                        "required": True,
                        "description": "The command's idempotency key.",
                        "schema": {"type": "string", "pattern": _ID_PATTERN},
                    },
                    {
                        "name": "downstream",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "string", "enum": downstreams, "default": "service-a"},
                    },
                    *_CORRELATION_PARAMETERS,
                ],
                "responses": {
                    "200": _response(
                        "the outcome, or `in_flight` while accepted and not finished", _ref("CommandStatus")
                    ),
                    "404": _error("unknown command id or downstream"),
                    "503": _error("MongoDB or Redis unavailable", headers=("Retry-After",)),
                },
            }
        }
    }
    service_a = settings.downstreams.get("service-a")
    if service_a is not None and "create-resource" in service_a.routes:
        key_required = settings.amqp.require_idempotency_key
        reply_or_error = {"anyOf": [_ref("Reply"), _ref("Error")]}
        paths["/api/service-a/resource"] = {
            "post": {
                "summary": "Create a resource on service-a (command service-a.create-resource)",
                "description": (
                    "Validates the body against the route's schema and publishes the command with publisher "
                    "confirms. 202 with a status URL, or, with `Prefer: wait=N`, the reply (the downstream's "
                    "status on success and for its 4xx refusals; 502 unavailable, 504 timeout or expired)."
                ),
                "tags": ["commands"],
                "parameters": [
                    {
                        "name": "Idempotency-Key",
                        "in": "header",
                        "required": key_required,
                        "description": "The command id. Same key + same payload: the stored reply; other payload: "
                        "422; while the first is in flight: 409.",
                        "schema": {"type": "string", "pattern": _ID_PATTERN},
                    },
                    {
                        "name": "Prefer",
                        "in": "header",
                        "required": False,
                        "description": "`wait=N`: wait up to N seconds (capped) for the reply (RFC 7240).",
                        "schema": {"type": "string"},
                    },
                    *_CORRELATION_PARAMETERS,
                ],
                "requestBody": {"required": True, "content": {JSON: {"schema": _ref("CommandBody")}}},
                "responses": {
                    "200": _response("the reply (downstream answered 200)", _ref("Reply"), headers=("Location",)),
                    "201": _response("the reply (downstream answered 201)", _ref("Reply"), headers=("Location",)),
                    "202": _response("accepted; poll status_url", _ref("CommandAccepted"), headers=("Location",)),
                    "400": _error("missing or invalid Idempotency-Key, body not JSON"),
                    "409": _response(
                        "the same key is in flight, or the downstream answered 409",
                        {"anyOf": [_ref("CommandInFlight"), _ref("Reply")]},
                        headers=("Retry-After",),
                    ),
                    "413": _error("body too large"),
                    "415": _error("not application/json"),
                    "422": _response(
                        "schema violation, the key reused with another payload, or the downstream answered 422",
                        {"anyOf": [_ref("CommandConflict"), _ref("Error"), _ref("Reply")]},
                    ),
                    "4XX": _response("the downstream refused the command (its status)", reply_or_error),
                    "502": _response("failed reply: downstream unavailable", _ref("Reply")),
                    "503": _error("RabbitMQ, Redis or MongoDB unavailable", headers=("Retry-After",)),
                    "504": _response("failed reply: timeout or deadline expired", _ref("Reply")),
                },
            }
        }
    service_b = settings.downstreams.get("service-b")
    read_route = service_b.routes.get("get-resource") if service_b is not None else None
    if read_route is not None and len(read_route.path_params) == 1:
        param = read_route.path_params[0]
        id_schema = ((read_route.json_schema or {}).get("properties") or {}).get(param) or {"type": "string"}
        paths["/api/service-b/resource/{resource_id}"] = {
            "get": {
                "summary": "Read a resource from service-b through the resilient client",
                "description": "On failure or an open breaker: the last good copy marked `X-Cache: stale`, "
                "else 503 with Retry-After.",
                "tags": ["reads"],
                "parameters": [
                    {"name": "resource_id", "in": "path", "required": True, "schema": id_schema},
                    *_CORRELATION_PARAMETERS,
                ],
                "responses": {
                    "200": _response("the resource (fresh, or stale when marked)", {}, headers=_STALE_HEADERS),
                    "400": _error("invalid id"),
                    "404": _error("service-b has no such resource"),
                    "502": _error("service-b refused the request"),
                    "503": _error("service-b unavailable and no stale copy", headers=("Retry-After",)),
                },
            }
        }
    return paths


_STALE_HEADERS = ("X-Cache", "Age", "Warning")


def _webhook_paths() -> dict[str, Any]:
    rejected = _ref("WebhookRejected")
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
                    {
                        "name": "service",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": NAME_RE.pattern},
                    },
                    *_CORRELATION_PARAMETERS,
                ],
                "requestBody": {"required": True, "content": {JSON: {"schema": {"type": "object"}}}},
                "responses": {
                    "200": _response("a replay of a recorded delivery: nothing new enqueued", _ref("WebhookAccepted")),
                    "202": _response("recorded in the outbox", _ref("WebhookAccepted")),
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


def _admin_paths() -> dict[str, Any]:
    def force(action: str) -> dict[str, Any]:
        return {
            "post": {
                "summary": f"Force a breaker {action}",
                "tags": ["admin"],
                "security": [{"adminToken": []}],
                "parameters": [
                    {"name": "downstream", "in": "path", "required": True, "schema": {"type": "string"}},
                ],
                "responses": {
                    "200": _response("the breaker's state now", _ref("BreakerForced")),
                    "401": _error("missing or wrong bearer token", headers=("WWW-Authenticate",)),
                    "404": _error("unknown downstream"),
                },
            }
        }

    return {
        "/admin/breakers/{downstream}/open": force("open"),
        "/admin/breakers/{downstream}/close": force("close"),
    }


def build_openapi(settings: Settings, version: str) -> dict[str, Any]:
    route = settings.route("service-a.create-resource")
    command_schema = (route[2].json_schema if route else None) or {}
    admin = settings.admin.token is not None
    components: dict[str, Any] = {
        "schemas": _schemas(settings, command_schema),
        "headers": {
            "XCorrelationId": {"description": "The request's correlation id.", "schema": {"type": "string"}},
            "RetryAfter": {"description": "Seconds.", "schema": {"type": "string", "pattern": "^[0-9]+$"}},
            "Location": {"description": "The command's status URL.", "schema": {"type": "string"}},
            "XCache": {"description": "`stale` on a last good copy.", "schema": {"enum": ["stale"]}},
            "Age": {"description": "Seconds since the copy was fetched.", "schema": {"type": "string"}},
            "Warning": {"description": '`110 - "Response is Stale"`.', "schema": {"type": "string"}},
            "WWWAuthenticate": {"schema": {"type": "string"}},
        },
    }
    if admin:
        components["securitySchemes"] = {"adminToken": {"type": "http", "scheme": "bearer"}}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "s2s-daemon sidecar",
            "version": version,
            "description": "Health, metrics, the command API, read-through reads and signed webhooks.",
        },
        "paths": {
            **_health_paths(),
            **_command_paths(settings),
            **_webhook_paths(),
            **(_admin_paths() if admin else {}),
        },
        "components": components,
    }
