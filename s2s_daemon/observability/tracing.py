"""Tracing: OpenTelemetry spans when the standard ``OTEL_*`` variables ask for them, nothing otherwise.

``Tracing.from_environ`` decides once, at start, from the variables alone:

* ``OTEL_SDK_DISABLED=true`` or ``OTEL_TRACES_EXPORTER=none``: off;
* ``OTEL_TRACES_EXPORTER=otlp`` (or ``console``), or an OTLP endpoint set (``OTEL_EXPORTER_OTLP_ENDPOINT``,
  ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) with no exporter named: on;
* nothing of these set: off.

Off is the ``Tracing`` base class itself: every span is one shared no-op object, the OpenTelemetry packages are
never imported, and the callers' only cost is a method call. On is ``_otel.OtelTracing``, imported then; the
SDK reads the rest of its variables itself (sampler, batch processor, exporter endpoint and protocol headers,
resource). Its spans follow the OpenTelemetry semantic conventions; their context travels as W3C
``traceparent``/``tracestate`` in this package's ``TraceContext`` (one parser, correlation.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from enum import StrEnum
from typing import ClassVar

from s2s_daemon.errors import ConfigError
from s2s_daemon.observability.correlation import TraceContext

__all__ = ["NO_TRACING", "AttributeValue", "Span", "SpanKind", "Tracing", "tracing_wanted"]

AttributeValue = str | bool | int | float | Sequence[str]
_OFF_VALUES = frozenset({"", "none"})


class SpanKind(StrEnum):
    INTERNAL = "internal"
    SERVER = "server"
    CLIENT = "client"
    PRODUCER = "producer"
    CONSUMER = "consumer"


class Span:
    """A span being recorded; this base is the no-op one (tracing off)."""

    __slots__ = ()

    def set(self, key: str, value: AttributeValue | None) -> None:
        """Set an attribute (None: leave it unset)."""

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """Add an event (retry, delay queue, breaker refusal...)."""

    def error(self, error_type: str, description: str | None = None) -> None:
        """Mark the span failed: status ERROR and ``error.type``."""

    def rename(self, name: str) -> None:
        """Name known only at the end (a server span's route)."""

    @property
    def context(self) -> TraceContext | None:
        """This span's context, to send as ``traceparent``/``tracestate``; None when not recorded."""
        return None


class _NoSpan(AbstractContextManager[Span]):
    __slots__ = ()

    def __enter__(self) -> Span:
        return _NO_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = Span()
_NO_SPAN_CM = _NoSpan()


class Tracing:
    """Tracing off: no spans, the trace context forwarded as before (a new span id per hop, made up)."""

    enabled: ClassVar[bool] = False

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
        """A span, current inside the ``with``. Its parent is ``parent`` (a remote context: a producer's
        ``traceparent``), else the current span; ``root=True`` starts a new trace (with ``links``)."""
        return _NO_SPAN_CM

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        """An event on the current span."""

    def current(self) -> TraceContext | None:
        """The current span's context, None outside any recorded span."""
        return None

    def forward(self, caller: TraceContext | None) -> TraceContext:
        """The context to send onward from here: the current span's (tracing on), else a new span id in the
        caller's trace (a new trace without a caller), as the daemon did before it recorded spans."""
        return (caller or TraceContext.new()).child()

    def exemplar(self) -> dict[str, str] | None:
        """``{"trace_id": ...}`` of the current sampled span, for a histogram observation; None when there is none."""
        return None

    def shutdown(self) -> None:
        """Flush what is buffered and stop exporting (at the end of the daemon's drain)."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], service_name: str, version: str) -> Tracing:
        """Tracing as the standard variables ask (see the module docstring); ConfigError naming the variable and
        the extra when they ask for it and the OpenTelemetry packages are not installed."""
        exporter = tracing_wanted(environ)
        if exporter is None:
            return NO_TRACING
        try:
            from s2s_daemon.observability._otel import OtelTracing
        except ModuleNotFoundError as exc:
            raise ConfigError(
                f"OTEL_TRACES_EXPORTER={exporter}: the OpenTelemetry packages are not installed ({exc}); "
                "pip install 's2s-daemon[otel]', or unset the OTEL_* variables to run without tracing"
            ) from exc
        return OtelTracing.create(exporter, environ, service_name, version)


NO_TRACING = Tracing()


def tracing_wanted(environ: Mapping[str, str]) -> str | None:
    """The exporter the variables ask for (``otlp`` or ``console``), or None when tracing stays off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    named = [part.strip().lower() for part in environ.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [part for part in named if part not in _OFF_VALUES]
    if "OTEL_TRACES_EXPORTER" in environ and not named:
        return None
    if not named:
        endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return "otlp" if endpoint else None
    unknown = [part for part in named if part not in ("otlp", "console")]
    if unknown or len(named) > 1:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER={environ['OTEL_TRACES_EXPORTER']!r}: expected one of 'otlp', 'console' or 'none'"
        )
    return named[0]
