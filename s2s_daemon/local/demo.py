"""Demo downstreams with fault injection, for `make run`, tests, chaos runs and benchmarks.

service-a  POST /resource        creates a resource with a server-generated id; honours Idempotency-Key
                                 (a repeated key returns the first resource and applies no new effect)
service-b  GET  /resource/{id}   returns the resource service-a created under that id (one store for both);
                                 an id never created gets a made-up resource, so load needs no setup;
                                 ids starting with "missing" are 404

Both:      POST /_faults  {"error_rate": 0.6, "error_status": 503, "latency_ms": 50, "retry_after": "3",
                           "fail_next": 2, "status": 429}       set fault knobs (omitted keys reset)
           GET  /_stats   calls, effects, calls per idempotency key
           POST /_reset   forget everything
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

_TRACE_HEADERS = ("traceparent", "tracestate")


@dataclass
class Faults:
    error_rate: float = 0.0  # probability of answering error_status
    error_status: int = 503
    status: int | None = None  # answer this status to every call
    fail_next: int = 0  # answer error_status to the next N calls
    latency_ms: float = 0.0
    latency_jitter_ms: float = 0.0
    retry_after: str | None = None  # Retry-After header on error answers

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Faults:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        unknown = set(data) - set(known)
        if unknown:
            raise ValueError(f"unknown fault knobs: {sorted(unknown)}")
        return cls(**known)


@dataclass
class DemoStore:
    """The resources service-a created, which service-b serves."""

    resources: dict[str, dict[str, Any]] = field(default_factory=dict)
    by_key: dict[str, str] = field(default_factory=dict)  # idempotency key -> resource id

    def clear(self) -> None:
        self.resources.clear()
        self.by_key.clear()


@dataclass
class ServiceState:
    name: str
    store: DemoStore = field(default_factory=DemoStore)
    faults: Faults = field(default_factory=Faults)
    calls: int = 0
    calls_by_key: Counter[str] = field(default_factory=Counter)
    # the W3C trace headers (traceparent, tracestate) of the latest call per idempotency key
    trace_by_key: dict[str, dict[str, str]] = field(default_factory=dict)
    effects: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0

    def reset(self) -> None:
        """Forget calls, faults and the stored resources; the store stays the one shared with the other service."""
        store = self.store
        store.clear()
        self.__dict__.update(ServiceState(self.name, store).__dict__)

    def stats(self) -> dict[str, Any]:
        return {
            "service": self.name,
            "calls": self.calls,
            "effects": self.effects,
            "distinct_keys": len(self.calls_by_key),
            "peak_in_flight": self.peak_in_flight,
            "calls_by_key": dict(self.calls_by_key),
        }


async def _inject(state: ServiceState) -> Response | None:
    f = state.faults
    if f.latency_ms or f.latency_jitter_ms:
        state.in_flight += 1
        state.peak_in_flight = max(state.peak_in_flight, state.in_flight)
        try:
            await asyncio.sleep((f.latency_ms + random.uniform(0, f.latency_jitter_ms)) / 1000)
        finally:
            state.in_flight -= 1
    status = None
    if f.status is not None:
        status = f.status
    elif f.fail_next > 0:
        f.fail_next -= 1
        status = f.error_status
    elif f.error_rate and random.random() < f.error_rate:
        status = f.error_status
    if status is None:
        return None
    headers = {"retry-after": f.retry_after} if f.retry_after else {}
    return JSONResponse({"error": "injected fault", "status": status}, status_code=status, headers=headers)


def _admin_routes(state: ServiceState) -> list[Route]:
    async def set_faults(request: Request) -> Response:
        try:
            state.faults = Faults.from_json(await request.json())
        except (ValueError, TypeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(state.faults.__dict__)

    async def stats(_: Request) -> Response:
        return JSONResponse(state.stats())

    async def reset(_: Request) -> Response:
        state.reset()
        return JSONResponse({"reset": True})

    return [
        Route("/_faults", set_faults, methods=["POST"]),
        Route("/_stats", stats, methods=["GET"]),
        Route("/_reset", reset, methods=["POST"]),
    ]


def demo_states() -> tuple[ServiceState, ServiceState]:
    """The states of service-a and service-b, over one store."""
    store = DemoStore()
    return ServiceState("service-a", store), ServiceState("service-b", store)


def service_a(state: ServiceState | None = None, path: str = "/resource") -> Starlette:
    """``POST <path>`` creates a resource in the state's store."""
    state = state or ServiceState("service-a")
    store = state.store

    async def create(request: Request) -> Response:
        state.calls += 1
        key = request.headers.get("idempotency-key")
        if key:
            state.calls_by_key[key] += 1
            state.trace_by_key[key] = {
                name: request.headers[name] for name in _TRACE_HEADERS if name in request.headers
            }
        if (fault := await _inject(state)) is not None:
            return fault
        try:
            body = await request.json()
        except ValueError:
            return JSONResponse({"error": "body must be JSON"}, status_code=400)
        if not isinstance(body, dict) or not isinstance(body.get("name"), str) or not body["name"]:
            return JSONResponse({"error": "'name' (non-empty string) is required"}, status_code=422)
        if key and key in store.by_key:
            return JSONResponse(store.resources[store.by_key[key]], status_code=200)
        resource = {"id": uuid.uuid4().hex, "name": body["name"], "attributes": body.get("attributes", {})}
        store.resources[resource["id"]] = resource
        state.effects += 1
        if key:
            store.by_key[key] = resource["id"]
        return JSONResponse(resource, status_code=201)

    app = Starlette(routes=[Route(path, create, methods=["POST"]), *_admin_routes(state)])
    app.state.service = state
    return app


def service_b(state: ServiceState | None = None, path: str = "/resource/{id}") -> Starlette:
    """``GET <path>`` (one path parameter: the id) reads a resource from the state's store."""
    state = state or ServiceState("service-b")
    store = state.store

    async def get(request: Request) -> Response:
        state.calls += 1
        if (fault := await _inject(state)) is not None:
            return fault
        [resource_id] = request.path_params.values()
        if resource_id.startswith("missing"):
            return JSONResponse({"error": "not found", "id": resource_id}, status_code=404)
        created = store.resources.get(resource_id)
        if created is not None:
            return JSONResponse(created)
        return JSONResponse({"id": resource_id, "name": f"resource {resource_id}", "source": "service-b"})

    app = Starlette(routes=[Route(path, get, methods=["GET"]), *_admin_routes(state)])
    app.state.service = state
    return app


async def serve_demo(host: str, port_a: int, port_b: int) -> None:
    """Run both demo services until cancelled (access logs off: they cost more than the handler)."""
    import uvicorn

    state_a, state_b = demo_states()
    servers = [
        uvicorn.Server(uvicorn.Config(app, host=host, port=port, access_log=False, log_config=None))
        for app, port in ((service_a(state_a), port_a), (service_b(state_b), port_b))
    ]
    await asyncio.gather(*(s.serve() for s in servers))
