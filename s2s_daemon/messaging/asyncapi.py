"""The AsyncAPI 3.0 document of our message contracts, assembled from the settings (``s2s-daemon docs asyncapi``).

FastStream can generate a document from the broker, but ours would describe raw-byte subscribers (the decoder
leaves bodies alone so the pipeline can dead-letter bad JSON) and nothing of the replies, events and dead letters
published by the relay and the pipeline. So it is assembled here, from the same names the daemon uses:

* one channel per configured route on ``<prefix>.commands`` (topic, routing key ``<downstream>.<action>``) with
  the route's JSON Schema as payload and the command headers; the daemon *receives* them and replies;
* the reply channel (the producer's ``reply_to`` queue) with :class:`~s2s_daemon.messaging.contracts.Reply`;
* ``<prefix>.events`` (topic): ``<routing key>.succeeded|failed`` per route and ``webhook.<service>.{type}`` per
  configured webhook sender, CloudEvents 1.0 envelopes;
* ``<prefix>.dlq`` (via the fanout ``<prefix>.dlx``): dead letters with their ``x-s2s-*`` headers.

Validated in the tests by ``@asyncapi/parser`` (npm).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

from s2s_daemon.errors import DeadLetterReason
from s2s_daemon.messaging import contracts as c
from s2s_daemon.messaging.topology import Topology
from s2s_daemon.settings import Settings

__all__ = ["ASYNCAPI_VERSION", "build_asyncapi"]

ASYNCAPI_VERSION = "3.0.0"
_AMQP_BINDING = "0.3.0"
_SCHEMAS = "#/components/schemas/"
_ID = {"type": "string", "minLength": 1, "maxLength": 200, "pattern": r"^[\x21-\x7e]+$"}


def build_asyncapi(settings: Settings, version: str = "0+unknown") -> dict[str, Any]:
    """The whole document, as plain JSON-ready data."""
    topology = Topology.from_settings(settings.amqp, tuple(settings.downstreams))
    nodes = settings.rabbitmq_nodes
    vhost = _vhost(nodes[0])
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {
        "reply": _reply_message(),
        "deadLetter": _dead_letter_message(),
    }

    channels["replies"] = {
        "address": None,
        "title": "Replies",
        "description": "The queue the producer named in the command's AMQP `reply_to` property (usually exclusive). "
        "Replies keep the command's `correlation_id`, are persistent and published with publisher confirms.",
        "messages": {"reply": {"$ref": "#/components/messages/reply"}},
        "bindings": {"amqp": {"is": "queue", "queue": {"name": "{reply_to}", "vhost": vhost}, **_bv()}},
    }
    for downstream, ds in settings.downstreams.items():
        for action, route in ds.routes.items():
            routing_key = f"{downstream}.{action}"
            cid = _id(routing_key)
            messages[f"{cid}Command"] = _command_message(routing_key, route.json_schema, route.method, route.path)
            channels[f"{cid}Commands"] = {
                "address": routing_key,
                "title": f"Commands {routing_key}",
                "description": f"Published to the `{topology.commands_exchange_name}` topic exchange with routing "
                f"key `{routing_key}`; consumed from the quorum queue `{topology.command_queue_name(downstream)}` "
                f"and turned into `{route.method} {ds.base_url}{route.path}`.",
                "messages": {"command": {"$ref": f"#/components/messages/{cid}Command"}},
                "bindings": {"amqp": _exchange_binding(topology.commands_exchange_name, vhost)},
            }
            operations[f"handle{_pascal(cid)}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{cid}Commands"},
                "summary": f"The daemon calls {downstream} for `{routing_key}` and answers on `reply_to`.",
                "messages": [{"$ref": f"#/channels/{cid}Commands/messages/command"}],
                "reply": {
                    "channel": {"$ref": "#/channels/replies"},
                    "messages": [{"$ref": "#/channels/replies/messages/reply"}],
                },
                "bindings": {"amqp": {"ack": True, **_bv()}},
            }
            for status in ("succeeded", "failed"):
                event_key = c.event_routing_key(routing_key, status)
                eid = _id(event_key)
                messages[f"{eid}Event"] = _event_message(event_key, {"$ref": f"{_SCHEMAS}Reply"})
                channels[f"{eid}Events"] = {
                    "address": event_key,
                    "title": f"Events {event_key}",
                    "description": f"On the `{topology.events_exchange_name}` topic exchange, after the outcome of "
                    f"a `{routing_key}` command was recorded in the outbox. The CloudEvent `id` is stable per "
                    "command: consumers can deduplicate a re-published event.",
                    "messages": {"event": {"$ref": f"#/components/messages/{eid}Event"}},
                    "bindings": {"amqp": _exchange_binding(topology.events_exchange_name, vhost)},
                }
                operations[f"publish{_pascal(eid)}"] = {
                    "action": "send",
                    "channel": {"$ref": f"#/channels/{eid}Events"},
                    "messages": [{"$ref": f"#/channels/{eid}Events/messages/event"}],
                    "bindings": {"amqp": {"deliveryMode": 2, "mandatory": False, **_bv()}},
                }
    for service in settings.webhooks:
        wid = _id(f"webhook.{service}")
        messages[f"{wid}Event"] = _event_message(
            f"webhook.{service}.<type>", {"type": "object", "description": "The verified webhook body."}
        )
        channels[f"{wid}Events"] = {
            "address": f"webhook.{service}.{{type}}",
            "title": f"Webhook events from {service}",
            "description": f"Deliveries to `POST /api/webhooks/{service}` that passed signature and timestamp "
            f"checks, once per delivery id, on the `{topology.events_exchange_name}` topic exchange.",
            "parameters": {"type": {"description": "The sender's event type, e.g. `invoice.paid`."}},
            "messages": {"event": {"$ref": f"#/components/messages/{wid}Event"}},
            "bindings": {"amqp": _exchange_binding(topology.events_exchange_name, vhost)},
        }
        operations[f"publish{_pascal(wid)}"] = {
            "action": "send",
            "channel": {"$ref": f"#/channels/{wid}Events"},
            "messages": [{"$ref": f"#/channels/{wid}Events/messages/event"}],
        }
    channels["deadLetters"] = {
        "address": topology.dlq_name,
        "title": "Dead letters",
        "description": f"Commands that can never succeed, copied unchanged through the `{topology.dlx_name}` fanout "
        f"exchange (or dead-lettered there by RabbitMQ at the delivery limit). Inspect and repair them with "
        "`s2s-daemon dlq list|show|replay|purge`.",
        "messages": {"deadLetter": {"$ref": "#/components/messages/deadLetter"}},
        "bindings": {
            "amqp": {
                "is": "queue",
                "queue": {
                    "name": topology.dlq_name,
                    "durable": True,
                    "exclusive": False,
                    "autoDelete": False,
                    "vhost": vhost,
                },
                **_bv(),
            }
        },
    }
    operations["deadLetter"] = {
        "action": "send",
        "channel": {"$ref": "#/channels/deadLetters"},
        "summary": "A command the daemon rejected (reason in x-s2s-reason) is copied here and acked.",
        "messages": [{"$ref": "#/channels/deadLetters/messages/deadLetter"}],
    }

    return {
        "asyncapi": ASYNCAPI_VERSION,
        "info": {
            "title": settings.service_name,
            "version": version,
            "description": "Commands in over RabbitMQ, resilient HTTP calls downstream, replies and CloudEvents "
            "out through a MongoDB outbox. Every command needs an idempotency key (AMQP `message_id` or the "
            "`idempotency-key` header); the same key with the same payload is applied at most once.",
        },
        "defaultContentType": "application/json",
        # one server per cluster node: "rabbitmq", then "rabbitmq-2", "rabbitmq-3"...
        "servers": {("rabbitmq" if i == 1 else f"rabbitmq-{i}"): _server(url) for i, url in enumerate(nodes, 1)},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": _schemas()},
    }


# messages ----------------------------------------------------------------------------------------------
def _command_message(routing_key: str, schema: dict[str, Any] | None, method: str, path: str) -> dict[str, Any]:
    payload = {k: v for k, v in (schema or {}).items() if k != "$schema"} or {
        "description": "Any JSON value (the route declares no schema)."
    }
    return {
        "name": f"{routing_key}.command",
        "title": f"Command {routing_key}",
        "summary": f"Becomes {method} {path} on the downstream, with the idempotency key as Idempotency-Key.",
        "description": "AMQP properties: `message_id` is the idempotency key unless the `idempotency-key` header "
        "is set; `correlation_id` is kept end to end (else `x-correlation-id`, else the trace id, else generated); "
        "`reply_to` names the queue for the reply. A command without a key is dead-lettered "
        "(`missing-idempotency-key`); one that fails its schema too (`schema-violation`).",
        "contentType": "application/json",
        "headers": {"$ref": f"{_SCHEMAS}CommandHeaders"},
        "payload": payload,
        "correlationId": {"location": "$message.header#/x-correlation-id"},
        "bindings": {"amqp": {"contentEncoding": "identity", **_bv()}},
    }


def _reply_message() -> dict[str, Any]:
    return {
        "name": "reply",
        "title": "Reply",
        "summary": "The outcome of a command: succeeded with the downstream result, or failed with a typed error.",
        "contentType": "application/json",
        "headers": {"$ref": f"{_SCHEMAS}ReplyHeaders"},
        "payload": {"$ref": f"{_SCHEMAS}Reply"},
        "correlationId": {"location": "$message.header#/x-correlation-id"},
    }


def _event_message(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": f"{type_}.event",
        "title": f"CloudEvent {type_}",
        "contentType": "application/cloudevents+json",
        "headers": {"$ref": f"{_SCHEMAS}ReplyHeaders"},
        "payload": {"allOf": [{"$ref": f"{_SCHEMAS}CloudEvent"}, {"properties": {"data": data}}]},
        "correlationId": {"location": "$message.header#/x-correlation-id"},
        "bindings": {"amqp": {"messageType": type_, **_bv()}},
    }


def _dead_letter_message() -> dict[str, Any]:
    return {
        "name": "deadLetter",
        "title": "Dead letter",
        "summary": "The original command (body, properties and headers) plus why it was dead-lettered.",
        "headers": {"$ref": f"{_SCHEMAS}DeadLetterHeaders"},
        "payload": {"description": "The original body, unchanged (may not even be JSON)."},
    }


# schemas -----------------------------------------------------------------------------------------------
def _schemas() -> dict[str, Any]:
    reply = c.Reply.model_json_schema(ref_template=_SCHEMAS + "{model}")
    schemas: dict[str, Any] = dict(reply.pop("$defs", {}))
    schemas["Reply"] = reply
    schemas["CommandHeaders"] = {
        "type": "object",
        "properties": {
            c.H_IDEMPOTENCY_KEY: {**_ID, "description": "The idempotency key; wins over the AMQP message_id."},
            c.H_CORRELATION_ID: {**_ID, "description": "Correlation id when the AMQP correlation_id is not set."},
            c.H_TRACEPARENT: {
                "type": "string",
                "pattern": "^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.*)?$",
                "description": "W3C trace context (Level 1); a child span id is sent downstream. An invalid one "
                "(uppercase hex, all-zero ids, version ff) starts a new trace; a higher version is read by the "
                "version-00 rules.",
            },
            c.H_TRACESTATE: {
                "type": "string",
                "description": "W3C tracestate, forwarded unchanged with a valid traceparent; an invalid one "
                "(more than 32 list-members, a malformed or repeated key) is dropped.",
            },
            c.H_DEADLINE: {
                "oneOf": [
                    {"type": "integer", "description": "Epoch milliseconds."},
                    {"type": "string", "format": "date-time", "description": "ISO-8601 with a zone."},
                ],
                "description": "After this moment the command is answered failed/expired without a call.",
            },
            "x-s2s-replayed-at": {"type": "integer", "description": "Set by `dlq replay`: epoch ms of the replay."},
            "x-s2s-replay-count": {"type": "integer", "description": "Set by `dlq replay`: times replayed."},
            "x-s2s-replay-of": {"type": "string", "description": "Set by an edited `dlq replay`: the original key."},
        },
    }
    schemas["ReplyHeaders"] = {
        "type": "object",
        "properties": {
            c.H_CORRELATION_ID: {"type": "string", "description": "The command's correlation id."},
            c.H_TRACEPARENT: {"type": "string", "description": "W3C trace context of the downstream call."},
            c.H_TRACESTATE: {"type": "string", "description": "The command's tracestate, when it had one."},
        },
    }
    schemas["DeadLetterHeaders"] = {
        "type": "object",
        "properties": {
            c.H_REASON: {"type": "string", "enum": [r.value for r in DeadLetterReason], "description": "Why."},
            c.H_DETAIL: {"type": "string", "maxLength": 500, "description": "What exactly, for a human."},
            c.H_ROUTING_KEY: {"type": "string", "description": "The command's routing key."},
            c.H_DEAD_AT: {"type": "integer", "description": "Epoch milliseconds of the dead-lettering."},
            c.H_SOURCE_QUEUE: {"type": "string", "description": "The queue it was consumed from."},
            c.H_ATTEMPT: {"type": "integer", "description": "Delivery attempt (delay-queue redeliveries)."},
            c.H_SUBSCRIPTION: {
                "type": "string",
                "description": "On a webhook delivery (an event): its subscription; `dlq replay` sends it back there.",
            },
            "x-first-death-reason": {
                "type": "string",
                "description": "Set by RabbitMQ instead of x-s2s-reason, e.g. `delivery_limit`.",
            },
            "x-death": {"type": "array", "description": "RabbitMQ's dead-lettering history."},
        },
    }
    schemas["CloudEvent"] = {
        "type": "object",
        "description": "CloudEvents 1.0, structured mode.",
        "required": ["specversion", "id", "source", "type", "time", "datacontenttype", "data"],
        "properties": {
            "specversion": {"type": "string", "const": "1.0"},
            "id": {"type": "string", "description": "Stable per command or webhook delivery."},
            "source": {"type": "string", "format": "uri-reference", "example": "/s2s-daemon/billing"},
            "type": {"type": "string", "description": "The routing key, e.g. billing.create-invoice.succeeded."},
            "subject": {"type": "string", "description": "The idempotency key or webhook delivery id."},
            "time": {"type": "string", "format": "date-time"},
            "datacontenttype": {"type": "string", "const": "application/json"},
            "data": {},
        },
    }
    return schemas


# helpers -----------------------------------------------------------------------------------------------
def _server(url: str) -> dict[str, Any]:
    parts = urlsplit(url)
    return {
        "host": f"{parts.hostname or '127.0.0.1'}:{parts.port or (5671 if parts.scheme == 'amqps' else 5672)}",
        "protocol": "amqps" if parts.scheme == "amqps" else "amqp",
        "protocolVersion": "0.9.1",
        "pathname": "/" + (unquote(parts.path[1:]) if len(parts.path) > 1 else ""),
        "description": "RabbitMQ (3.10+, quorum queues). Credentials are not part of this document.",
    }


def _vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def _exchange_binding(name: str, vhost: str) -> dict[str, Any]:
    exchange = {"name": name, "type": "topic", "durable": True, "autoDelete": False, "vhost": vhost}
    return {"is": "routingKey", "exchange": exchange, **_bv()}


def _bv() -> dict[str, str]:
    return {"bindingVersion": _AMQP_BINDING}


def _id(dotted: str) -> str:
    """``billing.create-invoice`` -> ``billingCreateInvoice`` (component keys allow [A-Za-z0-9._-])."""
    words = [w for w in dotted.replace("-", ".").split(".") if w]
    return words[0] + "".join(w[:1].upper() + w[1:] for w in words[1:])


def _pascal(ident: str) -> str:
    return ident[:1].upper() + ident[1:]
