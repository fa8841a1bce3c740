"""Downstream request building and outcome classification (no network)."""

from __future__ import annotations

import pytest

from s2s_daemon.errors import CommandRejected, ErrorKind
from s2s_daemon.resilience.client import HttpResponse, build_request, classify, parse_retry_after
from s2s_daemon.settings import RouteSettings


def test_path_template_filled_and_encoded() -> None:
    """Path parameters come from the body, URL-encoded; GET leftovers become the query string."""
    route = RouteSettings(method="GET", path="/resource/{id}")
    request = build_request("http://b", route, {"id": "a/b c", "expand": True}, {})
    assert request.url == "http://b/resource/a%2Fb%20c?expand=True"
    assert request.content is None


def test_post_sends_json_body() -> None:
    """POST routes send the command body as JSON with a content type."""
    request = build_request("http://a", RouteSettings(path="/resource"), {"name": "x"}, {"idempotency-key": "k"})
    assert request.content == b'{"name":"x"}'
    assert request.headers == {"idempotency-key": "k", "content-type": "application/json"}


def test_missing_path_parameter_is_rejected() -> None:
    """A body without the path parameter is a schema violation, not a call."""
    with pytest.raises(CommandRejected):
        build_request("http://b", RouteSettings(method="GET", path="/r/{id}"), {"x": 1}, {})


@pytest.mark.parametrize(
    ("status", "kind", "retryable"),
    [
        (200, None, False),
        (201, None, False),
        (400, ErrorKind.REJECTED, False),
        (404, ErrorKind.REJECTED, False),
        (409, ErrorKind.CONFLICT, False),
        (408, ErrorKind.TIMEOUT, True),
        (429, ErrorKind.UNAVAILABLE, True),
        (500, ErrorKind.UNAVAILABLE, True),
        (501, ErrorKind.REJECTED, False),
        (503, ErrorKind.UNAVAILABLE, True),
        (504, ErrorKind.TIMEOUT, True),
    ],
)
def test_classification(status: int, kind: ErrorKind | None, retryable: bool) -> None:
    """Status codes map to typed outcomes; only 408, 429 and 5xx except 501 are retryable."""
    outcome = classify(HttpResponse(status, {"content-type": "application/json"}, b'{"a": 1}'), 1)
    assert outcome.error_kind == kind
    assert outcome.retryable is retryable
    assert outcome.body == {"a": 1}


def test_retry_after_forms() -> None:
    """Retry-After accepts delta-seconds and HTTP-dates; junk is ignored."""
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
