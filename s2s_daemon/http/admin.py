"""Admin endpoints, mounted only when ``admin.token`` is set: force a downstream's breaker open or closed.

``POST /admin/breakers/{downstream}/open`` and ``.../close`` with ``Authorization: Bearer <token>``. Forcing
a breaker goes through the breaker's own transition, so its listeners (metrics, the consumer pause) follow.
``AdminToken`` is the one check of that header; the console's write endpoints use it too. The token is only
ever read from the header, never from a cookie, so a page of another site cannot make a browser send it.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from s2s_daemon.observability.logging import get_logger
from s2s_daemon.resilience.breaker import CircuitBreaker

__all__ = ["AdminToken", "BreakerAdmin"]

log = get_logger("s2s.http.admin")


class AdminToken:
    """``Authorization: Bearer <token>``; without a configured token nothing is authorized."""

    def __init__(self, token: str | None) -> None:
        self._token = None if token is None else token.encode()

    @property
    def configured(self) -> bool:
        return self._token is not None

    def refusal(self, request: Request) -> Response | None:
        """None when the request carries the token, else the 401 to answer."""
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if (
            self._token is not None
            and scheme.lower() == "bearer"
            and hmac.compare_digest(presented.strip().encode(), self._token)
        ):
            return None
        detail = "a valid bearer token is required" if self._token else "admin.token is not set: read-only"
        return JSONResponse(
            {"error": "unauthorized", "detail": detail},
            status_code=401,
            headers={"www-authenticate": 'Bearer realm="s2s-admin"'},
        )


class BreakerAdmin:
    def __init__(self, token: str, breakers: Mapping[str, CircuitBreaker]) -> None:
        self._token = AdminToken(token)
        self._breakers = breakers

    async def open(self, request: Request) -> Response:
        return self._force(request, "open")

    async def close(self, request: Request) -> Response:
        return self._force(request, "close")

    def _force(self, request: Request, action: str) -> Response:
        refusal = self._token.refusal(request)
        if refusal is not None:
            return refusal
        name = request.path_params["downstream"]
        breaker = self._breakers.get(name)
        if breaker is None:
            return JSONResponse({"error": "not_found", "detail": "unknown downstream"}, status_code=404)
        changed = breaker.force_open() if action == "open" else breaker.force_closed()
        log.warning("admin.breaker_forced", downstream=name, action=action, changed=changed)
        return JSONResponse({"downstream": name, "state": breaker.state.value, "changed": changed})
