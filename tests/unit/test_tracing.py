"""Tracing turned on by the standard OTEL_* variables alone, the log processor, and the metrics exposition."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter
from prometheus_client.openmetrics.parser import text_string_to_metric_families

from s2s_daemon.errors import ConfigError
from s2s_daemon.observability.correlation import TraceContext
from s2s_daemon.observability.logging import add_trace_ids, use_span_ids
from s2s_daemon.observability.metrics import Metrics
from s2s_daemon.observability.tracing import NO_TRACING, SpanKind, Tracing, tracing_wanted

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def _no_span_source() -> object:
    """Tracing sets where log lines take their span ids from (process-wide, like logging): reset it."""
    yield
    use_span_ids(None)


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "x", "OTEL_TRACES_SAMPLER": "always_on"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": " OTLP "}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}, None),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "false"}, "otlp"),
    ],
)
def test_tracing_is_wanted_from_the_standard_variables_alone(environ: dict[str, str], wanted: str | None) -> None:
    """otlp or console when named (or an OTLP endpoint set and no exporter named); off with none, with `none`,
    and whenever OTEL_SDK_DISABLED=true."""
    assert tracing_wanted(environ) == wanted


@pytest.mark.parametrize("value", ["zipkin", "otlp,console", "jaeger"])
def test_an_unsupported_exporter_is_refused_naming_the_variable(value: str) -> None:
    """An exporter the daemon does not ship fails at start, naming the variable and the choices."""
    with pytest.raises(ConfigError, match=r"OTEL_TRACES_EXPORTER=.*expected one of 'otlp', 'console' or 'none'"):
        tracing_wanted({"OTEL_TRACES_EXPORTER": value})


def test_an_unknown_protocol_is_refused_naming_the_variable() -> None:
    """OTEL_EXPORTER_OTLP_PROTOCOL other than http/protobuf or grpc fails at start, naming it."""
    with pytest.raises(ConfigError, match="OTEL_EXPORTER_OTLP_PROTOCOL='http/json': expected one of"):
        Tracing.from_environ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"}, "s", "1")


@pytest.mark.parametrize(
    ("environ", "exporter"),
    [
        ({}, HttpExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, HttpExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, GrpcExporter),
        ({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf"}, HttpExporter),
    ],
)
def test_the_protocol_variables_choose_the_exporter(environ: dict[str, str], exporter: type) -> None:
    """http/protobuf by default, grpc when asked; the traces-specific variable wins over the general one."""
    tracing = Tracing.from_environ({"OTEL_TRACES_EXPORTER": "otlp", **environ}, "s2s-test", "1.2.3")
    try:
        [processor] = tracing.provider._active_span_processor._span_processors  # type: ignore[attr-defined]
        assert isinstance(processor._batch_processor._exporter, exporter)
    finally:
        tracing.shutdown()


def test_the_service_name_comes_from_the_settings_unless_otel_names_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The resource's service.name is OTEL_SERVICE_NAME when set, else the configured service_name; the version is
    the package's."""
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    named = {"OTEL_TRACES_EXPORTER": "console"}
    tracing = Tracing.from_environ(named, "from-settings", "9.9.9")
    assert tracing.provider.resource.attributes["service.name"] == "from-settings"  # type: ignore[attr-defined]
    assert tracing.provider.resource.attributes["service.version"] == "9.9.9"  # type: ignore[attr-defined]
    tracing.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "from-otel")  # Resource.create reads the process environment
    tracing = Tracing.from_environ(named, "from-settings", "9.9.9")
    assert tracing.provider.resource.attributes["service.name"] == "from-otel"  # type: ignore[attr-defined]
    tracing.shutdown()


def test_tracing_off_imports_no_opentelemetry_and_spans_are_one_shared_no_op() -> None:
    """With no OTEL_* variable a whole daemon is built and neither our OpenTelemetry module nor the tracing SDK or
    an exporter is imported (redis-py and FastStream import parts of OpenTelemetry themselves when it is
    installed); off, a span is the same shared object every time and the context is forwarded with a new span
    id, as before."""
    code = (
        "import json, sys\n"
        "from s2s_daemon.app import Daemon\n"
        "from s2s_daemon.settings import load_settings\n"
        "d = Daemon(load_settings(sys.argv[1]))\n"
        "print(json.dumps({'enabled': d.tracing.enabled, "
        "'otel': sorted(m for m in sys.modules if m.startswith(('s2s_daemon.observability._otel', "
        "'opentelemetry.sdk.trace', 'opentelemetry.exporter')))}))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    config = ROOT / "s2s_daemon" / "config" / "example.yaml"
    result = subprocess.run([sys.executable, "-c", code, config], env=env, capture_output=True, text=True, check=True)
    assert json.loads(result.stdout) == {"enabled": False, "otel": []}
    assert Tracing.from_environ({}, "s", "1") is NO_TRACING
    assert NO_TRACING.span("a") is NO_TRACING.span("b", SpanKind.CLIENT)
    caller = TraceContext.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "k=v")
    onward = NO_TRACING.forward(caller)
    assert (onward.trace_id, onward.tracestate) == (caller.trace_id, "k=v")  # type: ignore[union-attr]
    assert onward.parent_id != caller.parent_id  # type: ignore[union-attr]


def test_spans_nest_and_forward_their_own_context() -> None:
    """On: a span under a remote parent continues its trace and tracestate; forward() and exemplar() name the
    current span; log lines carry its trace_id and span_id."""
    tracing = Tracing.from_environ({"OTEL_TRACES_EXPORTER": "console"}, "s", "1")
    caller = TraceContext.parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", "rojo=1")
    try:
        with tracing.span("process q", SpanKind.CONSUMER, parent=caller) as outer:
            with tracing.span("POST", SpanKind.CLIENT) as inner:
                context = inner.context
                assert context is not None
                assert (context.trace_id, context.tracestate) == ("4bf92f3577b34da6a3ce929d0e0e4736", "rojo=1")
                assert tracing.forward(caller) == context
                assert tracing.exemplar() == {"trace_id": context.trace_id, "span_id": context.parent_id}
                line = add_trace_ids(None, "info", {"event": "x"})
                assert (line["trace_id"], line["span_id"]) == (context.trace_id, context.parent_id)
            assert outer.context is not None
            assert outer.context.parent_id != context.parent_id
        assert tracing.current() is None
    finally:
        tracing.shutdown()


def test_log_lines_without_a_span_take_the_trace_id_of_the_bound_traceparent() -> None:
    """Tracing off: a line bound to a traceparent carries its trace id (no span of ours, so no span id)."""
    line = add_trace_ids(None, "info", {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert "span_id" not in line
    assert "trace_id" not in add_trace_ids(None, "info", {"event": "no trace"})


def test_metrics_negotiate_openmetrics_with_exemplars_and_carry_the_process_collectors() -> None:
    """Accept: application/openmetrics-text gets OpenMetrics with the exemplar; no Accept gets the text format;
    both carry s2s_build_info and the process, platform and GC collectors."""
    metrics = Metrics()
    exemplar = {"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7"}
    metrics.handler_seconds.labels("service-a").observe(0.02, exemplar)
    body, content_type = metrics.exposition("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    found = [s.exemplar.labels for s in families["s2s_handler_duration_seconds"].samples if s.exemplar]
    assert found == [exemplar]
    assert families["s2s_build"].samples[0].labels.keys() == {"version", "python_version"}
    assert {"process_cpu_seconds", "python_info", "python_gc_collections"} <= set(families)
    text, text_type = metrics.exposition(None)
    assert text_type.startswith("text/plain; version=0.0.4")
    assert b"s2s_build_info{" in text
    assert b"# {" not in text  # no exemplars in the text format
