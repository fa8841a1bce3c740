"""Correlation ids and W3C traceparent handling."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import structlog
from hypothesis import given
from hypothesis import strategies as st

from s2s_daemon.messaging import header_text, message_correlation
from s2s_daemon.messaging.middlewares import CorrelationMiddleware
from s2s_daemon.observability.correlation import TraceContext, clean_id
from s2s_daemon.observability.logging import redact_secrets, redact_url
from s2s_daemon.pipeline.parse import delivery_correlation_id

VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def test_traceparent_roundtrip_and_child() -> None:
    """A valid traceparent parses; a child keeps the trace id with a new span id."""
    ctx = TraceContext.parse(VALID)
    assert ctx is not None
    assert ctx.header == VALID
    child = ctx.child()
    assert child.trace_id == ctx.trace_id
    assert child.parent_id != ctx.parent_id


@given(st.text(max_size=80))
def test_traceparent_parse_never_raises(text: str) -> None:
    """Arbitrary header text parses to a context or None, never an exception."""
    result = TraceContext.parse(text)
    assert result is None or len(result.trace_id) == 32


def test_invalid_traceparents_are_ignored() -> None:
    """All-zero ids and version ff are invalid per the W3C spec."""
    assert TraceContext.parse("00-" + "0" * 32 + "-00f067aa0ba902b7-01") is None
    assert TraceContext.parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01") is None
    assert TraceContext.parse("") is None


def test_correlation_precedence() -> None:
    """AMQP correlation_id, then x-correlation-id header, then the trace id, else none (the caller makes one)."""
    raw = SimpleNamespace(correlation_id="amqp-c", headers={"x-correlation-id": "hdr"}, routing_key="a.b")
    assert message_correlation(raw) == ("amqp-c", None)
    raw = SimpleNamespace(correlation_id=None, headers={"x-correlation-id": b"hdr"}, routing_key="a.b")
    assert message_correlation(raw)[0] == "hdr"
    raw = SimpleNamespace(correlation_id=None, headers={"traceparent": VALID.encode()}, routing_key="a.b")
    found, trace = message_correlation(raw)
    assert found == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert trace is not None
    assert trace.header == VALID
    raw = SimpleNamespace(correlation_id="bad id with spaces", headers={}, routing_key="a.b")
    assert message_correlation(raw) == (None, None)


def test_clean_id_refuses_junk() -> None:
    """Ids must be printable ASCII without spaces and at most 200 characters."""
    assert clean_id("abc-123") == "abc-123"
    assert clean_id(header_text(b"abc")) == "abc"
    assert clean_id("a b") is None
    assert clean_id("x" * 201) is None
    assert clean_id(header_text(b"\xff")) is None
    assert clean_id(b"abc") is None  # bytes are decoded by the AMQP header codec first
    assert clean_id(42) is None


def test_secrets_are_redacted() -> None:
    """Secret-looking keys are masked and URL passwords hidden."""
    assert redact_url("amqp://guest:guest@host:5672/") == "amqp://guest:***@host:5672/"
    event = redact_secrets(None, "info", {"password": "p", "url": "redis://u:pw@h/0", "n": 1})
    assert event == {"password": "***", "url": "redis://u:***@h/0", "n": 1}


async def test_the_middleware_generates_one_id_and_the_pipeline_reads_it_from_the_message() -> None:
    """A message with no usable id gets one new id: bound for the delivery's log lines and stored on the message,
    where the pipeline finds the same one; the log context is restored afterwards."""
    raw = SimpleNamespace(correlation_id="bad id", headers={"traceparent": VALID}, routing_key="svc.do")
    msg = SimpleNamespace(raw_message=raw, correlation_id="bad id")
    seen: dict[str, object] = {}

    async def handler(m: object) -> None:
        seen.update(structlog.contextvars.get_contextvars())
        seen["pipeline"] = delivery_correlation_id(cast("Any", m))

    await CorrelationMiddleware(msg, context=cast("Any", None)).consume_scope(handler, msg)
    assert len(str(seen["correlation_id"])) == 32
    assert seen["pipeline"] == seen["correlation_id"] == msg.correlation_id
    assert seen["traceparent"] == VALID
    assert "correlation_id" not in structlog.contextvars.get_contextvars()
