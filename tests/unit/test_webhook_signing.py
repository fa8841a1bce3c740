"""Standard Webhooks signatures the daemon makes (``delivery.signing``) and v1a verification on the receiving side,
checked against code that is not ours: the ``standardwebhooks`` library for v1, ``cryptography`` for v1a."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest
import yaml
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.datastructures import Headers

from s2s_daemon.cli import main
from s2s_daemon.delivery import WebhookSigner, public_key_text
from s2s_daemon.errors import ConfigError
from s2s_daemon.http.webhooks import RejectReason, StandardWebhooksVerifier, WebhookRejected
from s2s_daemon.settings import (
    SVIX_RETRY_SCHEDULE,
    SubscriptionSettings,
    WebhookSourceSettings,
    load_settings,
)

NOW = 1_800_000_000
BODY = b'{"id":"evt-1","type":"invoice.paid","data":{"amount":1}}'
V1_OLD = "whsec_" + base64.b64encode(b"old shared secret for the tests").decode()
V1_NEW = "whsec_" + base64.b64encode(b"new shared secret for the tests").decode()
_KEY = Ed25519PrivateKey.generate()
SK = "whsk_" + base64.b64encode(_KEY.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())).decode()
PK = "whpk_" + base64.b64encode(_KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)).decode()


def _headers(signer: WebhookSigner, timestamp: int = NOW) -> dict[str, str]:
    return {"content-type": "application/json", **signer.headers("evt-1", timestamp, BODY)}


def test_every_key_signs_and_each_verifies_alone() -> None:
    """During a rotation the header carries one v1 entry per whsec_ and one v1a per whsk_; each verifies on its own."""
    now = int(time.time())  # the library checks its own clock
    headers = _headers(WebhookSigner.from_secrets([V1_OLD, V1_NEW, SK]), now)
    assert [e.split(",")[0] for e in headers["webhook-signature"].split()] == ["v1", "v1", "v1a"]
    assert Webhook(V1_OLD).verify(BODY, headers) == Webhook(V1_NEW).verify(BODY, headers)
    other = "whsec_" + base64.b64encode(b"a secret that signed nothing here").decode()
    with pytest.raises(WebhookVerificationError):
        Webhook(other).verify(BODY, headers)
    signed = b"evt-1.%d." % now + BODY
    [v1a] = [e.split(",")[1] for e in headers["webhook-signature"].split() if e.startswith("v1a,")]
    _KEY.public_key().verify(base64.b64decode(v1a), signed)  # raises InvalidSignature when wrong


def test_public_key_is_printed_from_the_signing_key() -> None:
    """The whpk_ a receiver is given is the public half of the subscription's whsk_ (32-byte or 64-byte form)."""
    assert public_key_text(SK) == PK
    raw = base64.b64decode(SK.removeprefix("whsk_")) + base64.b64decode(PK.removeprefix("whpk_"))
    assert public_key_text("whsk_" + base64.b64encode(raw).decode()) == PK


def _receiver(*secrets: str) -> StandardWebhooksVerifier:
    return StandardWebhooksVerifier.from_settings(
        WebhookSourceSettings.model_validate({"scheme": "standard-webhooks", "secrets": list(secrets)})
    )


def test_receiver_verifies_v1a_with_the_public_key() -> None:
    """A standard-webhooks source with the sender's whpk_ accepts a v1a-only delivery, and refuses another key's."""
    verified = _receiver(PK).verify(BODY, Headers(headers=_headers(WebhookSigner.from_secrets([SK]))), now=NOW)
    assert (verified.delivery_id, verified.event_type) == ("evt-1", "invoice.paid")
    stranger = "whsk_" + base64.b64encode(bytes(range(32))).decode()
    with pytest.raises(WebhookRejected) as info:
        _receiver(PK).verify(BODY, Headers(headers=_headers(WebhookSigner.from_secrets([stranger]))), now=NOW)
    assert info.value.reason is RejectReason.SIGNATURE_MISMATCH


def test_receiver_with_both_kinds_accepts_either() -> None:
    """With a whsec_ and a whpk_ configured, a v1-only and a v1a-only delivery both verify."""
    receiver = _receiver(V1_OLD, PK)
    for secrets in ([V1_OLD], [SK]):
        headers = Headers(headers=_headers(WebhookSigner.from_secrets(secrets)))
        assert receiver.verify(BODY, headers, now=NOW).delivery_id == "evt-1"


def test_malformed_v1a_entry_is_refused_when_v1a_is_checked() -> None:
    """A v1a entry that is not 64 bytes of base64 is a malformed header for a receiver that reads v1a."""
    headers = _headers(WebhookSigner.from_secrets([SK])) | {"webhook-signature": "v1a,AAAA"}
    with pytest.raises(WebhookRejected) as info:
        _receiver(PK).verify(BODY, Headers(headers=headers), now=NOW)
    assert info.value.reason is RejectReason.MALFORMED_SIGNATURE_HEADER


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"url": "ftp://x"}, "subscriptions.p.url: Value error, must be an http:// or https:// URL"),
        ({"events": ["service-a.*x"]}, "subscriptions.p.events: Value error, events[0] 'service-a.*x': word '*x'"),
        ({"events": []}, "subscriptions.p.events: List should have at least 1 item"),
        ({"secrets": [PK]}, "subscriptions.p.secrets: Value error, secrets[0] is a public key (whpk_)"),
        (
            {"secrets": ["plain"]},
            "subscriptions.p.secrets: Value error, secrets[0] must start with whsec_ (v1) or whsk_",
        ),
        ({"headers": {"Webhook-Id": "x"}}, "subscriptions.p.headers: Value error, header 'Webhook-Id' is set by"),
        ({"filter": {"type": 5}}, "subscriptions.p.filter: Value error, not a valid JSON Schema"),
        ({"retry_schedule": [5, -1]}, "subscriptions.p.retry_schedule.1: Input should be greater than 0"),
        ({"url_typo": "x"}, "subscriptions.p.url_typo: unknown key"),
    ],
)
def test_bad_subscription_names_the_key(change: dict[str, object], message: str) -> None:
    """A bad subscription fails at start (and in check-config), one line naming the dotted key, no secret echoed."""
    good = {"url": "https://partner.example/hooks", "events": ["service-a.*.succeeded"], "secrets": [V1_OLD]}
    with pytest.raises(ConfigError) as info:
        load_settings(None, subscriptions={"p": {**good, **change}})
    assert message in str(info.value)
    assert V1_OLD not in str(info.value)


def test_subscription_defaults_follow_svix() -> None:
    """The default schedule is Svix's eight attempts, all waits parked (none in-process), Retry-After honoured."""
    sub = SubscriptionSettings.model_validate(
        {"url": "https://partner.example/hooks", "events": ["webhook.stripe.#"], "secrets": [V1_OLD]}
    )
    retry = sub.downstream().retry
    assert SVIX_RETRY_SCHEDULE == (5, 300, 1800, 7200, 18_000, 36_000, 36_000)
    assert (retry.max_attempts, retry.schedule, retry.in_process_max_wait) == (8, SVIX_RETRY_SCHEDULE, 0)
    assert retry.max_elapsed > sum(SVIX_RETRY_SCHEDULE)


def test_subscription_secret_is_not_shown() -> None:
    """The settings' repr does not reveal signing keys."""
    sub = SubscriptionSettings.model_validate({"url": "https://p.example", "events": ["#"], "secrets": [SK]})
    assert SK not in repr(sub)
    with pytest.raises(ValidationError):
        SubscriptionSettings.model_validate({"url": "https://p.example", "events": ["#"], "secrets": ["whsk_!!"]})


def test_check_config_names_the_bad_subscription_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`s2s-daemon check-config` counts subscriptions, and exits 2 naming a bad one's key (no secret printed)."""
    good = {"url": "https://partner.example/hooks", "events": ["service-a.*.succeeded"], "secrets": [V1_OLD, SK]}
    config = tmp_path / "s2s.yaml"
    config.write_text(yaml.safe_dump({"subscriptions": {"partner": good}}))
    assert main(["check-config", str(config)]) == 0
    assert "1 subscriptions" in capsys.readouterr().out
    config.write_text(yaml.safe_dump({"subscriptions": {"partner": {**good, "events": ["a..b"]}}}))
    assert main(["check-config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "subscriptions.partner.events: Value error, events[0] 'a..b': word ''" in err
    assert SK not in err
