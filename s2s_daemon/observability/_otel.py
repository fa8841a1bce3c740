"""Tracing on: the OpenTelemetry SDK behind ``tracing.Tracing`` (the ``otel`` extra; imported only when on).

One ``TracerProvider`` per daemon, not the global one (tests run several daemons in a process). The SDK reads
its own variables: ``OTEL_TRACES_SAMPLER``/``_ARG`` (the provider), ``OTEL_BSP_*`` (the batch processor),
``OTEL_EXPORTER_OTLP_*`` (the exporter: endpoint, headers, timeout, compression, certificates),
``OTEL_SERVICE_NAME``/``OTEL_RESOURCE_ATTRIBUTES`` (the resource; ``service_name`` from the settings when
neither names the service). Only the exporter and its protocol are chosen here, from
``OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`` or ``OTEL_EXPORTER_OTLP_PROTOCOL`` (``http/protobuf``, the default, or
``grpc``).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from typing import Any

try:
    import opentelemetry.sdk  # noqa: F401 - checked first, so the error names the extra, not a module inside it
except ModuleNotFoundError as exc:  # pragma: no cover - the dev and image installs have it
    raise ModuleNotFoundError(
        "tracing (OTEL_* variables set) needs the 'otel' extra: pip install 's2s-daemon[otel]'", name=exc.name
    ) from exc

from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, Status, StatusCode, TraceFlags, TraceState

from s2s_daemon.errors import ConfigError
from s2s_daemon.observability.correlation import TraceContext
from s2s_daemon.observability.logging import use_span_ids
from s2s_daemon.observability.tracing import AttributeValue, Span, SpanKind, Tracing

__all__ = ["OtelTracing"]

_KINDS = {
    SpanKind.INTERNAL: trace.SpanKind.INTERNAL,
    SpanKind.SERVER: trace.SpanKind.SERVER,
    SpanKind.CLIENT: trace.SpanKind.CLIENT,
    SpanKind.PRODUCER: trace.SpanKind.PRODUCER,
    SpanKind.CONSUMER: trace.SpanKind.CONSUMER,
}
_PROTOCOLS = ("http/protobuf", "grpc")


def _exporter(kind: str, environ: Mapping[str, str]) -> SpanExporter:
    if kind == "console":
        return ConsoleSpanExporter()
    variable = (
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"
        if "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL" in environ
        else "OTEL_EXPORTER_OTLP_PROTOCOL"
    )
    protocol = environ.get(variable, "http/protobuf").strip().lower()
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter

        return GrpcExporter()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        return HttpExporter()
    raise ConfigError(f"{variable}={environ[variable]!r}: expected one of {', '.join(_PROTOCOLS)}")


def span_context(trace_context: TraceContext) -> SpanContext:
    """A remote parent from a parsed ``traceparent``/``tracestate`` (our parser, correlation.py, decided validity)."""
    state = TraceState.from_header([trace_context.tracestate]) if trace_context.tracestate else None
    return SpanContext(
        trace_id=int(trace_context.trace_id, 16),
        span_id=int(trace_context.parent_id, 16),
        is_remote=True,
        trace_flags=TraceFlags(int(trace_context.flags, 16)),
        trace_state=state,
    )


def trace_context(context: SpanContext) -> TraceContext | None:
    """What to send as ``traceparent``/``tracestate`` for this span; the tracestate passes through unchanged."""
    if not context.is_valid:
        return None
    state = context.trace_state.to_header() if context.trace_state else None
    return TraceContext(
        format(context.trace_id, "032x"),
        format(context.span_id, "016x"),
        "01" if context.trace_flags.sampled else "00",
        state or None,
    )


class _Span(Span):
    __slots__ = ("_span",)

    def __init__(self, span: trace.Span) -> None:
        self._span = span

    def set(self, key: str, value: AttributeValue | None) -> None:
        if value is not None:
            self._span.set_attribute(key, value)

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        self._span.add_event(name, attributes)

    def error(self, error_type: str, description: str | None = None) -> None:
        self._span.set_attribute("error.type", error_type)
        self._span.set_status(Status(StatusCode.ERROR, description))

    def rename(self, name: str) -> None:
        self._span.update_name(name)

    @property
    def context(self) -> TraceContext | None:
        return trace_context(self._span.get_span_context())


class OtelTracing(Tracing):
    enabled = True

    def __init__(self, provider: TracerProvider) -> None:
        self.provider = provider
        self._tracer = provider.get_tracer("s2s_daemon")

    @classmethod
    def create(cls, exporter: str, environ: Mapping[str, str], service_name: str, version: str) -> OtelTracing:
        resource = Resource.create({SERVICE_VERSION: version})
        if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
            resource = resource.merge(Resource({SERVICE_NAME: service_name}))
        provider = TracerProvider(resource=resource)  # the sampler from OTEL_TRACES_SAMPLER(_ARG)
        provider.add_span_processor(BatchSpanProcessor(_exporter(exporter, environ)))  # OTEL_BSP_*
        use_span_ids(current_ids)
        return cls(provider)

    def span(
        self,
        name: str,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue | None] | None = None,
        *,
        parent: TraceContext | None = None,
        root: bool = False,
        links: Sequence[TraceContext] = (),
    ) -> AbstractContextManager[Span]:
        return self._span(name, kind, attributes, parent, root, links)

    @contextmanager
    def _span(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue | None] | None,
        parent: TraceContext | None,
        root: bool,
        links: Sequence[TraceContext],
    ) -> Iterator[Span]:
        context: Any = None
        if parent is not None:
            context = trace.set_span_in_context(NonRecordingSpan(span_context(parent)))
        elif root:
            context = trace.set_span_in_context(trace.INVALID_SPAN)
        with self._tracer.start_as_current_span(
            name,
            context=context,
            kind=_KINDS[kind],
            attributes={k: v for k, v in (attributes or {}).items() if v is not None},
            links=[Link(span_context(link)) for link in links],
            record_exception=True,
            set_status_on_exception=True,
        ) as span:
            yield _Span(span)

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        trace.get_current_span().add_event(name, attributes)

    def current(self) -> TraceContext | None:
        return trace_context(trace.get_current_span().get_span_context())

    def forward(self, caller: TraceContext | None) -> TraceContext:
        return self.current() or super().forward(caller)

    def exemplar(self) -> dict[str, str] | None:
        context = trace.get_current_span().get_span_context()
        if not context.is_valid or not context.trace_flags.sampled:
            return None
        return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}

    def shutdown(self) -> None:
        self.provider.shutdown()


def current_ids() -> tuple[str, str] | None:
    """trace_id and span_id of the current span, for log lines (``logging.add_trace_ids``)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x"), format(context.span_id, "016x")
