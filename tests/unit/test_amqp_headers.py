"""The AMQP header codec: text and integer values, the retry state round trip, x-deadline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s2s_daemon.errors import CommandRejected, DeadLetterReason
from s2s_daemon.messaging import RetryState, header_int, header_text, read_deadline
from s2s_daemon.messaging import contracts as c


def test_header_text_decodes_bytes_and_drops_empty_or_other_values() -> None:
    """Bytes are UTF-8 (bad bytes replaced), strings pass, empty and non-text values are None."""
    assert header_text(b"abc") == "abc"
    assert header_text("abc") == "abc"
    assert header_text(b"\xff") == "\ufffd"
    assert header_text(b"") is None
    assert header_text("") is None
    assert header_text(3) is None
    assert header_text(None) is None


def test_header_int_reads_integers_and_their_text() -> None:
    """Integers and text of one; booleans, floats and junk are None."""
    assert header_int(7) == 7
    assert header_int("7") == 7
    assert header_int(b"7") == 7
    assert header_int(True) is None
    assert header_int(1.5) is None
    assert header_int("x") is None


@given(attempt=st.integers(1, 10**6), calls=st.integers(0, 10**6), first=st.none() | st.integers(1, 2**62))
def test_retry_state_survives_the_headers(attempt: int, calls: int, first: int | None) -> None:
    """to_headers then from_headers gives the same state back."""
    state = RetryState(attempt, calls, first)
    assert RetryState.from_headers(state.to_headers()) == state


def test_retry_state_defaults_and_junk() -> None:
    """No headers: the first delivery; junk or negative values fall back to the defaults."""
    assert RetryState.from_headers(None) == RetryState(1, 0, None)
    junk = {c.H_ATTEMPT: "x", c.H_CALLS: -3, c.H_FIRST_CALL_AT: True}
    assert RetryState.from_headers(junk) == RetryState(1, 0, None)
    assert RetryState.from_headers({c.H_ATTEMPT: b"4", c.H_CALLS: "2"}) == RetryState(4, 2, None)


def test_a_redelivery_counts_up_and_takes_the_calls_made() -> None:
    """redelivered() adds one delivery; after a call it carries that call's count and first-call time."""
    state = RetryState(2, 3, 1000)
    assert state.redelivered() == RetryState(3, 3, 1000)
    assert state.redelivered(5, 1000) == RetryState(3, 5, 1000)
    assert RetryState().redelivered().to_headers() == {c.H_ATTEMPT: 2}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (1_700_000_000_000, 1_700_000_000_000),
        (b"1700000000000", 1_700_000_000_000),
        ("2023-11-14T22:13:20Z", 1_700_000_000_000),
    ],
)
def test_deadline_formats(value: object, expected: int | None) -> None:
    """x-deadline: epoch milliseconds as a number or text, or ISO-8601 with a zone."""
    assert read_deadline(value) == expected


@pytest.mark.parametrize("value", ["tomorrow", "2023-11-14T22:13:20", "", b"", "\u00b2", 1.5, True])
def test_bad_deadlines_are_rejected(value: object) -> None:
    """A deadline that cannot be read rejects the command (invalid-header), never crashes the handler."""
    with pytest.raises(CommandRejected) as raised:
        read_deadline(value)
    assert raised.value.reason is DeadLetterReason.INVALID_HEADER
