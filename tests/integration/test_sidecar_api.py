"""The sidecar's HTTP API on a live daemon: HTTP -> command, command status, read-through with a stale copy,
correlation into AMQP, and the admin breaker endpoints."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from s2s_daemon.app import Daemon
from s2s_daemon.observability.correlation import TraceContext
from s2s_daemon.resilience.breaker import BreakerState
from tests.conftest import DemoServices
from tests.support import OWN_PATHS, Outgoing, bind_probe_queue, drain, pika_send, wait_for

pytestmark = pytest.mark.integration

RESOURCE = "/api/service-a/resource"
ADMIN_TOKEN = "admin-token-for-the-tests-0123456789"


@pytest.fixture
async def api(make_settings, cleanup_namespace: None, run_id: str) -> AsyncIterator[Daemon]:
    settings = make_settings(
        api={"max_wait_seconds": 5, "stale_cache": {"key_prefix": f"{run_id}:stale:", "ttl_seconds": 60}},
        admin={"token": ADMIN_TOKEN},
    )
    async with Daemon(settings) as daemon:
        yield daemon


@pytest.fixture
async def http(api: Daemon) -> AsyncIterator[httpx.AsyncClient]:
    assert api.sidecar is not None
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.sidecar.port}", timeout=20) as client:
        yield client


def key() -> str:
    return f"key-{uuid.uuid4().hex}"


async def create(http: httpx.AsyncClient, body: Any, idempotency_key: str | None, **headers: str) -> httpx.Response:
    sent = dict(headers)
    if idempotency_key is not None:
        sent["Idempotency-Key"] = idempotency_key
    return await http.post(RESOURCE, json=body, headers=sent)


async def finished(http: httpx.AsyncClient, status_url: str) -> dict[str, Any]:
    async def done() -> dict[str, Any] | None:
        response = await http.get(status_url)
        body: dict[str, Any] = response.json()
        return body if response.status_code == 200 and body["status"] != "in_flight" else None

    result: dict[str, Any] = await wait_for(done, timeout=15)
    return result


# --- POST /api/service-a/resource (exposed command) -------------------------------------------------------------


async def test_post_publishes_command_with_key_and_correlation(api: Daemon, http: httpx.AsyncClient, demo) -> None:
    """202 with the command id and a status URL; the command on the exchange carries message_id = the key, the
    caller's correlation id (property and header) and a child of its trace with its tracestate; the reply keeps
    the correlation."""
    connection, probe = await bind_probe_queue(api.topology.commands_exchange_name, "service-a.#")
    trace = TraceContext.new()
    k = key()
    async with connection:
        headers = {"X-Correlation-ID": "corr-api-1", "traceparent": trace.header, "tracestate": "congo=t61rcWkgMzE"}
        response = await create(http, {"name": "x"}, k, **headers)
        [command] = await drain(probe, 1)
    assert response.status_code == 202
    assert response.headers["x-correlation-id"] == "corr-api-1"
    body = response.json()
    assert body["command_id"] == k
    assert body["status_url"] == f"/api/commands/{k}?downstream=service-a"
    assert response.headers["location"] == body["status_url"]
    assert (command.message_id, command.correlation_id) == (k, "corr-api-1")
    assert command.headers["idempotency-key"] == k
    assert command.headers["x-correlation-id"] == "corr-api-1"
    sent_trace = TraceContext.parse(command.headers["traceparent"])
    assert sent_trace is not None
    assert sent_trace.trace_id == trace.trace_id
    assert sent_trace.parent_id != trace.parent_id
    assert command.headers["tracestate"] == "congo=t61rcWkgMzE"
    status = await finished(http, body["status_url"])
    assert status["status"] == "succeeded"
    assert status["reply"]["correlation_id"] == "corr-api-1"
    assert status["reply"]["result"]["status_code"] == 201
    assert demo.a.calls_by_key[k] == 1
    assert demo.a.trace_by_key[k]["tracestate"] == "congo=t61rcWkgMzE"


async def test_request_id_and_traceparent_fall_back_for_correlation(http: httpx.AsyncClient) -> None:
    """Without X-Correlation-ID the X-Request-ID is used, else the trace id of traceparent, else a new id."""
    trace = TraceContext.new()
    by_request_id = await http.get("/livez", headers={"X-Request-ID": "req-7"})
    by_trace = await http.get("/livez", headers={"traceparent": trace.header})
    fresh = await http.get("/livez")
    not_found = await http.get("/nowhere", headers={"X-Correlation-ID": "corr-404"})
    assert by_request_id.headers["x-correlation-id"] == "req-7"
    assert by_trace.headers["x-correlation-id"] == trace.trace_id
    assert len(fresh.headers["x-correlation-id"]) == 32
    assert not_found.status_code == 404
    assert not_found.headers["x-correlation-id"] == "corr-404"
    assert not_found.json()["error"] == "not_found"


async def test_prefer_wait_answers_with_the_reply(http: httpx.AsyncClient, demo: DemoServices) -> None:
    """With Prefer: wait=N the answer is the reply with the downstream's status; the same key and payload again
    gets the stored reply without a second downstream call."""
    k = key()
    response = await create(http, {"name": "waited"}, k, Prefer="wait=10")
    assert response.status_code == 201, response.text
    reply = response.json()
    assert reply["status"] == "succeeded"
    assert reply["command_id"] == k
    assert reply["result"]["body"]["name"] == "waited"
    again = await create(http, {"name": "waited"}, k)
    assert again.status_code == 201
    assert again.json()["result"] == reply["result"]
    assert demo.a.calls_by_key[k] == 1


async def test_same_key_other_payload_is_422_conflict(http: httpx.AsyncClient, demo: DemoServices) -> None:
    """Reusing a key with another payload is 422 conflict, before and after the first one completed."""
    k = key()
    demo.a.faults.latency_ms = 800
    first = await create(http, {"name": "one"}, k)
    while_in_flight = await create(http, {"name": "two"}, k)
    status = await finished(http, first.json()["status_url"])
    after = await create(http, {"name": "two"}, k)
    assert first.status_code == 202
    assert (while_in_flight.status_code, while_in_flight.json()["error"]) == (422, "conflict")
    assert status["status"] == "succeeded"
    assert (after.status_code, after.json()["error"]) == (422, "conflict")
    assert demo.a.calls_by_key[k] == 1


async def test_same_key_in_flight_is_409(http: httpx.AsyncClient, demo: DemoServices) -> None:
    """The same key and payload while the first is in flight is 409 with Retry-After; the status URL says
    in_flight; the downstream is called once."""
    k = key()
    demo.a.faults.latency_ms = 1500
    first = await create(http, {"name": "slow"}, k)
    second = await create(http, {"name": "slow"}, k)
    status_now = await http.get(first.json()["status_url"])
    assert first.status_code == 202
    assert second.status_code == 409
    assert second.json()["error"] == "in_flight"
    assert second.headers["retry-after"] == "1"
    assert status_now.json()["status"] == "in_flight"
    assert (await finished(http, first.json()["status_url"]))["status"] == "succeeded"
    assert demo.a.calls_by_key[k] == 1


async def test_wait_that_runs_out_answers_202(http: httpx.AsyncClient, demo: DemoServices) -> None:
    """A reply slower than the wait: 202 after about N seconds (the wait is capped by api.max_wait_seconds)."""
    demo.a.faults.latency_ms = 3000
    started = time.monotonic()
    response = await create(http, {"name": "late"}, key(), Prefer="respond-async, wait=1")
    capped_started = time.monotonic()
    capped = await create(http, {"name": "later"}, key(), Prefer="wait=3600")
    capped_elapsed = time.monotonic() - capped_started
    assert response.status_code == 202
    assert 0.9 < capped_started - started < 2.5
    assert capped.status_code in (201, 202)  # the cap (5 s) is longer than the injected latency
    assert capped_elapsed < 6


@pytest.mark.parametrize(
    ("body", "headers", "status", "error"),
    [
        ({"name": "x"}, {}, 400, "missing_idempotency_key"),
        ({"name": "x"}, {"Idempotency-Key": "has space"}, 400, "invalid_idempotency_key"),
        ({"nom": "x"}, {"Idempotency-Key": "k-schema"}, 422, "invalid"),
        ({"name": ""}, {"Idempotency-Key": "k-empty"}, 422, "invalid"),
    ],
    ids=["missing-key", "bad-key", "schema-violation", "empty-name"],
)
async def test_invalid_posts_are_refused(
    api: Daemon, http: httpx.AsyncClient, body: Any, headers: dict[str, str], status: int, error: str
) -> None:
    """Missing or malformed Idempotency-Key is 400, a body the route's schema refuses is 422; nothing is
    published."""
    connection, probe = await bind_probe_queue(api.topology.commands_exchange_name, "service-a.#")
    async with connection:
        response = await http.post(RESOURCE, json=body, headers=headers)
        await asyncio.sleep(0.3)
        assert await probe.get(fail=False) is None
    assert response.status_code == status
    assert response.json()["error"] == error


async def test_body_checks(http: httpx.AsyncClient) -> None:
    """Not JSON is 400, not application/json is 415, larger than the limit is 413."""
    not_json = await http.post(
        RESOURCE, content=b"{nope", headers={"Idempotency-Key": key(), "content-type": "application/json"}
    )
    text = await http.post(
        RESOURCE, content=b'{"name":"x"}', headers={"Idempotency-Key": key(), "content-type": "text/plain"}
    )
    big = await http.post(RESOURCE, json={"name": "x" * 2_000_000}, headers={"Idempotency-Key": key()})
    assert (not_json.status_code, not_json.json()["error"]) == (400, "invalid_json")
    assert (text.status_code, text.json()["error"]) == (415, "unsupported_media_type")
    assert (big.status_code, big.json()["error"]) == (413, "too_large")


async def test_failed_reply_maps_to_downstream_status(http: httpx.AsyncClient, demo: DemoServices) -> None:
    """A downstream 4xx refusal is answered with that status and the failed reply as body."""
    demo.a.faults.status = 422
    response = await create(http, {"name": "refused"}, key(), Prefer="wait=10")
    assert response.status_code == 422
    assert response.json()["status"] == "failed"
    assert response.json()["error"]["kind"] == "rejected"


async def test_command_status_unknown_downstream_is_404(http: httpx.AsyncClient) -> None:
    """GET /api/commands/{id} with an unconfigured downstream is 404, without one 400 (no default downstream)."""
    response = await http.get("/api/commands/abc", params={"downstream": "nobody"})
    without = await http.get("/api/commands/abc")
    assert response.status_code == 404
    assert (without.status_code, without.json()["error"]) == (400, "invalid_request")


async def test_tour_creates_a_resource_and_reads_it_back(http: httpx.AsyncClient, demo: DemoServices) -> None:
    """The README's tour: POST /api/service-a/resource creates a resource, GET /api/service-b/resource/{id} reads
    the same resource back (the demo's two services share one store)."""
    created = await create(http, {"name": "tour", "attributes": {"colour": "green"}}, key(), Prefer="wait=10")
    assert created.status_code == 201, created.text
    resource = created.json()["result"]["body"]
    read = await http.get(f"/api/service-b/resource/{resource['id']}")
    assert read.status_code == 200
    assert read.json() == resource == {"id": resource["id"], "name": "tour", "attributes": {"colour": "green"}}
    assert demo.b.calls == 1


# --- GET /api/service-b/resource/{id} (exposed read) ----------------------------------------------------------


async def test_read_through_stores_and_serves_stale(http: httpx.AsyncClient, demo: DemoServices) -> None:
    """A good read is returned and stored; while service-b fails the stored copy is served marked stale; an id
    never read is 503 with Retry-After; a downstream 404 is a 404."""
    fresh = await http.get("/api/service-b/resource/r1")
    assert fresh.status_code == 200
    assert fresh.json()["id"] == "r1"
    assert "x-cache" not in fresh.headers
    demo.b.faults.status = 503
    stale = await http.get("/api/service-b/resource/r1")
    never = await http.get("/api/service-b/resource/r2")
    demo.b.faults.status = None
    missing = await http.get("/api/service-b/resource/missing-1")
    assert stale.status_code == 200
    assert stale.json() == fresh.json()
    assert stale.headers["x-cache"] == "stale"
    assert int(stale.headers["age"]) >= 0
    assert stale.headers["warning"].startswith("110")
    assert never.status_code == 503
    assert int(never.headers["retry-after"]) >= 1
    assert (missing.status_code, missing.json()["error"]) == (404, "not_found")


async def test_open_breaker_serves_stale_without_calling(
    make_settings, cleanup_namespace: None, run_id: str, demo: DemoServices
) -> None:
    """Once service-b's breaker is open a read costs no call: the stale copy is served, and an id without one is
    503 with the breaker's remaining open time as Retry-After."""
    settings = make_settings(
        api={"stale_cache": {"key_prefix": f"{run_id}:stale:", "ttl_seconds": 60}},
        downstreams={
            "service-b": {
                "base_url": demo.url_b,
                "retry": {"max_attempts": 1},
                "breaker": {"window_size": 4, "minimum_calls": 4, "wait_in_open": 30},
                "routes": {
                    "get-resource": {
                        "method": "GET",
                        "path": "/resource/{id}",
                        "expose": {"path": "/api/service-b/resource/{id}"},
                    }
                },
            }
        },
    )
    async with (
        Daemon(settings) as daemon,
        httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{daemon.sidecar.port}"  # type: ignore[union-attr]
        ) as http,
    ):
        assert (await http.get("/api/service-b/resource/r1")).status_code == 200
        demo.b.faults.status = 503
        for _ in range(4):
            await http.get("/api/service-b/resource/r9")
        assert daemon.clients["service-b"].breaker.state is BreakerState.OPEN
        calls = demo.b.calls
        stale = await http.get("/api/service-b/resource/r1")
        none = await http.get("/api/service-b/resource/r2")
        health = (await http.get("/health")).json()
        assert demo.b.calls == calls, "an open breaker makes no call"
    assert (stale.status_code, stale.headers["x-cache"]) == (200, "stale")
    assert none.status_code == 503
    assert 20 <= int(none.headers["retry-after"]) <= 30
    assert health["status"] == "warn"
    assert health["checks"]["breaker:service-b"][0]["status"] == "warn"
    assert health["checks"]["breaker:service-a"][0]["status"] == "pass"


async def test_no_exposures_serve_no_command_or_read_endpoints(
    make_settings, cleanup_namespace: None, demo: DemoServices
) -> None:
    """Routes without `expose:` are AMQP only: no POST or GET endpoint for them, none in /openapi.json, while
    the sidecar's own endpoints stay."""
    settings = make_settings(
        downstreams={
            "service-a": {"base_url": demo.url_a, "routes": {"create-resource": {"path": "/resource"}}},
            "service-b": {
                "base_url": demo.url_b,
                "routes": {"get-resource": {"method": "GET", "path": "/resource/{id}"}},
            },
        }
    )
    async with (
        Daemon(settings) as daemon,
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.sidecar.port}") as http,  # type: ignore[union-attr]
    ):
        post = await http.post(RESOURCE, json={"name": "x"}, headers={"Idempotency-Key": key()})
        read = await http.get("/api/service-b/resource/r1")
        spec = (await http.get("/openapi.json")).json()
        health = await http.get("/health")
    assert (post.status_code, read.status_code) == (404, 404)
    assert set(spec["paths"]) == OWN_PATHS
    assert health.status_code == 200
    assert (demo.a.calls, demo.b.calls) == (0, 0)


# --- health, admin -------------------------------------------------------------------------------------------


async def test_health_has_backlog_and_breaker_checks(http: httpx.AsyncClient) -> None:
    """/health lists the outbox backlog and one check per breaker, all passing when idle."""
    body = (await http.get("/health")).json()
    assert body["checks"]["outbox:backlog"][0]["status"] == "pass"
    assert body["checks"]["outbox:backlog"][0]["observedUnit"] == "documents"
    assert body["checks"]["breaker:service-a"][0]["status"] == "pass"
    assert body["checks"]["breaker:service-b"][0]["status"] == "pass"


async def test_backlog_above_threshold_warns(make_settings, cleanup_namespace: None) -> None:
    """More pending outbox documents than api.outbox_backlog_warn make /health warn (still 200)."""
    async with Daemon(make_settings(api={"outbox_backlog_warn": 1})) as daemon:
        assert daemon.relay is not None
        assert daemon.mongo is not None
        await daemon.relay.stop()  # the documents below are placeholders, not publishable
        collection = daemon.mongo[daemon.settings.outbox.database]["outbox"]
        await collection.insert_many([{"key": f"x{i}", "status": "pending", "kind": "command"} for i in range(2)])
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.sidecar.port}") as http:  # type: ignore[union-attr]
            response = await http.get("/health")
    assert response.status_code == 200
    assert response.json()["status"] == "warn"
    check = response.json()["checks"]["outbox:backlog"][0]
    assert (check["status"], check["observedValue"]) == ("warn", 2)


async def test_admin_forces_breaker_with_token_only(api: Daemon, http: httpx.AsyncClient) -> None:
    """Admin endpoints need the bearer token; with it they force a breaker open and closed."""
    no_token = await http.post("/admin/breakers/service-b/open")
    wrong = await http.post("/admin/breakers/service-b/open", headers={"Authorization": "Bearer nope"})
    opened = await http.post("/admin/breakers/service-b/open", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    state_open = api.clients["service-b"].breaker.state
    closed = await http.post("/admin/breakers/service-b/close", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    unknown = await http.post("/admin/breakers/nobody/open", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert no_token.status_code == 401
    assert no_token.headers["www-authenticate"].startswith("Bearer")
    assert wrong.status_code == 401
    assert opened.json() == {"downstream": "service-b", "state": "open", "changed": True}
    assert state_open is BreakerState.OPEN
    assert closed.json()["state"] == "closed"
    assert unknown.status_code == 404


async def test_admin_endpoints_absent_by_default(sidecar_url: str) -> None:
    """Without admin.token there are no admin endpoints at all."""
    async with httpx.AsyncClient(base_url=sidecar_url) as http:
        response = await http.post("/admin/breakers/service-b/open")
        spec = (await http.get("/openapi.json")).json()
    assert response.status_code == 404
    assert not any(path.startswith("/admin") for path in spec["paths"])


async def test_key_with_slash_has_a_working_status_url(http: httpx.AsyncClient) -> None:
    """Keys are any printable ASCII: a key with '/' and '?' gets a quoted status URL that finds it."""
    k = f"order/{uuid.uuid4().hex}?v=1"
    response = await create(http, {"name": "slash"}, k)
    assert response.status_code == 202
    assert response.json()["status_url"].startswith("/api/commands/order%2F")
    status = await finished(http, response.json()["status_url"])
    assert (status["command_id"], status["status"]) == (k, "succeeded")


async def test_redis_down_fails_closed(make_settings, cleanup_namespace: None, unused_port: int) -> None:
    """Without Redis a command cannot be recorded: 503 with Retry-After and nothing published; reads still
    work (without a stale copy to fall back on)."""
    settings = make_settings(redis_url=f"redis://127.0.0.1:{unused_port}/0")
    async with Daemon(settings) as daemon:
        connection, probe = await bind_probe_queue(daemon.topology.commands_exchange_name, "service-a.#")
        async with (
            connection,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{daemon.sidecar.port}") as http,  # type: ignore[union-attr]
        ):
            command = await create(http, {"name": "x"}, key())
            read = await http.get("/api/service-b/resource/r1")
            await asyncio.sleep(0.3)
            assert await probe.get(fail=False) is None
    assert command.status_code == 503
    assert command.json()["error"] == "unavailable"
    assert int(command.headers["retry-after"]) >= 1
    assert read.status_code == 200


async def test_key_in_flight_over_amqp_is_409_or_422(api: Daemon, http: httpx.AsyncClient, demo: DemoServices) -> None:
    """A key a consumer is handling (published over AMQP, not HTTP) is seen too: same payload 409, other 422;
    once done, the stored reply; one downstream call in all."""
    k = key()
    demo.a.faults.latency_ms = 1500
    command = Outgoing("service-a.create-resource", orjson.dumps({"name": "amqp"}), message_id=k, want_reply=False)
    await pika_send(api.topology.commands_exchange_name, [command])
    await wait_for(lambda: demo.a.calls_by_key[k] == 1, timeout=10)
    same = await create(http, {"name": "amqp"}, k)
    other = await create(http, {"name": "http"}, k)
    await wait_for(lambda: demo.a.effects == 1, timeout=10)
    done = await wait_for(lambda: _stored_reply(http, k), timeout=10)
    assert (same.status_code, same.json()["error"]) == (409, "in_flight")
    assert (other.status_code, other.json()["error"]) == (422, "conflict")
    assert (done.status_code, done.json()["command_id"]) == (201, k)
    assert demo.a.calls_by_key[k] == 1


async def _stored_reply(http: httpx.AsyncClient, k: str) -> httpx.Response | None:
    response = await create(http, {"name": "amqp"}, k)
    return response if response.status_code == 201 else None
