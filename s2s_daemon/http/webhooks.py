"""Webhook signature verification: Standard Webhooks v1 and v1a, GitHub and Stripe.

Pure code, no I/O: the sidecar route hands over the raw body, the request headers and the current time,
and gets back a ``VerifiedWebhook`` or a ``WebhookRejected`` carrying a short reason and an HTTP status.

Order of checks, the same for every scheme: body size (413), content type (415), header syntax (401 for
the signature header, 400 for the others), signature over the raw bytes (401), timestamp tolerance (401),
and only then JSON parsing (400). The
timestamp is judged after the signature so that "timestamp outside tolerance" always means an authentic
but stale or early delivery (a replay or clock skew) and a forgery always reads "signature mismatch".

Rotation: every configured secret is tried; any one of them verifies. Retiring a secret is removing it.

Limits of the schemes themselves, worth knowing when reading the dedupe records:
- GitHub signs the body only. ``X-GitHub-Delivery`` and ``X-GitHub-Event`` are unsigned, and there is no
  timestamp, so a captured delivery can be replayed under a fresh delivery id.
- Standard Webhooks v1a (ed25519) is checked against the sender's public keys (``whpk_`` entries of
  ``secrets``); without one, v1a entries in ``webhook-signature`` are skipped like any unknown version.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

import orjson
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from s2s_daemon.delivery import ed25519_public_key, verify_v1a
from s2s_daemon.errors import S2SError
from s2s_daemon.settings import STANDARD_WEBHOOKS_PUBLIC_KEY_PREFIX, WebhookSourceSettings, standard_webhooks_key

__all__ = [
    "GitHubVerifier",
    "RejectReason",
    "StandardWebhooksVerifier",
    "StripeVerifier",
    "VerifiedWebhook",
    "Verifier",
    "WebhookRejected",
    "build_verifier",
    "parse_github_signature",
    "parse_standard_signature_entries",
    "parse_standard_signatures",
    "parse_stripe_signature",
]

# More entries than any sender uses during a rotation; bounds the work one request can cause.
MAX_SIGNATURES = 32
_HEX64 = re.compile(r"[0-9a-fA-F]{64}")
# ASCII digits only: str.isdigit() accepts "²" and int() accepts "_", "+" and spaces.
_UNIX_SECONDS = re.compile(r"[0-9]{1,15}")
# Delivery ids become dedupe keys, event types the tail of the routing key "webhook.<service>.<type>"
# (AMQP allows 255 bytes; service names are at most 63): printable ASCII without spaces, bounded.
_DELIVERY_ID = re.compile(r"[\x21-\x7e]{1,200}")
_EVENT_TYPE = re.compile(r"[\x21-\x7e]{1,128}")


class RejectReason(StrEnum):
    """Why a delivery was refused; a closed set, so it is safe as a metric label."""

    BODY_TOO_LARGE = "body too large"
    UNSUPPORTED_CONTENT_TYPE = "unsupported content type"
    MISSING_SIGNATURE_HEADER = "missing signature header"
    MALFORMED_SIGNATURE_HEADER = "malformed signature header"
    NO_SUPPORTED_SIGNATURE = "no supported signature version"
    SIGNATURE_MISMATCH = "signature mismatch"
    MISSING_TIMESTAMP = "missing timestamp header"
    MALFORMED_TIMESTAMP = "malformed timestamp"
    TIMESTAMP_OUTSIDE_TOLERANCE = "timestamp outside tolerance"
    MISSING_DELIVERY_ID = "missing delivery id"
    MALFORMED_DELIVERY_ID = "malformed delivery id"
    MALFORMED_JSON = "malformed JSON body"
    MISSING_EVENT_TYPE = "missing event type"
    MALFORMED_EVENT_TYPE = "malformed event type"


# A delivery whose signature is missing, unreadable or wrong is unauthenticated (401); other header or body
# problems of a delivery are malformed requests (400).
_STATUS = {
    RejectReason.BODY_TOO_LARGE: 413,
    RejectReason.UNSUPPORTED_CONTENT_TYPE: 415,
    RejectReason.MISSING_SIGNATURE_HEADER: 401,
    RejectReason.MALFORMED_SIGNATURE_HEADER: 401,
    RejectReason.NO_SUPPORTED_SIGNATURE: 401,
    RejectReason.SIGNATURE_MISMATCH: 401,
    RejectReason.TIMESTAMP_OUTSIDE_TOLERANCE: 401,
}


class WebhookRejected(S2SError):
    """The delivery is refused; ``status`` is the HTTP answer, ``reason`` names the check that failed."""

    def __init__(self, reason: RejectReason) -> None:
        super().__init__(reason.value)
        self.reason = reason
        self.status: int = _STATUS.get(reason, 400)


@dataclass(frozen=True, slots=True)
class VerifiedWebhook:
    """An authentic delivery: ``body`` is the exact bytes that were signed."""

    delivery_id: str
    event_type: str
    timestamp: int | None  # unix seconds as signed by the sender; None for GitHub, which sends none
    body: bytes


class Verifier(Protocol):
    """Checks one sender's deliveries.

    ``headers`` is looked up with lower-case names: pass ``starlette.datastructures.Headers`` or a dict
    with lower-case keys. ``now`` is unix seconds (``time.time()``), injected so tests control the clock.
    """

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> VerifiedWebhook: ...


def build_verifier(settings: WebhookSourceSettings) -> Verifier:
    """The verifier for one configured sender."""
    if settings.scheme == "standard-webhooks":
        return StandardWebhooksVerifier.from_settings(settings)
    if settings.scheme == "github":
        return GitHubVerifier.from_settings(settings)
    return StripeVerifier.from_settings(settings)


@dataclass(frozen=True, slots=True)
class StandardWebhooksVerifier:
    """Standard Webhooks (also what Svix sends) over ``{id}.{timestamp}.{body}``: v1 HMAC-SHA256 with ``keys``,
    v1a ed25519 with ``public_keys``; any one signature matching any key verifies."""

    keys: tuple[bytes, ...] = field(repr=False)
    tolerance_seconds: int = 300
    max_body_bytes: int = 1_048_576
    event_type_field: str = "type"
    public_keys: tuple[Ed25519PublicKey, ...] = field(default=(), repr=False)

    @classmethod
    def from_settings(cls, settings: WebhookSourceSettings) -> StandardWebhooksVerifier:
        secrets = [(i, s.get_secret_value()) for i, s in enumerate(settings.secrets)]
        public = STANDARD_WEBHOOKS_PUBLIC_KEY_PREFIX
        return cls(
            keys=tuple(standard_webhooks_key(s, i) for i, s in secrets if not s.startswith(public)),
            public_keys=tuple(ed25519_public_key(s, i) for i, s in secrets if s.startswith(public)),
            tolerance_seconds=settings.tolerance_seconds,
            max_body_bytes=settings.max_body_bytes,
            event_type_field=settings.event_type_field or "type",
        )

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> VerifiedWebhook:
        _check_envelope(body, headers, self.max_body_bytes)
        # Svix-branded senders use svix-* names for the same three headers; never mix the two sets.
        prefix = "webhook-" if "webhook-signature" in headers else "svix-"
        signature_header = headers.get(f"{prefix}signature")
        if signature_header is None:
            raise WebhookRejected(RejectReason.MISSING_SIGNATURE_HEADER)
        signatures, ed25519_signatures = parse_standard_signature_entries(
            signature_header, with_v1a=bool(self.public_keys)
        )
        delivery_id = _delivery_id(headers.get(f"{prefix}id"))
        timestamp_text = headers.get(f"{prefix}timestamp")
        if timestamp_text is None:
            raise WebhookRejected(RejectReason.MISSING_TIMESTAMP)
        timestamp = _unix_seconds(timestamp_text)
        signed = b"%s.%s.%s" % (delivery_id.encode("ascii"), timestamp_text.encode("ascii"), body)
        hmac_matched = _matches(self.keys, signed, signatures)
        if not (verify_v1a(self.public_keys, signed, ed25519_signatures) | hmac_matched):
            raise WebhookRejected(RejectReason.SIGNATURE_MISMATCH)
        _within_tolerance(timestamp, now, self.tolerance_seconds)
        payload = _json_object(body)
        event_type = _event_type(payload.get(self.event_type_field))
        return VerifiedWebhook(delivery_id, event_type, timestamp, body)


@dataclass(frozen=True, slots=True)
class GitHubVerifier:
    """GitHub: ``X-Hub-Signature-256: sha256=<hex>``, HMAC-SHA256 of the body; no timestamp."""

    keys: tuple[bytes, ...] = field(repr=False)
    max_body_bytes: int = 1_048_576

    @classmethod
    def from_settings(cls, settings: WebhookSourceSettings) -> GitHubVerifier:
        return cls(keys=_utf8_keys(settings), max_body_bytes=settings.max_body_bytes)

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> VerifiedWebhook:
        _check_envelope(body, headers, self.max_body_bytes)
        signature_header = headers.get("x-hub-signature-256")
        if signature_header is None:
            raise WebhookRejected(RejectReason.MISSING_SIGNATURE_HEADER)
        signature = parse_github_signature(signature_header)
        delivery_id = _delivery_id(headers.get("x-github-delivery"))
        event_type = _event_type(headers.get("x-github-event"))
        _match(self.keys, body, [signature])
        _json_object(body)
        return VerifiedWebhook(delivery_id, event_type, None, body)


@dataclass(frozen=True, slots=True)
class StripeVerifier:
    """Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>,...``, HMAC-SHA256 over ``{t}.{body}``."""

    keys: tuple[bytes, ...] = field(repr=False)
    tolerance_seconds: int = 300
    max_body_bytes: int = 1_048_576

    @classmethod
    def from_settings(cls, settings: WebhookSourceSettings) -> StripeVerifier:
        return cls(
            keys=_utf8_keys(settings),
            tolerance_seconds=settings.tolerance_seconds,
            max_body_bytes=settings.max_body_bytes,
        )

    def verify(self, body: bytes, headers: Mapping[str, str], *, now: float) -> VerifiedWebhook:
        _check_envelope(body, headers, self.max_body_bytes)
        signature_header = headers.get("stripe-signature")
        if signature_header is None:
            raise WebhookRejected(RejectReason.MISSING_SIGNATURE_HEADER)
        timestamp_text, signatures = parse_stripe_signature(signature_header)
        _match(self.keys, b"%s.%s" % (timestamp_text.encode("ascii"), body), signatures)
        timestamp = int(timestamp_text)
        _within_tolerance(timestamp, now, self.tolerance_seconds)
        payload = _json_object(body)
        delivery_id = _delivery_id(payload.get("id"))
        event_type = _event_type(payload.get("type"))
        return VerifiedWebhook(delivery_id, event_type, timestamp, body)


def parse_standard_signatures(header: str) -> list[bytes]:
    """``v1,<base64> v1,<base64> v1a,...`` -> the v1 digests; other versions are skipped."""
    return parse_standard_signature_entries(header)[0]


_SIGNATURE_SIZES = {"v1": hashlib.sha256().digest_size, "v1a": 64}


def parse_standard_signature_entries(header: str, *, with_v1a: bool = False) -> tuple[list[bytes], list[bytes]]:
    """``v1,<base64> v1a,<base64> ...`` -> (v1 digests, v1a signatures); other versions are skipped, and v1a
    entries too unless ``with_v1a``. Raises when no entry of a version read is left."""
    entries = header.split()
    if not entries or len(entries) > MAX_SIGNATURES:
        raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
    found: dict[str, list[bytes]] = {"v1": [], "v1a": []}
    for entry in entries:
        version, comma, value = entry.partition(",")
        if not comma or not version or not value:
            raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
        if version not in found or (version == "v1a" and not with_v1a):
            continue
        try:
            digest = base64.b64decode(value, validate=True)
        except ValueError:  # binascii.Error, or non-ASCII text
            raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER) from None
        if len(digest) != _SIGNATURE_SIZES[version]:
            raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
        found[version].append(digest)
    if not found["v1"] and not found["v1a"]:
        raise WebhookRejected(RejectReason.NO_SUPPORTED_SIGNATURE)
    return found["v1"], found["v1a"]


def parse_github_signature(header: str) -> bytes:
    """``sha256=<64 hex>`` -> the digest."""
    algorithm, equals, value = header.strip().partition("=")
    if not equals or algorithm != "sha256" or not _HEX64.fullmatch(value):
        raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
    return bytes.fromhex(value)


def parse_stripe_signature(header: str) -> tuple[str, list[bytes]]:
    """``t=<unix>,v1=<hex>[,v1=...][,v0=...]`` -> (the timestamp as signed, the v1 digests)."""
    items = [item.strip() for item in header.split(",")]
    if len(items) > MAX_SIGNATURES + 1:
        raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
    timestamp: str | None = None
    digests = []
    for item in items:
        if not item:
            continue
        key, equals, value = item.partition("=")
        if not equals or not key:
            raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
        if key == "t":
            if timestamp is not None or not _UNIX_SECONDS.fullmatch(value):
                raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
            timestamp = value
        elif key == "v1":
            if not _HEX64.fullmatch(value):
                raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
            digests.append(bytes.fromhex(value))
    if timestamp is None:
        raise WebhookRejected(RejectReason.MALFORMED_SIGNATURE_HEADER)
    if not digests:
        raise WebhookRejected(RejectReason.NO_SUPPORTED_SIGNATURE)
    return timestamp, digests


def _check_envelope(body: bytes, headers: Mapping[str, str], max_body_bytes: int) -> None:
    if len(body) > max_body_bytes:
        raise WebhookRejected(RejectReason.BODY_TOO_LARGE)
    media_type = (headers.get("content-type") or "").partition(";")[0].strip().lower()
    if media_type != "application/json" and not (
        media_type.startswith("application/") and media_type.endswith("+json")
    ):
        raise WebhookRejected(RejectReason.UNSUPPORTED_CONTENT_TYPE)


def _match(keys: tuple[bytes, ...], signed: bytes, signatures: list[bytes]) -> None:
    if not _matches(keys, signed, signatures):
        raise WebhookRejected(RejectReason.SIGNATURE_MISMATCH)


def _matches(keys: tuple[bytes, ...], signed: bytes, signatures: list[bytes]) -> bool:
    # Every key against every signature, no early exit: the time taken says nothing about which matched.
    matched = False
    for key in keys:
        expected = hmac.digest(key, signed, "sha256")  # one-shot, in C: no HMAC object per key
        for signature in signatures:
            matched |= hmac.compare_digest(expected, signature)
    return matched


def _unix_seconds(text: str) -> int:
    if not _UNIX_SECONDS.fullmatch(text):
        raise WebhookRejected(RejectReason.MALFORMED_TIMESTAMP)
    return int(text)


def _within_tolerance(timestamp: int, now: float, tolerance_seconds: int) -> None:
    if abs(now - timestamp) > tolerance_seconds:
        raise WebhookRejected(RejectReason.TIMESTAMP_OUTSIDE_TOLERANCE)


def _delivery_id(value: Any) -> str:
    if value is None:
        raise WebhookRejected(RejectReason.MISSING_DELIVERY_ID)
    if not isinstance(value, str) or not _DELIVERY_ID.fullmatch(value):
        raise WebhookRejected(RejectReason.MALFORMED_DELIVERY_ID)
    return value


def _event_type(value: Any) -> str:
    if value is None:
        raise WebhookRejected(RejectReason.MISSING_EVENT_TYPE)
    if not isinstance(value, str) or not _EVENT_TYPE.fullmatch(value):
        raise WebhookRejected(RejectReason.MALFORMED_EVENT_TYPE)
    return value


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise WebhookRejected(RejectReason.MALFORMED_JSON) from None
    if not isinstance(payload, dict):
        raise WebhookRejected(RejectReason.MALFORMED_JSON)
    return payload


def _utf8_keys(settings: WebhookSourceSettings) -> tuple[bytes, ...]:
    # GitHub and Stripe key the HMAC with the secret's text as given, `whsec_` prefix included (Stripe).
    return tuple(s.get_secret_value().encode("utf-8") for s in settings.secrets)
