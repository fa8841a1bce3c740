"""A real OTLP/HTTP trace receiver for the tests: ``POST /v1/traces`` with a protobuf ``ExportTraceServiceRequest``
(decoded with ``opentelemetry-proto``), spans kept in memory, and a renderer of a trace as an indented tree.

It answers as a collector does (200 with an empty ``ExportTraceServiceResponse``), so the SDK's exporter sees a
successful export. The tracing tests run it in their event loop; the bench's traced runs start it as a process
(``python -m tests.otlp PORT``: counts only, ``GET /stats`` answers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

KINDS = {0: "unspecified", 1: "internal", 2: "server", 3: "client", 4: "producer", 5: "consumer"}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: str
    attributes: dict[str, Any]
    events: tuple[tuple[str, dict[str, Any]], ...]
    links: tuple[tuple[str, str], ...]  # (trace_id, span_id)
    status: str  # unset | ok | error
    trace_state: str
    resource: dict[str, Any]
    start_ns: int

    @property
    def event_names(self) -> list[str]:
        return [name for name, _ in self.events]


@dataclass
class Receiver:
    port: int = 0
    spans: list[Span] = field(default_factory=list)
    requests: int = 0
    keep: bool = True  # False: count the spans, keep none (the bench's long runs)
    received: int = 0

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def handle(self, request: web.Request) -> web.Response:
        if request.content_type != "application/x-protobuf":
            return web.Response(status=415, text="expected application/x-protobuf")
        message = ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests += 1
        spans = list(decode(message))
        self.received += len(spans)
        if self.keep:
            self.spans.extend(spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    def trace(self, trace_id: str) -> list[Span]:
        return [s for s in self.spans if s.trace_id == trace_id]

    def one(self, trace_id: str | None = None, **where: Any) -> Span:
        """The one span matching ``name``/``kind``/``parent_span_id`` (in ``trace_id`` when given)."""
        found = [
            s
            for s in (self.spans if trace_id is None else self.trace(trace_id))
            if all(getattr(s, k) == v for k, v in where.items())
        ]
        assert len(found) == 1, f"{len(found)} spans match {where}: {[(s.name, s.kind) for s in found]}"
        return found[0]


def decode(message: ExportTraceServiceRequest) -> Iterable[Span]:
    for resource_spans in message.resource_spans:
        resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
        for scope_spans in resource_spans.scope_spans:
            for s in scope_spans.spans:
                yield Span(
                    trace_id=s.trace_id.hex(),
                    span_id=s.span_id.hex(),
                    parent_span_id=s.parent_span_id.hex(),
                    name=s.name,
                    kind=KINDS[s.kind],
                    attributes={a.key: _value(a.value) for a in s.attributes},
                    events=tuple((e.name, {a.key: _value(a.value) for a in e.attributes}) for e in s.events),
                    links=tuple((link.trace_id.hex(), link.span_id.hex()) for link in s.links),
                    status={0: "unset", 1: "ok", 2: "error"}[s.status.code],
                    trace_state=s.trace_state,
                    resource=resource,
                    start_ns=s.start_time_unix_nano,
                )


_SHOWN = (
    "messaging.destination.name",
    "messaging.rabbitmq.destination.routing_key",
    "db.system.name",
    "db.collection.name",
    "s2s.idempotency.state",
    "http.route",
    "url.template",
    "http.request.resend_count",
    "http.response.status_code",
    "s2s.outcome",
)


def render(spans: list[Span], *, external_root: str | None = None) -> str:
    """The spans of one trace as an indented tree (children by start time); ``external_root``: the caller's span
    id, shown as the root when the caller itself did not export."""
    by_parent: dict[str, list[Span]] = {}
    for s in sorted(spans, key=lambda s: s.start_ns):
        by_parent.setdefault(s.parent_span_id, []).append(s)
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def walk(parent: str, depth: int) -> None:
        for s in by_parent.get(parent, []):
            shown = ", ".join(f"{k}={s.attributes[k]}" for k in _SHOWN if k in s.attributes)
            extra = [f"events: {', '.join(s.event_names)}"] if s.events else []
            extra += [f"linked to {span_id}" for _, span_id in s.links]
            status = " ERROR" if s.status == "error" else ""
            lines.append(f"{'  ' * depth}{s.name} [{s.kind}{status}] {shown}".rstrip())
            lines.extend(f"{'  ' * (depth + 2)}{e}" for e in extra)
            walk(s.span_id, depth + 1)

    roots = sorted({s.parent_span_id for s in spans if s.parent_span_id not in ids})
    for root in roots:
        if root and root == external_root:
            lines.append(f"(caller's span {root})")
            walk(root, 1)
        else:
            walk(root, 0)
    return "\n".join(lines)


@contextlib.asynccontextmanager
async def running_receiver(port: int = 0, *, keep: bool = True) -> AsyncIterator[Receiver]:
    receiver = Receiver(keep=keep)
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)

    async def stats(_: web.Request) -> web.Response:
        return web.json_response({"requests": receiver.requests, "spans": receiver.received})

    app.router.add_get("/stats", stats)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    receiver.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr] # the bound port
    try:
        yield receiver
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def running_grpc_receiver() -> AsyncIterator[Receiver]:
    """The same receiver over OTLP/gRPC (``TraceService/Export``), on a free port."""
    import grpc
    from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

    receiver = Receiver()

    class Service(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc] # generated, untyped
        async def Export(  # the gRPC method's name
            self, request: ExportTraceServiceRequest, context: Any
        ) -> ExportTraceServiceResponse:
            receiver.requests += 1
            spans = list(decode(request))
            receiver.received += len(spans)
            receiver.spans.extend(spans)
            return ExportTraceServiceResponse()

    server = grpc.aio.server()
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), server)
    receiver.port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        yield receiver
    finally:
        await server.stop(grace=None)


async def _serve(port: int) -> None:
    async with running_receiver(port, keep=False):
        await asyncio.Event().wait()  # until SIGTERM/SIGINT ends the process


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(int(sys.argv[1])))
