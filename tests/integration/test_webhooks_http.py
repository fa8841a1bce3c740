"""POST /api/webhooks/{service} on the live sidecar, signed by the senders' own libraries.

Standard Webhooks deliveries are signed with PyPI ``standardwebhooks`` and ``svix``, Stripe deliveries with
``stripe.WebhookSignature``; GitHub has no signing library, so its deliveries are signed with ``hmac`` as
GitHub's docs describe, and the docs' own test vector is checked end to end. Every refusal is checked for
"nothing enqueued": no outbox document and no event on s2s.events.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import httpx
import orjson
import pytest
import standardwebhooks.webhooks
import stripe
import svix.webhooks
from prometheus_client.parser import text_string_to_metric_families

from s2s_daemon.app import Daemon
from s2s_daemon.http.webhooks import RejectReason
from s2s_daemon.observability.correlation import TraceContext
from tests.support import bind_probe_queue, drain

pytestmark = pytest.mark.integration

SW_SECRET = "whsec_" + base64.b64encode(b"integration standard-webhooks k1").decode()
SW_ROTATED = "whsec_" + base64.b64encode(b"integration standard-webhooks k2").decode()
SW_RETIRED = "whsec_" + base64.b64encode(b"retired standard-webhooks secret").decode()
SW_OTHER = "whsec_" + base64.b64encode(b"a secret nobody ever configured").decode()
GH_SECRET, GH_RETIRED = "gh-integration-secret", "gh-retired-secret"
GH_DOCS_SECRET = "It's a Secret to Everybody"
GH_DOCS_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
ST_SECRET, ST_RETIRED = "whsec_stripe_integration", "whsec_stripe_retired"
LIMIT = 4096

SW_BODY = b'{"type":"invoice.paid","data":{"id":"in_1","amount":4200}}'
GH_BODY = b'{"action":"opened","number":7}'


def st_body(event_id: str) -> bytes:
    return orjson.dumps({"id": event_id, "object": "event", "type": "payment_intent.succeeded"})


WEBHOOKS = {
    "acme": {"scheme": "standard-webhooks", "secrets": [SW_SECRET, SW_ROTATED], "max_body_bytes": LIMIT},
    "github": {"scheme": "github", "secrets": [GH_SECRET]},
    "github-docs": {"scheme": "github", "secrets": [GH_DOCS_SECRET]},
    "stripe": {"scheme": "stripe", "secrets": [ST_SECRET], "tolerance_seconds": 300},
}


# --- signing with the senders' libraries --------------------------------------------------------------------

Signer = Callable[[str, str, datetime, str], str]


def _sign_standardwebhooks(secret: str, msg_id: str, when: datetime, body: str) -> str:
    return standardwebhooks.webhooks.Webhook(secret).sign(msg_id, when, body)


def _sign_svix(secret: str, msg_id: str, when: datetime, body: str) -> str:
    return svix.webhooks.Webhook(secret).sign(msg_id, when, body)


def sw_headers(
    body: bytes = SW_BODY,
    *,
    secret: str = SW_SECRET,
    msg_id: str | None = None,
    timestamp: int | None = None,
    signer: Signer = _sign_standardwebhooks,
) -> dict[str, str]:
    msg_id = msg_id or f"msg_{uuid.uuid4().hex}"
    timestamp = int(time.time()) if timestamp is None else timestamp
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signer(secret, msg_id, when, body.decode()),
        "content-type": "application/json",
    }


def gh_headers(body: bytes = GH_BODY, *, secret: str = GH_SECRET, delivery: str | None = None) -> dict[str, str]:
    return {
        "x-hub-signature-256": "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest(),
        "x-github-delivery": delivery or str(uuid.uuid4()),
        "x-github-event": "pull_request",
        "content-type": "application/json",
    }


def st_headers(body: bytes, *, secret: str = ST_SECRET, timestamp: int | None = None) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(
        body.decode(), secret, timestamp=int(time.time()) if timestamp is None else timestamp
    )
    return {"stripe-signature": header, "content-type": "application/json"}


# --- fixtures and helpers ------------------------------------------------------------------------------------


@pytest.fixture
async def hooks(make_settings, cleanup_namespace: None) -> AsyncIterator[Daemon]:
    async with Daemon(make_settings(webhooks=WEBHOOKS)) as daemon:
        yield daemon


def url(daemon: Daemon) -> str:
    assert daemon.sidecar is not None
    return f"http://127.0.0.1:{daemon.sidecar.port}"


async def post(daemon: Daemon, service: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=url(daemon)) as http:
        return await http.post(f"/api/webhooks/{service}", content=body, headers=headers)


async def webhook_documents(daemon: Daemon) -> list[dict[str, Any]]:
    assert daemon.mongo is not None
    collection = daemon.mongo[daemon.settings.outbox.database]["outbox"]
    return await collection.find({"kind": "webhook"}).to_list()


async def metric_samples(daemon: Daemon) -> dict[tuple[str, str], float]:
    async with httpx.AsyncClient(base_url=url(daemon)) as http:
        text = (await http.get("/metrics")).text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {
        (s.labels["service"], s.labels["result"]): s.value
        for s in families["s2s_webhooks"].samples
        if s.name == "s2s_webhooks_total"
    }


async def nothing_published(queue: Any, seconds: float = 1.5) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await queue.get(fail=False, no_ack=True) is not None:
            return False
        await asyncio.sleep(0.05)
    return True


# --- accepted deliveries -------------------------------------------------------------------------------------


@pytest.mark.parametrize("signer", [_sign_standardwebhooks, _sign_svix], ids=["standardwebhooks", "svix"])
async def test_standard_webhook_becomes_cloudevent(hooks: Daemon, signer: Signer) -> None:
    """A signed Standard Webhooks delivery is 202 after the outbox write and is published as a CloudEvent on
    s2s.events with routing key webhook.<service>.<type>, keeping the caller's correlation id, trace and tracestate."""
    connection, queue = await bind_probe_queue(hooks.topology.events_exchange_name, "webhook.#")
    async with connection:
        trace = TraceContext.new()
        headers = sw_headers(signer=signer) | {
            "x-correlation-id": "corr-wh-1",
            "traceparent": trace.header,
            "tracestate": "rojo=00f067aa0ba902b7",
        }
        response = await post(hooks, "acme", SW_BODY, headers)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["duplicate"] is False
        assert answer["delivery_id"] == headers["webhook-id"]
        assert response.headers["x-correlation-id"] == "corr-wh-1"
        [event] = await drain(queue, 1)
    assert event.routing_key == "webhook.acme.invoice.paid"
    assert event.correlation_id == "corr-wh-1"
    assert TraceContext.parse(event.headers["traceparent"]).trace_id == trace.trace_id  # type: ignore[union-attr]
    assert event.headers["tracestate"] == "rojo=00f067aa0ba902b7"
    envelope = event.json()
    assert envelope["specversion"] == "1.0"
    assert envelope["type"] == "webhook.acme.invoice.paid"
    assert envelope["source"].endswith("/webhooks/acme")
    assert envelope["subject"] == headers["webhook-id"]
    assert envelope["id"] == answer["event_id"]
    assert envelope["data"] == orjson.loads(SW_BODY)


async def test_rotated_secret_verifies(hooks: Daemon) -> None:
    """Any configured secret verifies: the second one of a rotation is accepted."""
    response = await post(hooks, "acme", SW_BODY, sw_headers(secret=SW_ROTATED))
    assert response.status_code == 202


async def test_github_delivery_accepted(hooks: Daemon) -> None:
    """A GitHub delivery signed as GitHub's docs describe is accepted; its type is X-GitHub-Event."""
    connection, queue = await bind_probe_queue(hooks.topology.events_exchange_name, "webhook.github.#")
    async with connection:
        response = await post(hooks, "github", GH_BODY, gh_headers())
        assert response.status_code == 202
        [event] = await drain(queue, 1)
    assert event.routing_key == "webhook.github.pull_request"


async def test_github_docs_vector_passes_signature(hooks: Daemon) -> None:
    """GitHub's documented vector passes the signature check end to end; its body is not JSON, so it is then
    refused as malformed (400), not as a bad signature, and nothing is enqueued."""
    headers = {
        "x-hub-signature-256": GH_DOCS_SIGNATURE,
        "x-github-delivery": str(uuid.uuid4()),
        "x-github-event": "ping",
        "content-type": "application/json",
    }
    response = await post(hooks, "github-docs", b"Hello, World!", headers)
    assert (response.status_code, response.json()["reason"]) == (400, "malformed JSON body")
    tampered = await post(hooks, "github-docs", b"Hello, World?", headers)
    assert (tampered.status_code, tampered.json()["reason"]) == (401, "signature mismatch")
    assert await webhook_documents(hooks) == []


async def test_stripe_delivery_accepted(hooks: Daemon) -> None:
    """A delivery signed by stripe's own library is accepted; the event id is the delivery id."""
    body = st_body("evt_integration_1")
    response = await post(hooks, "stripe", body, st_headers(body))
    assert response.status_code == 202
    assert response.json()["delivery_id"] == "evt_integration_1"
    assert response.json()["event_type"] == "payment_intent.succeeded"


async def test_replay_is_2xx_and_enqueues_nothing(hooks: Daemon) -> None:
    """The same delivery again (same id) is answered 200 duplicate; one outbox document, one event."""
    connection, queue = await bind_probe_queue(hooks.topology.events_exchange_name, "webhook.#")
    async with connection:
        headers = sw_headers()
        first = await post(hooks, "acme", SW_BODY, headers)
        [_] = await drain(queue, 1)
        again = await post(hooks, "acme", SW_BODY, headers)
        resigned = await post(hooks, "acme", SW_BODY, sw_headers(msg_id=headers["webhook-id"]))
        assert await nothing_published(queue)
    assert first.status_code == 202
    assert (again.status_code, again.json()["duplicate"]) == (200, True)
    assert (resigned.status_code, resigned.json()["duplicate"]) == (200, True)
    assert again.json()["event_id"] == first.json()["event_id"]
    assert len(await webhook_documents(hooks)) == 1
    samples = await metric_samples(hooks)
    assert samples[("acme", "accepted")] == 1
    assert samples[("acme", "duplicate")] == 2


# --- refusals ------------------------------------------------------------------------------------------------


def _flip(body: bytes) -> bytes:
    return body[:5] + bytes([body[5] ^ 0x01]) + body[6:]


def _without(headers: dict[str, str], name: str) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k != name}


_OLD = int(time.time()) - 3600
_ST = st_body("evt_tamper")
TAMPERED: list[tuple[str, str, bytes, Callable[[], dict[str, str]], int, str]] = [
    # (case, service, body, headers, status, reason)
    ("sw-changed-byte", "acme", _flip(SW_BODY), lambda: sw_headers(), 401, "signature mismatch"),
    ("sw-wrong-secret", "acme", SW_BODY, lambda: sw_headers(secret=SW_OTHER), 401, "signature mismatch"),
    ("sw-retired-secret", "acme", SW_BODY, lambda: sw_headers(secret=SW_RETIRED), 401, "signature mismatch"),
    ("sw-stale-timestamp", "acme", SW_BODY, lambda: sw_headers(timestamp=_OLD), 401, "timestamp outside tolerance"),
    (
        "sw-missing-signature",
        "acme",
        SW_BODY,
        lambda: _without(sw_headers(), "webhook-signature"),
        401,
        "missing signature header",
    ),
    (
        "sw-malformed-signature",
        "acme",
        SW_BODY,
        lambda: sw_headers() | {"webhook-signature": "v1,not-base64!"},
        401,
        "malformed signature header",
    ),
    ("sw-missing-id", "acme", SW_BODY, lambda: _without(sw_headers(), "webhook-id"), 400, "missing delivery id"),
    (
        "sw-wrong-content-type",
        "acme",
        SW_BODY,
        lambda: sw_headers() | {"content-type": "text/plain"},
        415,
        "unsupported content type",
    ),
    ("gh-changed-byte", "github", _flip(GH_BODY), lambda: gh_headers(), 401, "signature mismatch"),
    ("gh-wrong-secret", "github", GH_BODY, lambda: gh_headers(secret="not-the-secret"), 401, "signature mismatch"),
    ("gh-retired-secret", "github", GH_BODY, lambda: gh_headers(secret=GH_RETIRED), 401, "signature mismatch"),
    (
        "gh-missing-signature",
        "github",
        GH_BODY,
        lambda: _without(gh_headers(), "x-hub-signature-256"),
        401,
        "missing signature header",
    ),
    (
        "gh-malformed-signature",
        "github",
        GH_BODY,
        lambda: gh_headers() | {"x-hub-signature-256": "sha1=abc"},
        401,
        "malformed signature header",
    ),
    ("st-changed-byte", "stripe", _flip(_ST), lambda: st_headers(_ST), 401, "signature mismatch"),
    ("st-wrong-secret", "stripe", _ST, lambda: st_headers(_ST, secret="whsec_nope"), 401, "signature mismatch"),
    ("st-retired-secret", "stripe", _ST, lambda: st_headers(_ST, secret=ST_RETIRED), 401, "signature mismatch"),
    (
        "st-stale-timestamp",
        "stripe",
        _ST,
        lambda: st_headers(_ST, timestamp=_OLD),
        401,
        "timestamp outside tolerance",
    ),
    (
        "st-missing-signature",
        "stripe",
        _ST,
        lambda: {"content-type": "application/json"},
        401,
        "missing signature header",
    ),
    (
        "st-malformed-signature",
        "stripe",
        _ST,
        lambda: {"stripe-signature": "t=abc,v1=zz", "content-type": "application/json"},
        401,
        "malformed signature header",
    ),
]


@pytest.mark.parametrize(
    ("service", "body", "make_headers", "status", "reason"),
    [case[1:] for case in TAMPERED],
    ids=[case[0] for case in TAMPERED],
)
async def test_tampered_delivery_refused_and_nothing_enqueued(
    hooks: Daemon, service: str, body: bytes, make_headers: Callable[[], dict[str, str]], status: int, reason: str
) -> None:
    """Each tamper class is refused with its status and a short JSON reason; no outbox document, no event, and
    the refusal is counted under the verifier's reason."""
    connection, queue = await bind_probe_queue(hooks.topology.events_exchange_name, "webhook.#")
    async with connection:
        response = await post(hooks, service, body, make_headers())
        assert await nothing_published(queue, 0.7)
    assert response.status_code == status
    assert response.json() == {"error": "rejected", "reason": reason}
    assert await webhook_documents(hooks) == []
    samples = await metric_samples(hooks)
    assert samples[(service, RejectReason(reason).name.lower())] == 1


async def test_unknown_service_is_404_without_metric_series(hooks: Daemon) -> None:
    """An unconfigured service is 404 and leaves no trace in /metrics."""
    response = await post(hooks, "nobody", SW_BODY, sw_headers())
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    async with httpx.AsyncClient(base_url=url(hooks)) as http:
        assert 'service="nobody"' not in (await http.get("/metrics")).text


async def test_oversize_body_with_content_length_is_413(hooks: Daemon) -> None:
    """A declared Content-Length above the source's limit is refused before any body byte is read: the answer
    comes although the body is never sent."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hooks.sidecar.port)  # type: ignore[union-attr]
    writer.write(
        b"POST /api/webhooks/acme HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Content-Length: 50000000\r\n\r\n"
    )
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert (await metric_samples(hooks))[("acme", "body_too_large")] == 1


async def test_oversize_chunked_body_is_cut_off_while_streaming(hooks: Daemon) -> None:
    """Without Content-Length the body is counted while it streams: 413 arrives after limit+1 bytes, while the
    sender has not finished (the terminating chunk is never sent)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", hooks.sidecar.port)  # type: ignore[union-attr]
    writer.write(
        b"POST /api/webhooks/acme HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"x" * 1024
    for _ in range(LIMIT // 1024 + 1):
        writer.write(b"%x\r\n%s\r\n" % (len(chunk), chunk))
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 5)
    writer.close()
    await writer.wait_closed()
    assert status_line.startswith(b"HTTP/1.1 413")
    assert await webhook_documents(hooks) == []


async def test_oversize_body_via_client_is_413(hooks: Daemon) -> None:
    """An ordinary client sending a signed but oversize body gets 413 and a JSON reason."""
    body = orjson.dumps({"type": "big", "pad": "x" * LIMIT})
    response = await post(hooks, "acme", body, sw_headers(body))
    assert (response.status_code, response.json()["reason"]) == (413, "body too large")
    assert await webhook_documents(hooks) == []


async def test_unexpected_failure_is_500_with_correlation_id(hooks: Daemon, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure nobody planned for (here the outbox write raising a bare error) is answered as Starlette's error
    middleware answers it, plain-text 500, still carrying X-Correlation-ID; a wrong method is still 405 JSON."""

    async def broken(_: Any) -> None:
        raise RuntimeError("not a planned failure")

    assert hooks.outbox is not None
    monkeypatch.setattr(hooks.outbox, "write", broken)
    response = await post(hooks, "acme", SW_BODY, sw_headers() | {"x-correlation-id": "corr-500"})
    assert (response.status_code, response.text) == (500, "Internal Server Error")
    assert response.headers["content-type"] == "text/plain; charset=utf-8"
    assert response.headers["x-correlation-id"] == "corr-500"
    async with httpx.AsyncClient(base_url=url(hooks)) as http:
        wrong_method = await http.get("/api/webhooks/acme")
    assert (wrong_method.status_code, wrong_method.json()["error"]) == (405, "method_not_allowed")
    assert wrong_method.headers["allow"] == "POST"
