"""Correlation ids and W3C Trace Context (traceparent, tracestate) handling."""

from __future__ import annotations

import uuid
from types import SimpleNamespace
from typing import Any, cast

import pytest
import structlog
from hypothesis import given
from hypothesis import strategies as st
from starlette.datastructures import Headers

from s2s_daemon.http.correlation import RequestCorrelation
from s2s_daemon.messaging import header_text, message_correlation
from s2s_daemon.messaging.middlewares import CorrelationMiddleware
from s2s_daemon.observability.correlation import TraceContext, clean_id, new_correlation_id
from s2s_daemon.observability.logging import redact_secrets, redact_url
from s2s_daemon.pipeline.parse import delivery_correlation_id

# The examples of W3C Trace Context Level 1 (sections 3.2 and 3.3).
VALID = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
NOT_SAMPLED = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00"
TRACE_ID, PARENT_ID = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
TRACESTATE = "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"


@pytest.mark.parametrize(("header", "sampled"), [(VALID, True), (NOT_SAMPLED, False)])
def test_a_valid_traceparent_round_trips_and_its_child_keeps_the_sampled_flag(header: str, sampled: bool) -> None:
    """A valid version-00 traceparent parses and prints back the same; a child keeps the trace id and the
    sampled flag with a new span id."""
    ctx = TraceContext.parse(header)
    assert ctx is not None
    assert (ctx.trace_id, ctx.parent_id, ctx.sampled) == (TRACE_ID, PARENT_ID, sampled)
    assert ctx.header == header
    child = ctx.child()
    assert (child.trace_id, child.sampled) == (TRACE_ID, sampled)
    assert child.parent_id != ctx.parent_id


@pytest.mark.parametrize(
    "header",
    [
        VALID.upper(),  # uppercase hex is not HEXDIGLC: invalid, not lowercased
        f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID.upper()}-01",
        f"00-{TRACE_ID}-{PARENT_ID}-0A",
        f"00-{'0' * 32}-{PARENT_ID}-01",  # all-zero trace id
        f"00-{TRACE_ID}-{'0' * 16}-01",  # all-zero parent id
        f"ff-{TRACE_ID}-{PARENT_ID}-01",  # version ff is forbidden
        f"ff-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like",
        f"00-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like",  # version 00 is exactly 55 characters
        f"00-{TRACE_ID}-{PARENT_ID}-01-",
        f"cc-{TRACE_ID}-{PARENT_ID}-01.what-the-future-will-be-like",  # a higher version, but no '-' after 55
        f"cc-{TRACE_ID}-{PARENT_ID}-01what",
        f"cc-{TRACE_ID}-{PARENT_ID}-1",  # shorter than 55
        f"0-{TRACE_ID}-{PARENT_ID}-01",
        f"00-{TRACE_ID}-{PARENT_ID}",
        f"00_{TRACE_ID}_{PARENT_ID}_01",
        f"00-{TRACE_ID}-{PARENT_ID}-0\u0661",  # a non-ASCII digit
        "00-garbage",
        "",
    ],
)
def test_an_invalid_traceparent_starts_a_new_trace(header: str) -> None:
    """Uppercase hex, all-zero ids, version ff and malformed values are invalid: parse gives None."""
    assert TraceContext.parse(header, TRACESTATE) is None


@pytest.mark.parametrize(
    ("header", "flags"),
    [
        (f"cc-{TRACE_ID}-{PARENT_ID}-01-what-the-future-will-be-like", "01"),
        (f"01-{TRACE_ID}-{PARENT_ID}-09", "01"),  # unknown flags dropped: version 00 defines the sampled bit only
        (f"fe-{TRACE_ID}-{PARENT_ID}-02-", "00"),
    ],
)
def test_a_higher_version_is_read_by_the_version_00_rules(header: str, flags: str) -> None:
    """A higher version (not ff) is parsed on its first 55 characters when what follows is empty or starts
    with '-', and is forwarded as version 00."""
    ctx = TraceContext.parse(header)
    assert ctx is not None
    assert ctx.header == f"00-{TRACE_ID}-{PARENT_ID}-{flags}"


def test_whitespace_around_a_traceparent_is_allowed() -> None:
    """Optional whitespace (spaces, tabs) around the header value does not invalidate it."""
    ctx = TraceContext.parse(f" \t{VALID}\t ")
    assert ctx is not None
    assert ctx.header == VALID


@pytest.mark.parametrize(
    "tracestate",
    [
        TRACESTATE,
        "congo=t61rcWkgMzE",
        "rojo=00f067aa0ba902b7 , congo=t61rcWkgMzE,,",  # whitespace and empty members are allowed
        "fw529a3039@dt=1,t-1/x*_=a b",  # a multi-tenant key; a value may hold a space
        ",".join(f"k{i}=v{i}" for i in range(32)),
    ],
)
def test_a_valid_tracestate_is_kept_as_received(tracestate: str) -> None:
    """A valid tracestate rides with the context unchanged, into its child and the headers to forward."""
    ctx = TraceContext.parse(VALID, tracestate)
    assert ctx is not None
    assert ctx.headers() == {"traceparent": VALID, "tracestate": tracestate}
    child = ctx.child()
    assert child.headers() == {"traceparent": child.header, "tracestate": tracestate}


@pytest.mark.parametrize(
    "tracestate",
    [
        ",".join(f"k{i}=v{i}" for i in range(33)),  # more than 32 list-members
        "rojo=1,rojo=2",  # a key twice
        "Rojo=1",  # keys are lowercase
        "rojo",
        "rojo=",
        "rojo=a,b",
        "rojo=a=b",
        "rojo=caf\u00e9",  # values are printable ASCII
        "rojo=a\tb",
        f"{'k' * 257}=1",  # keys are at most 256 characters
        "t@toolongsystemid=1",
        "=1",
        "",
        " , ",  # no member at all: nothing to forward
    ],
)
def test_an_invalid_tracestate_is_dropped_and_the_traceparent_kept(tracestate: str) -> None:
    """An invalid (or empty) tracestate is dropped alone: the traceparent still continues the trace."""
    ctx = TraceContext.parse(VALID, tracestate)
    assert ctx is not None
    assert ctx.header == VALID
    assert ctx.tracestate is None
    assert ctx.headers() == {"traceparent": VALID}


def test_a_new_trace_has_no_tracestate() -> None:
    """A new trace is sampled and carries no tracestate."""
    ctx = TraceContext.new()
    assert ctx.sampled
    assert ctx.headers() == {"traceparent": ctx.header}
    assert TraceContext.parse(ctx.header) == ctx


_hex = st.sampled_from("0123456789abcdef")
_lc = st.sampled_from("abcdefghijklmnopqrstuvwxyz")
_key_chars = st.sampled_from("abcdefghijklmnopqrstuvwxyz0123456789_-*/")
_value_chars = st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters=",=")
_keys = st.builds(lambda first, rest: first + rest, _lc, st.text(_key_chars, max_size=20))
_values = st.text(_value_chars, min_size=1, max_size=20).filter(lambda v: not v.endswith(" "))


@given(
    trace_id=st.text(_hex, min_size=32, max_size=32).filter(lambda t: t != "0" * 32),
    parent_id=st.text(_hex, min_size=16, max_size=16).filter(lambda p: p != "0" * 16),
    flags=st.text(_hex, min_size=2, max_size=2),
    members=st.dictionaries(_keys, _values, max_size=32),
)
def test_valid_headers_round_trip(trace_id: str, parent_id: str, flags: str, members: dict[str, str]) -> None:
    """Any valid traceparent and tracestate parse and print back unchanged."""
    traceparent = f"00-{trace_id}-{parent_id}-{flags}"
    tracestate = ",".join(f"{k}={v}" for k, v in members.items())
    ctx = TraceContext.parse(traceparent, tracestate)
    assert ctx is not None
    assert ctx.headers() == (
        {"traceparent": traceparent, "tracestate": tracestate} if members else {"traceparent": traceparent}
    )


@given(st.text(max_size=80), st.one_of(st.none(), st.text(max_size=80)))
def test_parse_never_raises(traceparent: str, tracestate: str | None) -> None:
    """Arbitrary header text parses to a valid context or None, never an exception."""
    ctx = TraceContext.parse(traceparent, tracestate)
    if ctx is not None:
        assert TraceContext.parse(ctx.header) == TraceContext(ctx.trace_id, ctx.parent_id, ctx.flags)
        assert ctx.tracestate is None or ctx.tracestate == tracestate


def test_the_amqp_headers_bring_the_tracestate_unless_told_not_to_read_it() -> None:
    """The AMQP codec reads traceparent and tracestate (bytes or text); the log middleware leaves the
    tracestate unread."""
    raw = SimpleNamespace(correlation_id=None, headers={"traceparent": VALID, "tracestate": TRACESTATE.encode()})
    _, trace = message_correlation(raw)
    assert trace is not None
    assert trace.headers() == {"traceparent": VALID, "tracestate": TRACESTATE}
    _, untold = message_correlation(raw, with_tracestate=False)
    assert untold is not None
    assert untold.tracestate is None


def test_http_headers_give_one_trace_context() -> None:
    """Two traceparent headers are invalid (a new trace); several tracestate headers are one list."""
    both = Headers(raw=[(b"traceparent", VALID.encode()), (b"tracestate", b"rojo=1"), (b"tracestate", b"congo=2")])
    trace = RequestCorrelation.from_headers(both).trace
    assert trace.headers() == {"traceparent": VALID, "tracestate": "rojo=1,congo=2"}
    twice = Headers(raw=[(b"traceparent", VALID.encode()), (b"traceparent", NOT_SAMPLED.encode())])
    fresh = RequestCorrelation.from_headers(twice).trace
    assert fresh.trace_id != TRACE_ID
    assert fresh.tracestate is None


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


def test_new_ids_have_the_shapes_of_before() -> None:
    """A new correlation id reads as a version-4 UUID in 32 hex digits (as uuid4().hex gave); a new trace context
    has a 32-digit trace id and a 16-digit parent id, valid as a traceparent; none repeats."""
    ids = {new_correlation_id() for _ in range(200)}
    assert len(ids) == 200
    for value in ids:
        parsed = uuid.UUID(hex=value)
        assert (parsed.hex, parsed.version, parsed.variant) == (value, 4, uuid.RFC_4122)
    contexts = [TraceContext.new() for _ in range(200)]
    assert len({c.trace_id for c in contexts} | {c.parent_id for c in contexts}) == 400
    for ctx in contexts:
        assert (len(ctx.trace_id), len(ctx.parent_id)) == (32, 16)
        assert TraceContext.parse(ctx.header) == ctx
