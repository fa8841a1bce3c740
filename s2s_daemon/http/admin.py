"""Admin endpoints, mounted only when ``admin.token`` is set: force a downstream's breaker open or closed.

``POST /admin/breakers/{downstream}/open`` and ``.../close`` with ``Authorization: Bearer <token>``. Forcing
a breaker goes through the breaker's own transition, so its listeners (metrics, the consumer pause) follow.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from s2s_daemon.observability.logging import get_logger
from s2s_daemon.resilience.breaker import CircuitBreaker

__all__ = ["BreakerAdmin"]

log = get_logger("s2s.http.admin")


class BreakerAdmin:
    def __init__(self, token: str, breakers: Mapping[str, CircuitBreaker]) -> None:
        self._token = token.encode()
        self._breakers = breakers

    async def open(self, request: Request) -> Response:
        return self._force(request, "open")

    async def close(self, request: Request) -> Response:
        return self._force(request, "close")

    def _force(self, request: Request, action: str) -> Response:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), self._token):
            return JSONResponse(
                {"error": "unauthorized", "detail": "a valid bearer token is required"},
                status_code=401,
                headers={"www-authenticate": 'Bearer realm="s2s-admin"'},
            )
        name = request.path_params["downstream"]
        breaker = self._breakers.get(name)
        if breaker is None:
            return JSONResponse({"error": "not_found", "detail": "unknown downstream"}, status_code=404)
        changed = breaker.force_open() if action == "open" else breaker.force_closed()
        log.warning("admin.breaker_forced", downstream=name, action=action, changed=changed)
        return JSONResponse({"downstream": name, "state": breaker.state.value, "changed": changed})
