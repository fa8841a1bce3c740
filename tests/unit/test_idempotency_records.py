"""The one parser of the consumer's idempotency records in Redis."""

from __future__ import annotations

import pytest

from s2s_daemon.idempotency._records import (
    ConsumerRecord,
    done_value,
    in_flight_value,
    parse_consumer_record,
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (done_value("fp1"), ConsumerRecord(True, "fp1")),
        (in_flight_value("host:1", "fp2"), ConsumerRecord(False, "fp2")),
        (in_flight_value("a|b", "fp3"), ConsumerRecord(False, "fp3")),
        (b"d|fp4", ConsumerRecord(True, "fp4")),
        (b"f|o|fp5", ConsumerRecord(False, "fp5")),
    ],
)
def test_records_parse_to_state_and_fingerprint(value: str | bytes, expected: ConsumerRecord) -> None:
    """Done and in-flight values, as str or bytes, with an owner that contains the separator."""
    assert parse_consumer_record(value) == expected
