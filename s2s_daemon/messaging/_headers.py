"""The AMQP header codec: header and property values as text and integers, the retry state a command carries
across delayed redeliveries, its deadline, and its correlation id and trace context.

AMQP field tables hand back strings as ``bytes`` or ``str`` depending on the producer's client library; every
reader goes through ``header_text``/``header_int`` here. Values we write are integers only (times in epoch
milliseconds): pamqp sends Python floats as 32-bit floats.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from s2s_daemon.errors import CommandRejected, DeadLetterReason
from s2s_daemon.messaging import contracts as c
from s2s_daemon.observability.correlation import TraceContext, clean_id

__all__ = [
    "RetryState",
    "header_int",
    "header_text",
    "message_correlation",
    "read_deadline",
]


def header_text(value: object) -> str | None:
    """A header or property value as text: bytes decoded as UTF-8 (bad bytes replaced); None when absent,
    empty or not text."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) and value else None


def header_int(value: object) -> int | None:
    """A header value as an integer (integers, or text of one); None otherwise (booleans included)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str | bytes):
        try:
            return int(value)
        except ValueError:
            return None
    return None


def _at_least(value: object, floor: int) -> int:
    number = header_int(value)
    return floor if number is None or number < floor else number


@dataclass(frozen=True, slots=True)
class RetryState:
    """How far a command got before this delivery, carried in its headers through the delay queues."""

    attempt: int = 1  # deliveries through our delay queues, 1 for the first (``x-s2s-attempt``)
    calls: int = 0  # downstream attempts made by earlier deliveries (``x-s2s-calls``)
    first_call_at: int | None = None  # epoch ms of the first downstream attempt (``x-s2s-first-call-at``)

    @classmethod
    def from_headers(cls, headers: Mapping[str, Any] | None) -> RetryState:
        if not headers:
            return _FIRST
        attempt, calls, first = headers.get(c.H_ATTEMPT), headers.get(c.H_CALLS), headers.get(c.H_FIRST_CALL_AT)
        if attempt is None and calls is None and first is None:  # a first delivery: no allocation per command
            return _FIRST
        return cls(_at_least(attempt, 1), _at_least(calls, 0), _at_least(first, 0) or None)

    def redelivered(self, calls: int | None = None, first_call_at: int | None = None) -> RetryState:
        """The state the next delivery starts from; ``calls``/``first_call_at`` when this one called downstream."""
        if calls is None:
            return RetryState(self.attempt + 1, self.calls, self.first_call_at)
        return RetryState(self.attempt + 1, calls, first_call_at)

    def to_headers(self) -> dict[str, int]:
        """The headers to set on the next delivery's copy (a header that would say 0 or nothing is left out)."""
        headers = {c.H_ATTEMPT: self.attempt}
        if self.calls:
            headers[c.H_CALLS] = self.calls
        if self.first_call_at is not None:
            headers[c.H_FIRST_CALL_AT] = self.first_call_at
        return headers


_FIRST = RetryState()


def read_deadline(value: object) -> int | None:
    """``x-deadline``: epoch milliseconds (integer) or an ISO-8601 timestamp with a zone; None when absent."""
    if value is None:
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    text = header_text(value)
    if text is not None:
        text = text.strip()
        if text.isascii() and text.isdigit():  # str.isdigit() alone accepts "²", which int() refuses
            return int(text)
        try:
            when = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is not None:
                return int(when.timestamp() * 1000)
    raise CommandRejected(
        DeadLetterReason.INVALID_HEADER,
        f"x-deadline {text if text is not None else value!r}: use epoch milliseconds or ISO-8601 with a zone",
    )


def message_correlation(raw: Any, *, with_tracestate: bool = True) -> tuple[str | None, TraceContext | None]:
    """The correlation id a message brings, and its trace context.

    The id is the AMQP ``correlation_id``, else the ``x-correlation-id`` header, else the trace id of
    ``traceparent``; None when it brings none usable (the caller generates one, once per delivery).
    ``with_tracestate=False`` leaves the ``tracestate`` unread, for callers that only log the context or want
    the id (the command's parse step reads it, once per delivery).
    """
    headers = raw.headers or {}
    tracestate = header_text(headers.get(c.H_TRACESTATE)) if with_tracestate else None
    trace = TraceContext.parse(header_text(headers.get(c.H_TRACEPARENT)), tracestate)
    correlation_id = (
        clean_id(header_text(raw.correlation_id))
        or clean_id(header_text(headers.get(c.H_CORRELATION_ID)))
        or (trace.trace_id if trace else None)
    )
    return correlation_id, trace
