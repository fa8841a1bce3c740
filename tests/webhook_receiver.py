"""A partner's webhook endpoint for the tests: a real HTTP server on a port of its own that verifies every delivery
the way a receiver would, with code that is not ours, and counts what it got.

v1 signatures are checked with the ``standardwebhooks`` library, once per configured secret (so a test sees which
secrets verify each delivery); the library does not implement v1a, so v1a signatures are checked with
``cryptography``'s ed25519 against the published ``whpk_`` key, as the Standard Webhooks spec describes
(``{webhook-id}.{webhook-timestamp}.{body}``). The answer is what the test sets: a status code, optionally a
Retry-After. ``stop()`` and ``start()`` take the endpoint down and bring it back on the same port.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from standardwebhooks.webhooks import Webhook, WebhookVerificationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from s2s_daemon.http.server import SidecarServer
from s2s_daemon.local import free_port


@dataclass(frozen=True)
class Delivery:
    webhook_id: str
    timestamp: int
    body: bytes
    verified_by: frozenset[str]  # the names of the keys whose signature verified
    answered: int
    at: float  # monotonic

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class WebhookReceiver:
    """``hmac_secrets`` and ``public_keys`` by name; a delivery no key verifies is answered 401 and counted."""

    hmac_secrets: dict[str, str]
    public_keys: dict[str, str] = field(default_factory=dict)
    status: int = 200
    retry_after: str | None = None
    port: int = field(default_factory=free_port)
    deliveries: list[Delivery] = field(default_factory=list)
    unverified: int = 0
    _server: SidecarServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def ids(self) -> list[str]:
        return [d.webhook_id for d in self.deliveries]

    def accepted(self) -> list[Delivery]:
        return [d for d in self.deliveries if 200 <= d.answered < 300]

    async def start(self) -> None:
        app = Starlette(routes=[Route("/hooks", self._handle, methods=["POST"])])
        self._server = SidecarServer(app, "127.0.0.1", self.port)
        await self._server.start()

    async def stop(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    def verify(self, body: bytes, headers: dict[str, str]) -> frozenset[str]:
        verified = set()
        for name, secret in self.hmac_secrets.items():
            try:
                Webhook(secret).verify(body, headers)  # also checks the timestamp (5 minutes)
            except WebhookVerificationError:
                continue
            verified.add(name)
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        entries = [e.partition(",") for e in headers.get("webhook-signature", "").split()]
        for name, key in self.public_keys.items():
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(key.removeprefix("whpk_")))
            for version, _, value in entries:
                if version != "v1a":
                    continue
                try:
                    public.verify(base64.b64decode(value), signed)
                except InvalidSignature:
                    continue
                verified.add(name)
        return frozenset(verified)

    async def _handle(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        verified = self.verify(body, headers) if "webhook-id" in headers else frozenset()
        if not verified:
            self.unverified += 1
            return JSONResponse({"error": "signature"}, status_code=401)
        status = self.status
        self.deliveries.append(
            Delivery(headers["webhook-id"], int(headers["webhook-timestamp"]), body, verified, status, time.monotonic())
        )
        extra = {"retry-after": self.retry_after} if self.retry_after and status >= 400 else {}
        return JSONResponse({"status": status}, status_code=status, headers=extra)
