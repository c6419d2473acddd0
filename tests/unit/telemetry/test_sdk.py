from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes.process_attributes import PROCESS_EXECUTABLE_NAME, PROCESS_PID
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME
from opentelemetry.semconv.attributes.url_attributes import URL_QUERY
from opentelemetry.semconv.metrics.http_metrics import (
    HTTP_CLIENT_REQUEST_DURATION,
    HTTP_SERVER_REQUEST_DURATION,
)
from opentelemetry.trace import SpanKind
from opentelemetry.trace.status import StatusCode

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.records import Role
from otel_ebpf.telemetry.metrics import DEFAULT_DURATION_BUCKETS, SelfMetrics
from otel_ebpf.telemetry.sdk import SdkTelemetry
from otel_ebpf.telemetry.semantics import OTEL_EBPF_SERVICE_NAME

from ..factories import T0, make_exchange, make_fake_proc

TRACE_HEX = "0af7651916cd43dd8448eb211c80319c"
SPAN_HEX = "b7ad6b7169203331"


@pytest.fixture
def sdk(tmp_path):
    make_fake_proc(tmp_path, 4242, ["python3", "shop.py"], exe="/usr/bin/python3.11")
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=Resource({SERVICE_NAME: "my-agent"}))
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader], resource=Resource({SERVICE_NAME: "my-agent"}))
    telemetry = SdkTelemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        process_info=ProcessInfoCache(proc_root=str(tmp_path)),
        self_metrics=SelfMetrics(),
    )
    yield telemetry, spans, reader
    tracer_provider.shutdown()
    meter_provider.shutdown()


def _histograms(reader):
    out = {}
    for rm in reader.get_metrics_data().resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out[m.name] = m
    return out


def test_an_exchange_becomes_a_span_of_the_callers_provider(sdk):
    telemetry, spans, _ = sdk
    telemetry.consume(make_exchange(duration_ns=5_000))
    (span,) = spans.get_finished_spans()
    assert span.name == "GET"
    assert span.kind is SpanKind.SERVER
    assert span.start_time == T0
    assert span.end_time == T0 + 5_000
    assert span.attributes[HTTP_REQUEST_METHOD] == "GET"
    assert span.resource.attributes[SERVICE_NAME] == "my-agent"
    assert span.instrumentation_scope.name == "otel_ebpf"
    assert span.parent is None


def test_the_watched_process_is_named_by_span_attributes(sdk):
    telemetry, spans, _ = sdk
    telemetry.consume(make_exchange(pid=4242))
    (span,) = spans.get_finished_spans()
    assert span.attributes[PROCESS_PID] == 4242
    assert span.attributes[PROCESS_EXECUTABLE_NAME] == "python3.11"
    assert span.attributes[OTEL_EBPF_SERVICE_NAME] == "shop"


def test_a_traceparent_makes_the_span_a_child_of_the_remote_parent(sdk):
    telemetry, spans, _ = sdk
    headers = (("traceparent", f"00-{TRACE_HEX}-{SPAN_HEX}-01"), ("tracestate", "rojo=1"))
    telemetry.consume(make_exchange(headers=headers))
    (span,) = spans.get_finished_spans()
    assert span.context.trace_id == int(TRACE_HEX, 16)
    assert span.parent.span_id == int(SPAN_HEX, 16)
    assert span.parent.is_remote
    assert dict(span.context.trace_state) == {"rojo": "1"}


def test_the_callers_sampler_drops_children_of_unsampled_parents(sdk):
    telemetry, spans, reader = sdk
    telemetry.consume(make_exchange(headers=(("traceparent", f"00-{TRACE_HEX}-{SPAN_HEX}-00"),)))
    assert spans.get_finished_spans() == ()
    assert _histograms(reader)[HTTP_SERVER_REQUEST_DURATION].data.data_points[0].count == 1


def test_the_calling_threads_current_span_is_never_the_parent(sdk):
    telemetry, spans, _ = sdk
    tracer = TracerProvider().get_tracer("host-app")
    with tracer.start_as_current_span("unrelated"):
        telemetry.consume(make_exchange())
    (span,) = spans.get_finished_spans()
    assert span.parent is None


def test_errors_set_the_span_status(sdk):
    telemetry, spans, _ = sdk
    telemetry.consume(make_exchange(status=503))
    telemetry.consume(make_exchange(status=None, role=Role.CLIENT))
    server, client = spans.get_finished_spans()
    assert server.status.status_code is StatusCode.ERROR
    assert server.attributes[ERROR_TYPE] == "503"
    assert client.kind is SpanKind.CLIENT
    assert client.attributes[ERROR_TYPE] == "response_missing"


def test_durations_are_recorded_with_the_semconv_buckets_and_the_service(sdk):
    telemetry, _, reader = sdk
    telemetry.consume(make_exchange(duration_ns=20_000_000))
    telemetry.consume(make_exchange(role=Role.CLIENT, duration_ns=20_000_000))
    telemetry.consume(make_exchange(role=Role.UNKNOWN))
    metrics = _histograms(reader)
    server = metrics[HTTP_SERVER_REQUEST_DURATION]
    assert server.unit == "s"
    (point,) = server.data.data_points
    assert tuple(point.explicit_bounds) == DEFAULT_DURATION_BUCKETS
    assert point.count == 1
    assert point.sum == pytest.approx(0.02)
    assert point.attributes[OTEL_EBPF_SERVICE_NAME] == "shop"
    assert point.attributes[HTTP_REQUEST_METHOD] == "GET"
    assert metrics[HTTP_CLIENT_REQUEST_DURATION].data.data_points[0].count == 1


def test_the_service_metric_attribute_can_be_left_out(tmp_path):
    reader = InMemoryMetricReader()
    telemetry = SdkTelemetry(
        tracer_provider=TracerProvider(),
        meter_provider=MeterProvider(metric_readers=[reader]),
        process_info=ProcessInfoCache(proc_root=str(tmp_path)),
        service_metric_attribute=False,
    )
    telemetry.consume(make_exchange())
    (point,) = _histograms(reader)[HTTP_SERVER_REQUEST_DURATION].data.data_points
    assert OTEL_EBPF_SERVICE_NAME not in point.attributes


def test_redaction_is_on_by_default(sdk):
    telemetry, spans, _ = sdk
    telemetry.consume(make_exchange(target="/login?password=hunter2&next=/"))
    (span,) = spans.get_finished_spans()
    assert span.attributes[URL_QUERY] == "password=REDACTED&next=/"


def test_a_failure_never_escapes_consume(sdk):
    telemetry, spans, _ = sdk

    class Broken:
        def process(self, exchange):
            raise RuntimeError("boom")

    telemetry._processors = [Broken()]
    telemetry.consume(make_exchange())
    assert telemetry.errors == 1
    assert telemetry._self.get("otel_ebpf.sdk.errors") == 1
    assert spans.get_finished_spans() == ()


def test_the_global_providers_are_the_default():
    telemetry = SdkTelemetry()
    telemetry.consume(make_exchange())  # no SDK installed globally: no-op providers, no error
    assert telemetry.errors == 0
