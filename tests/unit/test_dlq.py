"""The DLQ tool's pure parts: durations, filters, ids, replay headers, formatting."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from s2s_daemon.ops.dlq import (
    DeadLetter,
    Selection,
    content_id,
    edited_key,
    jsonable,
    parse_duration,
    replay_message,
)
from s2s_daemon.ops.dlq_cli import format_age, format_table


def _dead_letter(**overrides: Any) -> DeadLetter:
    values: dict[str, Any] = {
        "id": "m1",
        "reason": "retries-exhausted",
        "detail": "d",
        "routing_key": "service-a.create-resource",
        "attempts": 3,
        "dead_lettered_at": 1_000_000,
        "correlation_id": "corr-1",
        "idempotency_key": "m1",
        "replay_count": 0,
        "body": b'{"name": "x"}',
        "headers": {
            "x-s2s-reason": "retries-exhausted",
            "x-s2s-attempt": 3,
            "x-death": [{"count": 1}],
            "x-delivery-count": 4,
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
        "properties": {"message_id": "m1", "correlation_id": "corr-1", "content_type": "application/json"},
    }
    values.update(overrides)
    return DeadLetter(**values)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("12h", 43_200), ("7d", 604_800), ("1h30m", 5_400), ("2w", 1_209_600), ("1.5h", 5_400)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Durations are numbers with s/m/h/d/w units, combinable."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "seven days", "7x", "d7", "1h 30"])
def test_parse_duration_refuses_junk(text: str) -> None:
    """Anything else is refused with a hint rather than guessed."""
    with pytest.raises(ValueError, match="use a number with s, m, h, d or w"):
        parse_duration(text)


def test_selection_same_key_is_any_different_keys_are_all() -> None:
    """reason=a reason=b matches either; adding routing-key narrows; patterns are shell-style."""
    dl = _dead_letter()
    assert Selection.parse(["reason=schema-violation", "reason=retries-*"]).matches(dl, 0)
    assert not Selection.parse(["reason=retries-*", "routing-key=service-b.*"]).matches(dl, 0)
    assert Selection.parse(["routing_key=service-a.*", "id=m1"]).matches(dl, 0)
    assert not Selection.parse(["correlation-id=other"]).matches(dl, 0)


def test_selection_older_than_never_matches_unknown_age() -> None:
    """--older-than compares against the dead-lettering time; an unknown age is never purged."""
    dl = _dead_letter(dead_lettered_at=1_000_000)
    assert Selection((), older_than=10).matches(dl, 1_000_000 + 11_000)
    assert not Selection((), older_than=10).matches(dl, 1_000_000 + 9_000)
    assert not Selection((), older_than=10).matches(_dead_letter(dead_lettered_at=None), 10**15)


@pytest.mark.parametrize("text", ["colour=red", "reason", "reason=", "=x"])
def test_selection_refuses_unknown_or_empty_filters(text: str) -> None:
    """A typo in a filter must not silently select everything."""
    with pytest.raises(ValueError, match="KEY=PATTERN"):
        Selection.parse([text])


def test_pins_one_id() -> None:
    """Only one literal id pins a single message (what an edited replay needs)."""
    assert Selection.parse(["id=abc"]).pins_one_id()
    assert not Selection.parse(["id=ab*"]).pins_one_id()
    assert not Selection.parse(["id=a", "id=b"]).pins_one_id()
    assert not Selection.parse(["reason=x"]).pins_one_id()


def test_content_id_ignores_the_delivery_count() -> None:
    """The hash id of a keyless message survives the delivery count a pass increments, not other changes."""
    headers = {"x-s2s-reason": "missing-idempotency-key", "x-delivery-count": 0}
    same = content_id(b"{}", headers)
    assert same == content_id(b"{}", {**headers, "x-delivery-count": 7})
    assert same != content_id(b"{ }", headers)
    assert same != content_id(b"{}", {**headers, "x-s2s-reason": "other"})


def test_edited_key_is_new_and_deterministic() -> None:
    """The same edit of the same message gives the same new key; another body or original another key."""
    key = edited_key("k1", b'{"name": "y"}')
    assert key != "k1"
    assert key == edited_key("k1", b'{"name": "y"}')
    assert key != edited_key("k1", b'{"name": "z"}')
    assert key != edited_key("k2", b'{"name": "y"}')


def test_replay_message_drops_death_headers_and_marks_the_replay() -> None:
    """Replays carry the original headers and properties, no death headers, and the replay markers."""
    message, new_key = replay_message(_dead_letter(replay_count=2))
    assert not new_key
    assert message.message_id == "m1"
    assert message.correlation_id == "corr-1"
    assert set(message.headers) == {"traceparent", "x-s2s-replayed-at", "x-s2s-replay-count"}
    assert message.headers["x-s2s-replay-count"] == 3


def test_replay_message_of_a_webhook_delivery_starts_its_schedule_afresh() -> None:
    """A webhook delivery's replay keeps its message_id (the webhook-id) and event routing key, drops its retries."""
    letter = _dead_letter(
        subscription="partner",
        routing_key="service-a.create-resource.succeeded",
        headers={"x-s2s-subscription": "partner", "x-s2s-calls": 8, "x-s2s-first-call-at": 1, "x-s2s-not-before": 2},
    )
    message, new_key = replay_message(letter)
    assert (new_key, message.message_id) == (False, "m1")
    assert message.headers["x-s2s-routing-key"] == "service-a.create-resource.succeeded"
    assert not {"x-s2s-subscription", "x-s2s-calls", "x-s2s-first-call-at", "x-s2s-not-before"} & set(message.headers)


def test_replay_message_with_a_new_body_gets_a_new_key() -> None:
    """An edited copy: new body, new key in message_id and header, the original named."""
    message, new_key = replay_message(_dead_letter(), b'{"name": "fixed"}')
    assert new_key
    assert message.body == b'{"name": "fixed"}'
    assert message.message_id == edited_key("m1", b'{"name": "fixed"}')
    assert message.headers["idempotency-key"] == message.message_id
    assert message.headers["x-s2s-replay-of"] == "m1"


def test_replay_message_keeps_a_header_key_as_message_id() -> None:
    """A command keyed by header only gets that key as message_id (aiormq would invent a random one)."""
    dl = _dead_letter(properties={"message_id": None}, idempotency_key="hk", headers={"idempotency-key": "hk"})
    message, new_key = replay_message(dl)
    assert not new_key
    assert message.message_id == "hk"


def test_jsonable_handles_amqp_field_types() -> None:
    """x-death tables hold datetimes; binary headers become text or base64."""
    value = {"x-death": [{"time": datetime(2026, 1, 2, tzinfo=UTC), "count": 1}], "b": b"\xff", "t": b"ok"}
    assert jsonable(value) == {"x-death": [{"time": "2026-01-02T00:00:00+00:00", "count": 1}], "b": "/w==", "t": "ok"}


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (5, "5s"), (125, "2m"), (3 * 3600 + 12 * 60, "3h12m"), (2 * 86_400 + 4 * 3600, "2d04h")],
)
def test_format_age(seconds: float | None, text: str) -> None:
    """Ages are short and human."""
    assert format_age(seconds) == text


def test_format_table_aligns_columns() -> None:
    """Columns are padded to their widest cell."""
    assert format_table(["A", "BB"], [["xxx", "y"]]).splitlines() == ["A    BB", "xxx  y"]
