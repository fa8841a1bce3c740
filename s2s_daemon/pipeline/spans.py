"""Span attributes of the pipeline's work, per the OpenTelemetry semantic conventions (messaging, database).

Built only when tracing is on (callers check ``Tracing.enabled``, or pass them to a span that records nothing).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, Protocol

from s2s_daemon.observability.tracing import AttributeValue, Span, SpanKind, Tracing

__all__ = ["consumer_attributes", "outbox_span", "redis_attributes"]


class _Namespaced(Protocol):
    @property
    def namespace(self) -> tuple[str, str]: ...


Attributes = dict[str, AttributeValue | None]


def consumer_attributes(raw: Any, routing_key: str) -> Attributes:
    """A delivered command (``process`` of the consumer span)."""
    return {
        "messaging.system": "rabbitmq",
        "messaging.operation.type": "process",
        "messaging.operation.name": "process",
        "messaging.destination.name": raw.exchange or None,
        "messaging.rabbitmq.destination.routing_key": routing_key,
        "messaging.message.id": raw.message_id,
        "messaging.message.conversation_id": raw.correlation_id,
        "messaging.message.body.size": len(raw.body),
        "messaging.rabbitmq.message.delivery_tag": raw.delivery_tag,
    }


def redis_attributes(operation: str, script: str) -> Attributes:
    """One Redis operation on the idempotency records: ``script``, a Lua script run with ``operation``."""
    return {"db.system.name": "redis", "db.operation.name": operation, "s2s.idempotency.operation": script}


def outbox_span(tracing: Tracing, outbox: Any, operation: str) -> AbstractContextManager[Span]:
    """The client span of one MongoDB operation on the outbox collection (``outbox``: an ``OutboxWriter``)."""
    if not tracing.enabled:
        return tracing.span(operation)
    writer: _Namespaced = outbox
    database, collection = writer.namespace
    attributes: Attributes = {
        "db.system.name": "mongodb",
        "db.operation.name": operation,
        "db.namespace": database,
        "db.collection.name": collection,
    }
    return tracing.span(f"{operation} {collection}", SpanKind.CLIENT, attributes)
