"""Standard Webhooks signatures: v1 (HMAC-SHA256, ``whsec_`` keys) and v1a (ed25519, ``whsk_``/``whpk_`` keys).

Both sign ``{webhook-id}.{webhook-timestamp}.{body}``. v1 goes through the ``standardwebhooks`` reference
library; v1a, which that library does not implement, through ``cryptography``'s ed25519. During a rotation an
endpoint has several keys and every one of them signs: ``webhook-signature`` lists them space-separated, and a
receiver accepts the delivery when any one verifies.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from standardwebhooks.webhooks import Webhook

from s2s_daemon.settings import (
    STANDARD_WEBHOOKS_PUBLIC_KEY_PREFIX,
    STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX,
    standard_webhooks_key,
)

__all__ = ["WebhookSigner", "ed25519_public_key", "public_key_text", "signed_content", "verify_v1a"]


def signed_content(webhook_id: str, timestamp: int, body: bytes) -> bytes:
    """What both versions sign."""
    return b"%s.%d.%s" % (webhook_id.encode(), timestamp, body)


def _private_key(secret: str, index: int) -> Ed25519PrivateKey:
    key = standard_webhooks_key(secret, index)
    private = Ed25519PrivateKey.from_private_bytes(key[:32])
    if len(key) == 64 and public_key_bytes(private) != key[32:]:
        raise ValueError(f"secrets[{index}]: the whsk_ key's public half does not belong to its seed")
    return private


def public_key_bytes(private: Ed25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def public_key_text(secret: str) -> str:
    """The ``whpk_`` a receiver verifies v1a signatures with, for a ``whsk_`` signing key."""
    return STANDARD_WEBHOOKS_PUBLIC_KEY_PREFIX + base64.b64encode(public_key_bytes(_private_key(secret, 0))).decode()


def ed25519_public_key(secret: str, index: int) -> Ed25519PublicKey:
    """A ``whpk_`` key (inbound verification)."""
    return Ed25519PublicKey.from_public_bytes(standard_webhooks_key(secret, index))


def verify_v1a(public_keys: Iterable[Ed25519PublicKey], content: bytes, signatures: Sequence[bytes]) -> bool:
    """Whether any signature verifies under any key (every pair is tried: no early exit on which one matched)."""
    matched = False
    for key in public_keys:
        for signature in signatures:
            try:
                key.verify(signature, content)
            except InvalidSignature:
                continue
            matched = True
    return matched


@dataclass(frozen=True, slots=True)
class WebhookSigner:
    """Signs one endpoint's deliveries with all its keys."""

    hmac: tuple[Webhook, ...] = field(repr=False)
    ed25519: tuple[Ed25519PrivateKey, ...] = field(repr=False)

    @classmethod
    def from_secrets(cls, secrets: Sequence[str]) -> WebhookSigner:
        hmac_keys, ed_keys = [], []
        for index, secret in enumerate(secrets):
            if secret.startswith(STANDARD_WEBHOOKS_SIGNING_KEY_PREFIX):
                ed_keys.append(_private_key(secret, index))
            else:
                hmac_keys.append(Webhook(standard_webhooks_key(secret, index)))
        return cls(tuple(hmac_keys), tuple(ed_keys))

    def headers(self, webhook_id: str, timestamp: int, body: bytes) -> dict[str, str]:
        """``webhook-id``, ``webhook-timestamp`` and ``webhook-signature`` for one attempt."""
        signatures = [key.sign(webhook_id, datetime.fromtimestamp(timestamp, UTC), body.decode()) for key in self.hmac]
        content = signed_content(webhook_id, timestamp, body)
        signatures.extend("v1a," + base64.b64encode(key.sign(content)).decode() for key in self.ed25519)
        return {
            "webhook-id": webhook_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": " ".join(signatures),
        }
