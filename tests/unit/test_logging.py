"""structlog configuration: a call below the logger's level is dropped before any processor runs."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator, MutableMapping
from typing import Any

import orjson
import pytest
import structlog

from s2s_daemon.observability.logging import configure_logging, get_logger


@pytest.fixture
def warning_logs() -> Iterator[tuple[io.StringIO, list[str]]]:
    """Logging at WARNING into a buffer, with a first processor that records the events it sees; the session's
    configuration (INFO, JSON) is put back afterwards."""
    stream = io.StringIO()
    configure_logging("WARNING", "json", stream=stream)
    seen: list[str] = []

    def spy(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        seen.append(event_dict["event"])
        return event_dict

    structlog.configure(processors=[spy, *structlog.get_config()["processors"]], cache_logger_on_first_use=False)
    try:
        yield stream, seen
    finally:
        configure_logging("INFO", "json")


def test_below_level_runs_no_processor(warning_logs: tuple[io.StringIO, list[str]]) -> None:
    """At WARNING an INFO call reaches no processor and writes nothing; a WARNING call is processed and written
    as JSON; lowering one logger's level lets its DEBUG calls through."""
    stream, seen = warning_logs
    log = get_logger("s2s.test.level")
    log.info("webhook.accepted", service="acme")
    log.debug("http.request")
    assert (seen, stream.getvalue()) == ([], "")
    log.warning("webhook.outbox_unavailable", service="acme")
    assert seen == ["webhook.outbox_unavailable"]
    line = orjson.loads(stream.getvalue().splitlines()[-1])
    assert (line["event"], line["level"], line["service"]) == ("webhook.outbox_unavailable", "warning", "acme")
    logging.getLogger("s2s.test.level").setLevel(logging.DEBUG)
    try:
        log.debug("http.request")
    finally:
        logging.getLogger("s2s.test.level").setLevel(logging.NOTSET)
    assert seen[-1] == "http.request"
