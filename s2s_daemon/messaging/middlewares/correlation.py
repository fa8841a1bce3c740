"""FastStream middleware: bind correlation id, trace context and routing key to every log line of a delivery.

Outermost in the chain, so FastStream's own lines for the message carry them too. The correlation id is what
the message brings (``message_correlation``), else a new one, generated here once per delivery and stored on
the FastStream message itself (``msg.correlation_id``), where the command pipeline finds it.
"""

from __future__ import annotations

from typing import Any

import structlog
from faststream import BaseMiddleware

from s2s_daemon.messaging._headers import message_correlation
from s2s_daemon.observability.correlation import new_correlation_id

__all__ = ["CorrelationMiddleware"]


class CorrelationMiddleware(BaseMiddleware):
    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        raw = msg.raw_message
        # the log lines need the traceparent only: the command's parse step reads the tracestate
        correlation_id, trace = message_correlation(raw, with_tracestate=False)
        if correlation_id is None:
            correlation_id = new_correlation_id()
        msg.correlation_id = correlation_id
        with structlog.contextvars.bound_contextvars(
            correlation_id=correlation_id,
            traceparent=trace.header if trace else None,
            routing_key=getattr(raw, "routing_key", None),
        ):
            return await call_next(msg)
