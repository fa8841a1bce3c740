"""Sending webhooks: the subscriptions' consumers, Standard Webhooks signatures, the delivery log."""

from s2s_daemon.delivery.endpoint import EndpointDelivery
from s2s_daemon.delivery.log import (
    DeliveryLog,
    EndpointState,
    EndpointStates,
    endpoints_collection,
    read_endpoint_states,
    set_endpoint_state,
)
from s2s_daemon.delivery.signing import (
    WebhookSigner,
    ed25519_public_key,
    public_key_text,
    signed_content,
    verify_v1a,
)

__all__ = [
    "DeliveryLog",
    "EndpointDelivery",
    "EndpointState",
    "EndpointStates",
    "WebhookSigner",
    "ed25519_public_key",
    "endpoints_collection",
    "public_key_text",
    "read_endpoint_states",
    "set_endpoint_state",
    "signed_content",
    "verify_v1a",
]
