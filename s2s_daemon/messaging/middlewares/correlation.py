"""FastStream middleware: bind correlation id, trace context and routing key to every log line of a delivery.

Outermost in the chain, so FastStream's own lines for the message carry them too. The correlation id is
the AMQP ``correlation_id``, else the ``x-correlation-id`` header, else the trace id of ``traceparent``,
else a new one; the command pipeline reads it back from the bound context so it is generated only once.
"""

from __future__ import annotations

from typing import Any

import structlog
from faststream import BaseMiddleware

from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability.correlation import TraceContext, clean_id, new_correlation_id


def correlation_fields(raw: Any) -> dict[str, Any]:
    headers = getattr(raw, "headers", None) or {}
    trace = TraceContext.parse(_as_str(headers.get(c.H_TRACEPARENT)))
    correlation_id = (
        clean_id(getattr(raw, "correlation_id", None))
        or clean_id(headers.get(c.H_CORRELATION_ID))
        or (trace.trace_id if trace else None)
        or new_correlation_id()
    )
    return {
        "correlation_id": correlation_id,
        "traceparent": trace.header if trace else None,
        "routing_key": getattr(raw, "routing_key", None),
    }


class CorrelationMiddleware(BaseMiddleware):
    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        with structlog.contextvars.bound_contextvars(**correlation_fields(msg.raw_message)):
            return await call_next(msg)


def _as_str(value: Any) -> str | None:
    if isinstance(value, bytes):
        return value.decode("ascii", errors="replace")
    return value if isinstance(value, str) else None
