"""Pure parts of the sidecar: Prefer parsing, reply -> HTTP status, request correlation, the OpenAPI document."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from openapi_spec_validator import validate
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from s2s_daemon.errors import ConfigError, DependencyUnavailable
from s2s_daemon.http.command_api import parse_prefer_wait, reply_status_code, status_url
from s2s_daemon.http.correlation import RequestCorrelation
from s2s_daemon.http.openapi import build_openapi
from s2s_daemon.http.responses import CommandAccepted
from s2s_daemon.http.server import MAX_HEAD_BYTES, SidecarServer, _HeadWithBody
from s2s_daemon.http.status import StatusBoard
from s2s_daemon.messaging.contracts import Reply
from s2s_daemon.observability.correlation import TraceContext
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.settings import load_settings

EXAMPLE = Path(__file__).parents[2] / "s2s_daemon" / "config" / "example.yaml"


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (["wait=5"], 5.0),
        (["respond-async, wait=10"], 10.0),
        (["return=minimal; foo=bar", "Wait = 3"], 3.0),
        (['wait="4"'], 4.0),
        (["wait=3600"], 30.0),
        (["wait=0"], None),
        (["wait=-1"], None),
        (["wait=soon"], None),
        (["wait=²"], None),
        (["respond-async"], None),
        ([], None),
    ],
)
def test_parse_prefer_wait(values: list[str], expected: float | None) -> None:
    """RFC 7240 wait=N in any Prefer header, capped; absent, zero or malformed means no wait."""
    assert parse_prefer_wait(values, 30.0) == expected


@given(st.lists(st.text(max_size=40), max_size=3))
def test_parse_prefer_wait_total(values: list[str]) -> None:
    """Any header text gives None or a wait in (0, cap]."""
    wait = parse_prefer_wait(values, 7.0)
    assert wait is None or 0 < wait <= 7.0


@pytest.mark.parametrize(
    ("reply", "status"),
    [
        ({"status": "succeeded", "result": {"status_code": 201}}, 201),
        ({"status": "succeeded", "result": {"status_code": 204}}, 204),
        ({"status": "succeeded", "result": None}, 200),
        ({"status": "failed", "error": {"kind": "rejected", "status_code": 404}}, 404),
        ({"status": "failed", "error": {"kind": "conflict", "status_code": 409}}, 409),
        ({"status": "failed", "error": {"kind": "conflict", "status_code": None}}, 422),
        ({"status": "failed", "error": {"kind": "invalid"}}, 422),
        ({"status": "failed", "error": {"kind": "unavailable", "status_code": 503}}, 502),
        ({"status": "failed", "error": {"kind": "timeout", "status_code": None}}, 504),
        ({"status": "failed", "error": {"kind": "expired"}}, 504),
        ({"status": "failed", "error": {"kind": "rejected", "status_code": 302}}, 502),
    ],
)
def test_reply_status_code(reply: dict[str, Any], status: int) -> None:
    """The downstream's own status for successes and its 4xx refusals; 502/504/422 by error kind otherwise."""
    assert reply_status_code(reply) == status


def test_status_url_quotes_the_id() -> None:
    """Idempotency keys may hold any printable ASCII: the status URL quotes them."""
    assert status_url("a/b?c#d", "service-a") == "/api/commands/a%2Fb%3Fc%23d?downstream=service-a"


def test_correlation_precedence() -> None:
    """X-Correlation-ID, else X-Request-ID, else the trace id of traceparent, else new; junk is ignored."""
    trace = TraceContext.new()
    both = RequestCorrelation.from_headers(Headers({"x-correlation-id": "c1", "x-request-id": "r1"}))
    request_id = RequestCorrelation.from_headers(Headers({"x-request-id": "r1", "traceparent": trace.header}))
    traced = RequestCorrelation.from_headers(Headers({"x-correlation-id": "has space", "traceparent": trace.header}))
    fresh = RequestCorrelation.from_headers(Headers({"traceparent": "00-garbage"}))
    assert both.correlation_id == "c1"
    assert request_id.correlation_id == "r1"
    assert request_id.trace == trace
    assert traced.correlation_id == trace.trace_id
    assert len(fresh.correlation_id) == 32
    assert fresh.trace.trace_id != trace.trace_id


def _responses(spec: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    return [
        (path, method, code, response)
        for path, item in spec["paths"].items()
        for method, operation in item.items()
        for code, response in operation["responses"].items()
    ]


def test_openapi_is_valid_31_and_complete() -> None:
    """The document validates as OpenAPI 3.1 (openapi-spec-validator), every response documents
    X-Correlation-ID, the command body is the route's own schema, a read's path field has the route's schema
    for it, and admin paths need admin.token."""
    settings = load_settings(EXAMPLE)
    spec = build_openapi(settings, "1.2.3")
    validate(spec)
    assert spec["info"]["version"] == "1.2.3"
    assert all("X-Correlation-ID" in response["headers"] for *_, response in _responses(spec))
    create, read = settings.route("service-a.create-resource"), settings.route("service-b.get-resource")
    assert create is not None
    assert read is not None
    post = spec["paths"]["/api/service-a/resource"]["post"]
    assert post["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/service-a.create-resource"
    }
    assert spec["components"]["schemas"]["service-a.create-resource"] == create[2].json_schema
    assert post["operationId"] == "service-a.create-resource"
    [id_field] = [p for p in spec["paths"]["/api/service-b/resource/{id}"]["get"]["parameters"] if p["in"] == "path"]
    assert (id_field["name"], id_field["schema"]) == ("id", (read[2].json_schema or {})["properties"]["id"])
    assert not any(path.startswith("/admin") for path in spec["paths"])

    with_admin = build_openapi(load_settings(EXAMPLE, admin={"token": "t" * 20}), "1.2.3")
    validate(with_admin)
    assert {"/admin/breakers/{downstream}/open", "/admin/breakers/{downstream}/close"} <= set(with_admin["paths"])
    assert with_admin["components"]["securitySchemes"]["adminToken"]["scheme"] == "bearer"


def test_openapi_response_schemas_come_from_the_models() -> None:
    """Every response body schema is a $ref to a component generated from a pydantic model (or a union of them);
    the components are exactly what pydantic generates for them."""
    spec = build_openapi(load_settings(EXAMPLE, admin={"token": "t" * 20}), "1")
    schemas = spec["components"]["schemas"]
    for path, method, code, response in _responses(spec):
        for media_type, content in response.get("content", {}).items():
            schema = content["schema"]
            refs = [schema] if "$ref" in schema else schema.get("anyOf", [])
            if media_type.startswith("text/") or path == "/openapi.json":
                continue
            assert refs, (path, method, code)
            assert all(ref["$ref"].removeprefix("#/components/schemas/") in schemas for ref in refs)
    assert schemas["CommandAccepted"] == CommandAccepted.model_json_schema(mode="serialization")
    assert schemas["Reply"]["required"] == Reply.model_json_schema()["required"]


def test_example_config_declares_one_webhook_source_per_scheme() -> None:
    """The shipped example has a demo source for each signature scheme."""
    settings = load_settings(EXAMPLE)
    assert sorted(source.scheme for source in settings.webhooks.values()) == ["github", "standard-webhooks", "stripe"]
    assert settings.admin.token is None


def test_admin_token_too_short_fails_loudly() -> None:
    """An admin token shorter than 16 characters is refused at start, naming the key."""
    with pytest.raises(ConfigError, match=r"admin\.token"):
        load_settings(EXAMPLE, admin={"token": "short"})


async def test_status_board_rates_span_the_window() -> None:
    """Call and error rates are counter differences over the window; the first poll compares with the start,
    and sparse polls keep the newest sample at least a window old instead of reporting nothing."""
    now = [100.0]
    metrics = Metrics()

    async def depth(_: str) -> int:
        return 3

    async def counts() -> dict[str, int]:
        return {"pending": 1, "publishing": 0, "dead": 0}

    board = StatusBoard(
        service_id="t",
        breakers={},
        queues={"service-a": "q.a"},
        dlq="dlq",
        metrics=metrics,
        queue_depth=depth,
        outbox_counts=counts,
        window_seconds=10,
        clock=lambda: now[0],
    )
    metrics.downstream_calls.labels("service-a", "success").inc(8)
    metrics.downstream_calls.labels("service-a", "5xx").inc(2)
    metrics.downstream_calls.labels("service-z", "5xx").inc(50)  # not configured: ignored
    now[0] = 105.0
    first = await board.snapshot()
    assert first["downstreams"][0] == {
        "name": "service-a",
        "breaker": None,
        "calls_per_second": 2.0,
        "error_rate": 0.2,
        "queue_depth": 3,
    }
    assert (first["outbox"], first["dlq_depth"]) == ({"pending": 1, "publishing": 0, "dead": 0}, 3)
    now[0] = 105.5
    assert await board.snapshot() is first  # cached for a second
    now[0] = 200.0
    idle = await board.snapshot()
    assert idle["downstreams"][0]["calls_per_second"] == 0.0
    metrics.downstream_calls.labels("service-a", "success").inc(30)
    now[0] = 203.0
    busy = await board.snapshot()
    assert busy["downstreams"][0]["calls_per_second"] == round(30 / 98, 2)  # since the sample at t=105
    assert busy["downstreams"][0]["error_rate"] == 0.0


async def test_sidecar_server_raises_the_lifespan_startup_error() -> None:
    """A failing app startup fails SidecarServer.start() with the app's own exception (uvicorn would only log
    it and sys.exit() inside the daemon's event loop); stop() afterwards is safe."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        raise DependencyUnavailable("rabbitmq", "no broker for the gateway")
        yield  # pragma: no cover - never reached

    server = SidecarServer(Starlette(lifespan=lifespan), "127.0.0.1", 0)
    with pytest.raises(DependencyUnavailable, match="no broker for the gateway"):
        await server.start()
    await server.stop()


async def _exchange(port: int, request: bytes, *chunks: bytes) -> bytes:
    """Send a raw request (the head, then each chunk as its own write) and read the answer to its end."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        for chunk in chunks:
            await writer.drain()
            writer.write(chunk)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 5)
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def _echo_size(request: Request) -> Response:
    return JSONResponse({"body": len(await request.body())}, headers={"connection": "close"})


@pytest.mark.parametrize(
    ("header_bytes", "in_one_write", "status"),
    [
        (MAX_HEAD_BYTES - 200, True, b"200"),
        (MAX_HEAD_BYTES + 1, True, b"400"),  # parsed whole, then refused at the end of the head
        (4 * MAX_HEAD_BYTES, False, b"400"),  # still incomplete when the bound is passed: cut off
    ],
)
async def test_sidecar_bounds_the_request_head(header_bytes: int, in_one_write: bool, status: bytes) -> None:
    """A request head over 16 KiB is answered 400 and never reaches the app, whether it arrives in one write or
    streams without end; a head under the bound followed by a body larger than it is served."""
    server = SidecarServer(Starlette(routes=[Route("/echo", _echo_size, methods=["POST"])]), "127.0.0.1", 0)
    await server.start()
    try:
        body = b"x" * (4 * MAX_HEAD_BYTES)
        head = b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\nX-Pad: " % len(body)
        pad = b"p" * header_bytes
        if in_one_write:
            answer = await _exchange(server.port, head + pad + b"\r\n\r\n" + body)
        else:  # the header never ends
            answer = await _exchange(server.port, head, *(pad[i : i + 4096] for i in range(0, len(pad), 4096)))
    finally:
        await server.stop()
    assert answer.startswith(b"HTTP/1.1 " + status)
    if status == b"200":
        assert answer.endswith(b'{"body":%d}' % len(body))


class _RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


class _Cycle:
    response_started = False


async def test_response_head_goes_out_with_the_first_body_bytes() -> None:
    """A 100 Continue passes at once; the head is held and written in one piece with the body; later chunks pass
    through; a head alone goes out on the loop's next turn or before a close; other calls reach the transport."""
    transport, cycle = _RecordingTransport(), _Cycle()
    joined = _HeadWithBody(transport, cycle)  # type: ignore[arg-type]
    joined.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    cycle.response_started = True
    joined.write(b"HEAD\r\n\r\n")
    assert transport.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    joined.write(b"body-1")
    joined.write(b"body-2")
    await asyncio.sleep(0)
    assert transport.writes[1:] == [b"HEAD\r\n\r\nbody-1", b"body-2"]
    assert joined.get_extra_info("peername") == "info:peername"

    alone, alone_cycle = _RecordingTransport(), _Cycle()
    alone_cycle.response_started = True
    _HeadWithBody(alone, alone_cycle).write(b"HEAD-ONLY")  # type: ignore[arg-type]
    assert alone.writes == []
    await asyncio.sleep(0)
    assert alone.writes == [b"HEAD-ONLY"]

    closing, closing_cycle = _RecordingTransport(), _Cycle()
    closing_cycle.response_started = True
    before_close = _HeadWithBody(closing, closing_cycle)  # type: ignore[arg-type]
    before_close.write(b"HEAD")
    before_close.close()
    assert (closing.writes, closing.closed, before_close.is_closing()) == ([b"HEAD"], True, True)
