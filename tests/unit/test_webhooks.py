"""Webhook verifiers against signatures made by the senders' own libraries, never by our code.

Standard Webhooks: PyPI ``standardwebhooks`` and ``svix``. Stripe: ``stripe.WebhookSignature``. GitHub
publishes no signing library, so GitHub deliveries are signed with the stdlib ``hmac`` exactly as GitHub's
docs describe, and that helper is pinned to the test vector from those docs.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest
import standardwebhooks.webhooks
import stripe
import svix.webhooks
from hypothesis import given
from hypothesis import strategies as st
from pydantic import SecretStr, ValidationError
from starlette.datastructures import Headers

from s2s_daemon.http.webhooks import (
    GitHubVerifier,
    RejectReason,
    StandardWebhooksVerifier,
    StripeVerifier,
    VerifiedWebhook,
    WebhookRejected,
    build_verifier,
    parse_github_signature,
    parse_standard_signatures,
    parse_stripe_signature,
)
from s2s_daemon.settings import WebhookSourceSettings

NOW = 1_700_000_000
JSON = "application/json"

SW_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"  # the example secret of the Standard Webhooks docs
SW_ROTATED = "whsec_" + base64.b64encode(b"the rotated standard-webhooks k").decode()
SW_OTHER = "whsec_" + base64.b64encode(b"a secret nobody configured here").decode()
SW_BODY = b'{"type":"invoice.paid","data":{"id":"in_1","amount":4200}}'

GH_DOCS_SECRET = "It's a Secret to Everybody"
GH_DOCS_BODY = b"Hello, World!"
GH_DOCS_SIGNATURE = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
GH_SECRET = "gh-current-secret"
GH_ROTATED = "gh-rotated-secret"
GH_BODY = b'{"action":"opened","number":7}'

ST_SECRET = "whsec_stripe_current"
ST_ROTATED = "whsec_stripe_rotated"
ST_BODY = b'{"id":"evt_1NG8Du2eZvKYlo2CUI79vXWy","object":"event","type":"payment_intent.succeeded"}'

SwSigner = Callable[[str, str, datetime, str], str]


def _sign_standardwebhooks(secret: str, msg_id: str, when: datetime, body: str) -> str:
    return standardwebhooks.webhooks.Webhook(secret).sign(msg_id, when, body)


def _sign_svix(secret: str, msg_id: str, when: datetime, body: str) -> str:
    return svix.webhooks.Webhook(secret).sign(msg_id, when, body)


SW_SIGNERS = pytest.mark.parametrize("signer", [_sign_standardwebhooks, _sign_svix], ids=["standardwebhooks", "svix"])


def _source(scheme: str, *secrets: str, **extra: object) -> WebhookSourceSettings:
    return WebhookSourceSettings.model_validate({"scheme": scheme, "secrets": list(secrets), **extra})


def sw_headers(
    signer: SwSigner = _sign_standardwebhooks,
    *,
    secret: str = SW_SECRET,
    body: bytes = SW_BODY,
    msg_id: str = "msg_2KWPBgLlAfxdpx2AI54pPJ85f4W",
    timestamp: int = NOW,
    prefix: str = "Webhook-",
) -> dict[str, str]:
    when = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        f"{prefix}Id": msg_id,
        f"{prefix}Timestamp": str(timestamp),
        f"{prefix}Signature": signer(secret, msg_id, when, body.decode()),
        "Content-Type": JSON,
    }


def gh_sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def gh_headers(*, secret: str = GH_SECRET, body: bytes = GH_BODY) -> dict[str, str]:
    return {
        "X-Hub-Signature-256": gh_sign(secret, body),
        "X-GitHub-Delivery": "72d3162e-cc78-11e3-81ab-4c9367dc0958",
        "X-GitHub-Event": "pull_request",
        "Content-Type": JSON,
    }


def st_headers(*, secret: str = ST_SECRET, body: bytes = ST_BODY, timestamp: int = NOW) -> dict[str, str]:
    header = stripe.WebhookSignature.generate_signature_header(body.decode(), secret, timestamp=timestamp)
    return {"Stripe-Signature": header, "Content-Type": JSON}


def sw_verifier(*secrets: str, **extra: object) -> StandardWebhooksVerifier:
    return StandardWebhooksVerifier.from_settings(_source("standard-webhooks", *(secrets or (SW_SECRET,)), **extra))


def gh_verifier(*secrets: str, **extra: object) -> GitHubVerifier:
    return GitHubVerifier.from_settings(_source("github", *(secrets or (GH_SECRET,)), **extra))


def st_verifier(*secrets: str, **extra: object) -> StripeVerifier:
    return StripeVerifier.from_settings(_source("stripe", *(secrets or (ST_SECRET,)), **extra))


def rejected(
    verifier: StandardWebhooksVerifier | GitHubVerifier | StripeVerifier,
    body: bytes,
    headers: dict[str, str],
    now: float = NOW,
) -> WebhookRejected:
    with pytest.raises(WebhookRejected) as info:
        verifier.verify(body, Headers(headers=headers), now=now)
    return info.value


def flip(body: bytes, index: int = 5) -> bytes:
    return body[:index] + bytes([body[index] ^ 0x01]) + body[index + 1 :]


# --- Standard Webhooks -------------------------------------------------------------------------------------


@SW_SIGNERS
def test_standard_accepts_reference_signature(signer: SwSigner) -> None:
    """A delivery signed by the reference library verifies and yields id, type, timestamp and the raw body."""
    result = sw_verifier().verify(SW_BODY, Headers(headers=sw_headers(signer)), now=NOW)
    assert result == VerifiedWebhook("msg_2KWPBgLlAfxdpx2AI54pPJ85f4W", "invoice.paid", NOW, SW_BODY)


def test_standard_accepts_svix_branded_headers() -> None:
    """Svix's svix-id/svix-timestamp/svix-signature header names verify like the webhook-* ones."""
    headers = sw_headers(_sign_svix, prefix="Svix-")
    assert sw_verifier().verify(SW_BODY, Headers(headers=headers), now=NOW).event_type == "invoice.paid"


def test_standard_accepts_bare_base64_secret() -> None:
    """A secret configured without the whsec_ prefix is the same key."""
    verifier = sw_verifier(SW_SECRET.removeprefix("whsec_"))
    assert verifier.verify(SW_BODY, Headers(headers=sw_headers()), now=NOW).timestamp == NOW


@SW_SIGNERS
def test_standard_rejects_changed_body_byte(signer: SwSigner) -> None:
    """One changed body byte breaks the signature."""
    error = rejected(sw_verifier(), flip(SW_BODY), sw_headers(signer))
    assert (error.reason, error.status) == (RejectReason.SIGNATURE_MISMATCH, 401)


@SW_SIGNERS
def test_standard_rejects_wrong_secret(signer: SwSigner) -> None:
    """A signature made with a secret that is not configured is refused."""
    error = rejected(sw_verifier(), SW_BODY, sw_headers(signer, secret=SW_OTHER))
    assert error.reason is RejectReason.SIGNATURE_MISMATCH


def test_standard_rejects_retired_secret() -> None:
    """Once the old secret is removed from the list, its signatures stop verifying."""
    headers = sw_headers(secret=SW_SECRET)
    sw_verifier(SW_SECRET, SW_ROTATED).verify(SW_BODY, Headers(headers=headers), now=NOW)
    assert rejected(sw_verifier(SW_ROTATED), SW_BODY, headers).reason is RejectReason.SIGNATURE_MISMATCH


@SW_SIGNERS
def test_standard_rotation_second_secret_verifies(signer: SwSigner) -> None:
    """With two configured secrets, a delivery signed with the second one verifies."""
    verifier = sw_verifier(SW_SECRET, SW_ROTATED)
    headers = sw_headers(signer, secret=SW_ROTATED)
    assert verifier.verify(SW_BODY, Headers(headers=headers), now=NOW).delivery_id.startswith("msg_")


def test_standard_accepts_any_listed_signature() -> None:
    """A header carrying several signatures verifies when any v1 entry matches, v1a entries being skipped."""
    good = sw_headers()
    other = sw_headers(secret=SW_OTHER)["Webhook-Signature"]
    good["Webhook-Signature"] = f"v1a,{base64.b64encode(bytes(64)).decode()} {other}  {good['Webhook-Signature']}"
    assert sw_verifier().verify(SW_BODY, Headers(headers=good), now=NOW).timestamp == NOW


@pytest.mark.parametrize("offset", [-301, 301, -10_000, 86_400], ids=["past", "future", "far-past", "far-future"])
def test_standard_rejects_timestamp_outside_tolerance(offset: int) -> None:
    """An authentic delivery whose timestamp is beyond the tolerance, either way, is refused."""
    headers = sw_headers(timestamp=NOW + offset)
    error = rejected(sw_verifier(), SW_BODY, headers)
    assert (error.reason, error.status) == (RejectReason.TIMESTAMP_OUTSIDE_TOLERANCE, 401)


@pytest.mark.parametrize("offset", [-300, 300])
def test_standard_accepts_timestamp_at_tolerance_edge(offset: int) -> None:
    """A timestamp exactly tolerance_seconds away is still inside."""
    headers = Headers(headers=sw_headers(timestamp=NOW + offset))
    assert sw_verifier().verify(SW_BODY, headers, now=NOW).timestamp == NOW + offset


def test_standard_tolerance_is_configurable() -> None:
    """tolerance_seconds widens or narrows the accepted window."""
    headers = sw_headers(timestamp=NOW - 600)
    assert sw_verifier(tolerance_seconds=900).verify(SW_BODY, Headers(headers=headers), now=NOW).timestamp
    assert rejected(sw_verifier(tolerance_seconds=60), SW_BODY, sw_headers(timestamp=NOW - 61)).reason == (
        RejectReason.TIMESTAMP_OUTSIDE_TOLERANCE
    )


@pytest.mark.parametrize(
    ("missing", "reason", "status"),
    [
        ("Webhook-Signature", RejectReason.MISSING_SIGNATURE_HEADER, 401),
        ("Webhook-Id", RejectReason.MISSING_DELIVERY_ID, 400),
        ("Webhook-Timestamp", RejectReason.MISSING_TIMESTAMP, 400),
    ],
)
def test_standard_rejects_missing_header(missing: str, reason: RejectReason, status: int) -> None:
    """Each of the three Standard Webhooks headers is required; without a signature it is unauthenticated."""
    headers = sw_headers()
    del headers[missing]
    error = rejected(sw_verifier(), SW_BODY, headers)
    assert (error.reason, error.status) == (reason, status)


@pytest.mark.parametrize(
    "value",
    ["", "   ", "v1", "v1,", ",abc", "v1,not base64!", "v1,AAAA", "v1,AAAA=AAAA", "v1," + "A" * 500],
)
def test_standard_rejects_malformed_signature_header(value: str) -> None:
    """A signature header that is not a list of version,base64 entries with 32-byte v1 digests is malformed."""
    headers = sw_headers() | {"Webhook-Signature": value}
    assert rejected(sw_verifier(), SW_BODY, headers).reason is RejectReason.MALFORMED_SIGNATURE_HEADER


def test_standard_rejects_only_unsupported_versions() -> None:
    """A header with only v1a (or other non-v1) entries has no signature we can check."""
    headers = sw_headers() | {"Webhook-Signature": "v1a,AAAA v2,BBBB"}
    assert rejected(sw_verifier(), SW_BODY, headers).reason is RejectReason.NO_SUPPORTED_SIGNATURE


@pytest.mark.parametrize("value", ["", "17e8", "-1700000000", "+1700000000", "1_700_000_000", "1700000000.5", "²"])
def test_standard_rejects_malformed_timestamp(value: str) -> None:
    """webhook-timestamp must be plain ASCII unix seconds."""
    headers = sw_headers() | {"Webhook-Timestamp": value}
    assert rejected(sw_verifier(), SW_BODY, headers).reason is RejectReason.MALFORMED_TIMESTAMP


def test_standard_rejects_malformed_delivery_id() -> None:
    """A signed webhook-id with whitespace cannot become a dedupe key."""
    headers = sw_headers(msg_id="msg 1")
    assert rejected(sw_verifier(), SW_BODY, headers).reason is RejectReason.MALFORMED_DELIVERY_ID


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"not json", RejectReason.MALFORMED_JSON),
        (b'["type"]', RejectReason.MALFORMED_JSON),
        (b'{"kind":"invoice.paid"}', RejectReason.MISSING_EVENT_TYPE),
        (b'{"type":42}', RejectReason.MALFORMED_EVENT_TYPE),
        (b'{"type":"has space"}', RejectReason.MALFORMED_EVENT_TYPE),
        (b'{"type":"%s"}' % (b"x" * 129), RejectReason.MALFORMED_EVENT_TYPE),
    ],
)
def test_standard_rejects_authentic_body_without_event_type(body: bytes, reason: RejectReason) -> None:
    """A correctly signed body must still be a JSON object with a string event type."""
    assert rejected(sw_verifier(), body, sw_headers(body=body)).reason is reason


def test_standard_event_type_field_is_configurable() -> None:
    """event_type_field names the body field that holds the event type."""
    body = b'{"eventType":"user.created"}'
    verifier = sw_verifier(event_type_field="eventType")
    assert verifier.verify(body, Headers(headers=sw_headers(body=body)), now=NOW).event_type == "user.created"


# --- GitHub ------------------------------------------------------------------------------------------------


def test_github_helper_reproduces_docs_vector() -> None:
    """The test signer reproduces the example from GitHub's "Validating webhook deliveries" docs."""
    assert gh_sign(GH_DOCS_SECRET, GH_DOCS_BODY) == GH_DOCS_SIGNATURE


def test_github_docs_vector_passes_signature_check() -> None:
    """GitHub's documented signature verifies; its non-JSON body is refused only after the signature."""
    headers = gh_headers(body=GH_DOCS_BODY) | {"X-Hub-Signature-256": GH_DOCS_SIGNATURE}
    assert rejected(gh_verifier(GH_DOCS_SECRET), GH_DOCS_BODY, headers).reason is RejectReason.MALFORMED_JSON
    assert rejected(gh_verifier("not it"), GH_DOCS_BODY, headers).reason is RejectReason.SIGNATURE_MISMATCH


def test_github_accepts_signed_delivery() -> None:
    """A signed delivery yields the X-GitHub-Delivery id, the X-GitHub-Event type and no timestamp."""
    result = gh_verifier().verify(GH_BODY, Headers(headers=gh_headers()), now=NOW)
    assert result == VerifiedWebhook("72d3162e-cc78-11e3-81ab-4c9367dc0958", "pull_request", None, GH_BODY)


def test_github_accepts_uppercase_hex() -> None:
    """The hex digest is compared as bytes, so its letter case does not matter."""
    headers = gh_headers()
    headers["X-Hub-Signature-256"] = "sha256=" + headers["X-Hub-Signature-256"][7:].upper()
    assert gh_verifier().verify(GH_BODY, Headers(headers=headers), now=NOW).event_type == "pull_request"


def test_github_ignores_clock() -> None:
    """GitHub signs no timestamp, so any clock accepts the delivery (replays are caught only by dedupe)."""
    assert gh_verifier().verify(GH_BODY, Headers(headers=gh_headers()), now=0).timestamp is None


def test_github_rejects_changed_body_byte() -> None:
    """One changed body byte breaks the signature."""
    error = rejected(gh_verifier(), flip(GH_BODY), gh_headers())
    assert (error.reason, error.status) == (RejectReason.SIGNATURE_MISMATCH, 401)


def test_github_rejects_wrong_secret() -> None:
    """A signature made with a secret that is not configured is refused."""
    assert rejected(gh_verifier(), GH_BODY, gh_headers(secret="guess")).reason is RejectReason.SIGNATURE_MISMATCH


def test_github_rejects_retired_secret() -> None:
    """Once the old secret is removed from the list, its signatures stop verifying."""
    headers = gh_headers(secret=GH_SECRET)
    gh_verifier(GH_SECRET, GH_ROTATED).verify(GH_BODY, Headers(headers=headers), now=NOW)
    assert rejected(gh_verifier(GH_ROTATED), GH_BODY, headers).reason is RejectReason.SIGNATURE_MISMATCH


def test_github_rotation_second_secret_verifies() -> None:
    """With two configured secrets, a delivery signed with the second one verifies."""
    headers = Headers(headers=gh_headers(secret=GH_ROTATED))
    assert gh_verifier(GH_SECRET, GH_ROTATED).verify(GH_BODY, headers, now=NOW).body == GH_BODY


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("X-Hub-Signature-256", RejectReason.MISSING_SIGNATURE_HEADER),
        ("X-GitHub-Delivery", RejectReason.MISSING_DELIVERY_ID),
        ("X-GitHub-Event", RejectReason.MISSING_EVENT_TYPE),
    ],
)
def test_github_rejects_missing_header(missing: str, reason: RejectReason) -> None:
    """The signature, delivery and event headers are all required."""
    headers = gh_headers()
    del headers[missing]
    assert rejected(gh_verifier(), GH_BODY, headers).reason is reason


def test_github_does_not_fall_back_to_sha1() -> None:
    """The legacy SHA-1 X-Hub-Signature header alone is not accepted."""
    headers = gh_headers()
    signature = headers.pop("X-Hub-Signature-256")
    headers["X-Hub-Signature"] = "sha1=" + hmac.new(GH_SECRET.encode(), GH_BODY, hashlib.sha1).hexdigest()
    assert signature.startswith("sha256=")
    assert rejected(gh_verifier(), GH_BODY, headers).reason is RejectReason.MISSING_SIGNATURE_HEADER


@pytest.mark.parametrize(
    "value",
    [
        "",
        GH_DOCS_SIGNATURE[7:],
        "sha1=" + GH_DOCS_SIGNATURE[7:],
        "SHA256=" + GH_DOCS_SIGNATURE[7:],
        "sha256=" + GH_DOCS_SIGNATURE[8:],
        "sha256=" + "zz" * 32,
        "sha256=" + GH_DOCS_SIGNATURE[7:] + "00",
    ],
)
def test_github_rejects_malformed_signature_header(value: str) -> None:
    """Anything but sha256= followed by 64 hex digits is malformed."""
    headers = gh_headers() | {"X-Hub-Signature-256": value}
    assert rejected(gh_verifier(), GH_BODY, headers).reason is RejectReason.MALFORMED_SIGNATURE_HEADER


# --- Stripe ------------------------------------------------------------------------------------------------


def test_stripe_accepts_library_signature() -> None:
    """A header from stripe.WebhookSignature verifies and yields the event id, type and the signed t."""
    result = st_verifier().verify(ST_BODY, Headers(headers=st_headers()), now=NOW)
    assert result == VerifiedWebhook("evt_1NG8Du2eZvKYlo2CUI79vXWy", "payment_intent.succeeded", NOW, ST_BODY)


def test_stripe_accepts_any_v1_and_skips_v0() -> None:
    """Several v1 entries verify when any matches; v0 entries are ignored."""
    good = st_headers()["Stripe-Signature"]
    wrong_v1 = st_headers(secret="whsec_other")["Stripe-Signature"].split(",")[1]
    header = f"{good.split(',')[0]},v0={'0' * 64},{wrong_v1},{good.split(',')[1]}"
    headers = Headers(headers={"Stripe-Signature": header, "Content-Type": JSON})
    assert st_verifier().verify(ST_BODY, headers, now=NOW).timestamp == NOW


def test_stripe_rejects_changed_body_byte() -> None:
    """One changed body byte breaks the signature."""
    error = rejected(st_verifier(), flip(ST_BODY, 20), st_headers())
    assert (error.reason, error.status) == (RejectReason.SIGNATURE_MISMATCH, 401)


def test_stripe_rejects_changed_timestamp() -> None:
    """The timestamp is signed: moving t to a fresh value breaks the signature."""
    header = st_headers(timestamp=NOW - 3600)["Stripe-Signature"].replace(f"t={NOW - 3600}", f"t={NOW}")
    error = rejected(st_verifier(), ST_BODY, {"Stripe-Signature": header, "Content-Type": JSON})
    assert error.reason is RejectReason.SIGNATURE_MISMATCH


def test_stripe_rejects_wrong_secret() -> None:
    """A signature made with a secret that is not configured is refused."""
    error = rejected(st_verifier(), ST_BODY, st_headers(secret="whsec_guess"))
    assert error.reason is RejectReason.SIGNATURE_MISMATCH


def test_stripe_rejects_retired_secret() -> None:
    """Once the old secret is removed from the list, its signatures stop verifying."""
    headers = st_headers(secret=ST_SECRET)
    st_verifier(ST_SECRET, ST_ROTATED).verify(ST_BODY, Headers(headers=headers), now=NOW)
    assert rejected(st_verifier(ST_ROTATED), ST_BODY, headers).reason is RejectReason.SIGNATURE_MISMATCH


def test_stripe_rotation_second_secret_verifies() -> None:
    """With two configured secrets, a delivery signed with the second one verifies."""
    headers = Headers(headers=st_headers(secret=ST_ROTATED))
    assert st_verifier(ST_SECRET, ST_ROTATED).verify(ST_BODY, headers, now=NOW).event_type


@pytest.mark.parametrize("offset", [-301, 301], ids=["past", "future"])
def test_stripe_rejects_timestamp_outside_tolerance(offset: int) -> None:
    """An authentic delivery whose t is more than 300 s away, either way, is refused."""
    error = rejected(st_verifier(), ST_BODY, st_headers(timestamp=NOW + offset))
    assert (error.reason, error.status) == (RejectReason.TIMESTAMP_OUTSIDE_TOLERANCE, 401)


def test_stripe_rejects_missing_header() -> None:
    """Without Stripe-Signature nothing is verified."""
    error = rejected(st_verifier(), ST_BODY, {"Content-Type": JSON})
    assert (error.reason, error.status) == (RejectReason.MISSING_SIGNATURE_HEADER, 401)


@pytest.mark.parametrize(
    "value",
    [
        "",
        "garbage",
        f"v1={'a' * 64}",
        f"t=abc,v1={'a' * 64}",
        f"t=-1,v1={'a' * 64}",
        f"t={NOW},t={NOW},v1={'a' * 64}",
        f"t={NOW},v1=xyz",
        f"t={NOW},v1={'a' * 63}",
        f"t={NOW},={'a' * 64}",
        f"t={NOW},v1",
        f"t={NOW}," + ",".join([f"v1={'a' * 64}"] * 40),
    ],
)
def test_stripe_rejects_malformed_signature_header(value: str) -> None:
    """A Stripe-Signature without exactly one numeric t and well-formed v1 entries is malformed."""
    headers = {"Stripe-Signature": value, "Content-Type": JSON}
    error = rejected(st_verifier(), ST_BODY, headers)
    assert (error.reason, error.status) == (RejectReason.MALFORMED_SIGNATURE_HEADER, 401)


def test_stripe_rejects_only_v0() -> None:
    """A header with only a v0 (test-mode legacy) signature has no signature we check."""
    headers = {"Stripe-Signature": f"t={NOW},v0={'a' * 64}", "Content-Type": JSON}
    assert rejected(st_verifier(), ST_BODY, headers).reason is RejectReason.NO_SUPPORTED_SIGNATURE


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"type":"charge.succeeded"}', RejectReason.MISSING_DELIVERY_ID),
        (b'{"id":7,"type":"charge.succeeded"}', RejectReason.MALFORMED_DELIVERY_ID),
        (b'{"id":"evt_1"}', RejectReason.MISSING_EVENT_TYPE),
        (b"[]", RejectReason.MALFORMED_JSON),
    ],
)
def test_stripe_rejects_authentic_body_without_id_or_type(body: bytes, reason: RejectReason) -> None:
    """A correctly signed Stripe body must carry a string event id and type."""
    assert rejected(st_verifier(), body, st_headers(body=body)).reason is reason


# --- all schemes -------------------------------------------------------------------------------------------

SCHEMES = pytest.mark.parametrize(
    ("make_verifier", "body", "make_headers"),
    [
        (sw_verifier, SW_BODY, lambda: sw_headers()),
        (gh_verifier, GH_BODY, lambda: gh_headers()),
        (st_verifier, ST_BODY, lambda: st_headers()),
    ],
    ids=["standard-webhooks", "github", "stripe"],
)


@SCHEMES
def test_rejects_oversize_body_before_anything_else(
    make_verifier: Callable[..., StandardWebhooksVerifier | GitHubVerifier | StripeVerifier],
    body: bytes,
    make_headers: Callable[[], dict[str, str]],
) -> None:
    """A body over max_body_bytes is refused with 413 even with valid signatures and no content type."""
    verifier = make_verifier(max_body_bytes=len(body) - 1)
    headers = make_headers()
    error = rejected(verifier, body, headers)
    assert (error.reason, error.status) == (RejectReason.BODY_TOO_LARGE, 413)
    assert rejected(verifier, body, {}).reason is RejectReason.BODY_TOO_LARGE
    assert make_verifier(max_body_bytes=len(body)).verify(body, Headers(headers=make_headers()), now=NOW)


@SCHEMES
@pytest.mark.parametrize(
    "content_type",
    [None, "text/plain", "application/x-www-form-urlencoded", "application/jsonx", "text/x+json", "json"],
)
def test_rejects_wrong_content_type(
    make_verifier: Callable[..., StandardWebhooksVerifier | GitHubVerifier | StripeVerifier],
    body: bytes,
    make_headers: Callable[[], dict[str, str]],
    content_type: str | None,
) -> None:
    """A validly signed body that is not declared JSON is refused with 415."""
    headers = make_headers()
    del headers["Content-Type"]
    if content_type is not None:
        headers["Content-Type"] = content_type
    error = rejected(make_verifier(), body, headers)
    assert (error.reason, error.status) == (RejectReason.UNSUPPORTED_CONTENT_TYPE, 415)


@SCHEMES
@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "Application/JSON", "application/cloudevents+json"]
)
def test_accepts_json_content_types(
    make_verifier: Callable[..., StandardWebhooksVerifier | GitHubVerifier | StripeVerifier],
    body: bytes,
    make_headers: Callable[[], dict[str, str]],
    content_type: str,
) -> None:
    """application/json with parameters, in any case, and application/*+json are JSON."""
    headers = make_headers() | {"Content-Type": content_type}
    assert make_verifier().verify(body, Headers(headers=headers), now=NOW).body == body


# --- settings ----------------------------------------------------------------------------------------------


def test_build_verifier_picks_scheme() -> None:
    """build_verifier returns the implementation named by the scheme, with the settings applied."""
    assert isinstance(build_verifier(_source("standard-webhooks", SW_SECRET)), StandardWebhooksVerifier)
    assert isinstance(build_verifier(_source("github", GH_SECRET)), GitHubVerifier)
    verifier = build_verifier(_source("stripe", ST_SECRET, tolerance_seconds=5, max_body_bytes=10))
    assert verifier == StripeVerifier(keys=(ST_SECRET.encode(),), tolerance_seconds=5, max_body_bytes=10)


@pytest.mark.parametrize(
    ("data", "loc", "message"),
    [
        ({"scheme": "github", "secrets": []}, "secrets", "at least 1 item"),
        ({"scheme": "github", "secrets": ["  "]}, "secrets", "secrets[0] is empty"),
        ({"scheme": "standard-webhooks", "secrets": [SW_SECRET, "whsec_not*base64"]}, "secrets", "secrets[1] is not"),
        ({"scheme": "standard-webhooks", "secrets": ["whsec_"]}, "secrets", "secrets[0] is empty"),
        ({"scheme": "standard-webhooks", "secrets": ["whpk_AAAA"]}, "secrets", "holds 32 bytes, got 3"),
        ({"scheme": "standard-webhooks", "secrets": ["whsk_" + "A" * 44]}, "secrets", "a signing key (whsk_)"),
        ({"scheme": "github", "secrets": ["s"], "event_type_field": "type"}, "event_type_field", "cannot be set"),
        ({"scheme": "gitlab", "secrets": ["s"]}, "scheme", "'standard-webhooks', 'github' or 'stripe'"),
        ({"scheme": "github", "secrets": ["s"], "tolerance_seconds": 0}, "tolerance_seconds", "greater than"),
        ({"scheme": "github", "secrets": ["s"], "secret": "s"}, "secret", "Extra inputs"),
    ],
)
def test_settings_fail_loudly(data: dict[str, object], loc: str, message: str) -> None:
    """Invalid webhook source settings fail at validation, naming the key and the problem."""
    with pytest.raises(ValidationError) as info:
        WebhookSourceSettings.model_validate(data)
    [error] = info.value.errors()
    assert error["loc"] == (loc,)
    assert message in error["msg"]


def test_secrets_never_shown() -> None:
    """Neither the settings nor the verifiers reveal secrets in repr or validation errors."""
    settings = _source("standard-webhooks", SW_SECRET)
    assert SW_SECRET not in repr(settings)
    assert "MfKQ" not in repr(StandardWebhooksVerifier.from_settings(settings))
    assert GH_SECRET not in repr(gh_verifier())
    with pytest.raises(ValidationError) as info:
        _source("standard-webhooks", "whsec_sup3r*secret")
    assert "sup3r" not in str(info.value)


def test_settings_are_frozen() -> None:
    """A source's settings cannot be changed after start."""
    settings = _source("github", GH_SECRET)
    with pytest.raises(ValidationError):
        settings.tolerance_seconds = 1  # type: ignore[misc]  # proving the runtime guard, not the type
    assert settings.secrets == [SecretStr(GH_SECRET)]


# --- properties --------------------------------------------------------------------------------------------


@given(st.text())
def test_standard_parser_total(header: str) -> None:
    """parse_standard_signatures on any text returns digests or raises WebhookRejected, nothing else."""
    try:
        digests = parse_standard_signatures(header)
    except WebhookRejected:
        return
    assert digests
    assert all(len(d) == 32 for d in digests)


@given(st.text())
def test_github_parser_total(header: str) -> None:
    """parse_github_signature on any text returns a digest or raises WebhookRejected, nothing else."""
    with contextlib.suppress(WebhookRejected):
        assert len(parse_github_signature(header)) == 32


@given(st.text())
def test_stripe_parser_total(header: str) -> None:
    """parse_stripe_signature on any text returns (t, digests) or raises WebhookRejected, nothing else."""
    try:
        timestamp, digests = parse_stripe_signature(header)
    except WebhookRejected:
        return
    assert timestamp.isascii()
    assert timestamp.isdigit()
    assert digests


@given(
    st.sampled_from(["webhook-", "svix-"]),
    st.text(),
    st.text(),
    st.text(),
    st.one_of(st.just(JSON), st.text()),
    st.binary(),
)
def test_standard_verify_rejects_arbitrary_input(
    prefix: str, msg_id: str, timestamp: str, signature: str, content_type: str, body: bytes
) -> None:
    """Arbitrary Standard Webhooks headers and body only ever raise WebhookRejected."""
    headers = {
        f"{prefix}id": msg_id,
        f"{prefix}timestamp": timestamp,
        f"{prefix}signature": signature,
        "content-type": content_type,
    }
    with pytest.raises(WebhookRejected):
        sw_verifier().verify(body, headers, now=NOW)


@given(
    st.one_of(st.text(), st.text().map(lambda s: "sha256=" + s)),
    st.text(),
    st.text(),
    st.one_of(st.just(JSON), st.text()),
    st.binary(),
)
def test_github_verify_rejects_arbitrary_input(
    signature: str, delivery: str, event: str, content_type: str, body: bytes
) -> None:
    """Arbitrary GitHub headers and body only ever raise WebhookRejected."""
    headers = {
        "x-hub-signature-256": signature,
        "x-github-delivery": delivery,
        "x-github-event": event,
        "content-type": content_type,
    }
    with pytest.raises(WebhookRejected):
        gh_verifier().verify(body, headers, now=NOW)


@given(st.one_of(st.text(), st.text().map(lambda s: f"t={NOW},v1=" + s)), st.binary())
def test_stripe_verify_rejects_arbitrary_input(signature: str, body: bytes) -> None:
    """Arbitrary Stripe-Signature headers and body only ever raise WebhookRejected."""
    with pytest.raises(WebhookRejected):
        st_verifier().verify(body, {"stripe-signature": signature, "content-type": JSON}, now=NOW)


_payloads = st.dictionaries(st.text(), st.text()).map(
    lambda extra: orjson.dumps({**extra, "id": "evt_1", "type": "charge.succeeded"})
)


@given(_payloads, st.data())
def test_stripe_any_changed_byte_is_rejected(body: bytes, data: st.DataObject) -> None:
    """For any Stripe-signed body, the signed body verifies and every single-bit change of it does not."""
    headers = st_headers(body=body)
    st_verifier().verify(body, headers={k.lower(): v for k, v in headers.items()}, now=NOW)
    index = data.draw(st.integers(0, len(body) - 1))
    bit = data.draw(st.integers(0, 7))
    tampered = body[:index] + bytes([body[index] ^ (1 << bit)]) + body[index + 1 :]
    with pytest.raises(WebhookRejected) as info:
        st_verifier().verify(tampered, {k.lower(): v for k, v in headers.items()}, now=NOW)
    assert info.value.reason is RejectReason.SIGNATURE_MISMATCH


@given(_payloads, st.data())
def test_standard_any_changed_byte_is_rejected(body: bytes, data: st.DataObject) -> None:
    """For any Standard-Webhooks-signed body, every single-bit change of it is rejected as a mismatch."""
    headers = {k.lower(): v for k, v in sw_headers(body=body).items()}
    assert sw_verifier().verify(body, headers, now=NOW).event_type == "charge.succeeded"
    index = data.draw(st.integers(0, len(body) - 1))
    tampered = body[:index] + bytes([body[index] ^ (1 << data.draw(st.integers(0, 7)))]) + body[index + 1 :]
    with pytest.raises(WebhookRejected) as info:
        sw_verifier().verify(tampered, headers, now=NOW)
    assert info.value.reason is RejectReason.SIGNATURE_MISMATCH
