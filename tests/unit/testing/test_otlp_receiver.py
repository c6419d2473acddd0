"""OtlpReceiver, driven by the SDK's real OTLP exporters over gRPC and HTTP, and by hand-made POSTs."""

from __future__ import annotations

import gzip
import json
import urllib.error
import urllib.request

import grpc
import pytest
from google.rpc import status_pb2
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as GrpcLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as GrpcMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcSpanExporter
from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpanExporter
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExplicitBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ebpf.testing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, OtlpReceiver

RESOURCE = Resource.create({"service.name": "checkout", "process.pid": 4242})


@pytest.fixture
def receiver():
    with OtlpReceiver() as running:
        yield running


def _tracer_provider(exporter):
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def _emit_server_and_client_span(provider):
    tracer = provider.get_tracer("otel_ebpf.test", "1.2.3")
    with tracer.start_as_current_span(
        "GET /users/{id}",
        kind=SpanKind.SERVER,
        attributes={
            "http.request.method": "GET",
            "http.response.status_code": 500,
            "latency.ratio": 0.25,
            "sampled": True,
            "http.request.header.accept": ["text/html", "application/json"],
        },
    ) as server:
        with tracer.start_as_current_span("GET", kind=SpanKind.CLIENT) as client:
            client.add_event("retry", {"attempt": 2})
        server.set_status(Status(StatusCode.ERROR, "upstream failed"))
    return server, client


def _post(url, body, *, content_type, encoding=None):
    headers = {"Content-Type": content_type}
    if encoding:
        headers["Content-Encoding"] = encoding
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


def test_spans_exported_over_grpc_arrive_decoded_with_hex_ids_and_python_values(receiver):
    provider = _tracer_provider(GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True))
    server, client = _emit_server_and_client_span(provider)
    provider.shutdown()

    spans = {s.name: s for s in receiver.wait_for_spans(2)}
    got = spans["GET /users/{id}"]
    context = server.get_span_context()
    assert got.trace_id == f"{context.trace_id:032x}"
    assert got.span_id == f"{context.span_id:016x}"
    assert got.parent_span_id == ""
    assert got.kind == SPAN_KIND_SERVER
    assert got.kind_name == "SERVER"
    assert got.start_ns == server.start_time
    assert got.end_ns == server.end_time
    assert got.attributes == {
        "http.request.method": "GET",
        "http.response.status_code": 500,
        "latency.ratio": 0.25,
        "sampled": True,
        "http.request.header.accept": ["text/html", "application/json"],
    }
    assert got.resource["service.name"] == "checkout"
    assert got.resource["process.pid"] == 4242
    assert (got.scope, got.scope_version) == ("otel_ebpf.test", "1.2.3")
    assert (got.status_code, got.status_message) == (2, "upstream failed")
    assert got.transport == "grpc"

    child = spans["GET"]
    assert child.kind == SPAN_KIND_CLIENT
    assert child.trace_id == got.trace_id
    assert child.parent_span_id == got.span_id
    assert child.events[0]["name"] == "retry"
    assert child.events[0]["attributes"] == {"attempt": 2}


def test_spans_exported_over_http_with_gzip_arrive_decoded(receiver):
    exporter = HttpSpanExporter(endpoint=receiver.http_url("traces"), compression=HttpCompression.Gzip)
    provider = _tracer_provider(exporter)
    server, _ = _emit_server_and_client_span(provider)
    provider.shutdown()

    spans = receiver.wait_for_spans(1, where=lambda s: s.kind == SPAN_KIND_SERVER)
    assert spans[0].span_id == f"{server.get_span_context().span_id:016x}"
    assert spans[0].transport == "http"
    assert spans[0].attributes["http.response.status_code"] == 500
    (request,) = [
        r for r in receiver.requests("traces") if r.message.resource_spans[0].scope_spans[0].spans[0].kind == 2
    ]
    assert request.encoding == "protobuf"
    assert request.headers["content-encoding"] == "gzip"


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_metrics_arrive_as_sums_histograms_and_gauges_with_their_data_points(receiver, transport):
    if transport == "grpc":
        exporter = GrpcMetricExporter(endpoint=receiver.grpc_endpoint, insecure=True)
    else:
        exporter = HttpMetricExporter(endpoint=receiver.http_url("metrics"))
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(
        resource=RESOURCE,
        metric_readers=[reader],
        views=[
            View(
                instrument_name="http.server.request.duration",
                aggregation=ExplicitBucketHistogramAggregation(boundaries=[0.1, 1.0]),
            )
        ],
    )
    meter = provider.get_meter("otel_ebpf.test")
    meter.create_counter("requests", unit="{request}", description="served").add(3, {"route": "/a"})
    histogram = meter.create_histogram("http.server.request.duration", unit="s")
    for value in (0.05, 0.5, 0.7, 2.0):
        histogram.record(value, {"route": "/a"})
    meter.create_gauge("queue.depth").set(7)
    provider.shutdown()

    metrics = {m.name: m for m in receiver.wait_for_metrics(3)}
    requests = metrics["requests"]
    assert (requests.kind, requests.unit, requests.description) == ("sum", "{request}", "served")
    assert requests.is_monotonic is True
    assert requests.temporality == 2  # cumulative
    assert requests.data_points[0]["value"] == 3
    assert requests.data_points[0]["attributes"] == {"route": "/a"}
    assert requests.resource["service.name"] == "checkout"
    assert requests.scope == "otel_ebpf.test"
    assert requests.transport == transport

    duration = metrics["http.server.request.duration"]
    assert duration.kind == "histogram"
    point = duration.data_points[0]
    assert point["count"] == 4
    assert point["sum"] == pytest.approx(3.25)
    assert point["explicit_bounds"] == [0.1, 1.0]
    assert point["bucket_counts"] == [1, 2, 1]
    assert (point["min"], point["max"]) == (0.05, 2.0)

    depth = metrics["queue.depth"]
    assert depth.kind == "gauge"
    assert depth.data_points[0]["value"] == 7


def test_logs_exported_over_grpc_arrive_with_body_severity_and_ids(receiver):
    provider = LoggerProvider(resource=RESOURCE)
    provider.add_log_record_processor(
        SimpleLogRecordProcessor(GrpcLogExporter(endpoint=receiver.grpc_endpoint, insecure=True))
    )
    provider.get_logger("otel_ebpf.test").emit(
        body={"message": "dropped 3 events", "count": 3},
        severity_number=SeverityNumber.WARN,
        severity_text="WARN",
        attributes={"component": "ringbuf"},
    )
    provider.shutdown()

    (log,) = receiver.wait_for_logs(1)
    assert log.body == {"message": "dropped 3 events", "count": 3}
    assert (log.severity_number, log.severity_text) == (SeverityNumber.WARN.value, "WARN")
    assert log.attributes == {"component": "ringbuf"}
    assert log.resource["service.name"] == "checkout"
    assert log.scope == "otel_ebpf.test"
    assert log.trace_id == ""


OTLP_JSON_TRACES = {
    "resourceSpans": [
        {
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "frontend"}}]},
            "scopeSpans": [
                {
                    "scope": {"name": "otel-ebpf", "version": "0.1.0"},
                    "spans": [
                        {
                            "traceId": "5b8efff798038103d269b633813fc60c",
                            "spanId": "eee19b7ec3c1b174",
                            "parentSpanId": "eee19b7ec3c1b173",
                            "name": "POST /orders",
                            "kind": 2,
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": "1544712661000000000",
                            "attributes": [
                                {"key": "http.response.status_code", "value": {"intValue": "201"}},
                                {"key": "server.address", "value": {"stringValue": "orders"}},
                                {"key": "ratio", "value": {"doubleValue": 0.5}},
                                {"key": "retried", "value": {"boolValue": False}},
                            ],
                            "status": {"code": 1},
                        }
                    ],
                }
            ],
        }
    ]
}


def test_a_json_post_with_hex_ids_is_decoded_and_answered_in_json(receiver):
    status, headers, body = _post(
        receiver.http_url("traces"), json.dumps(OTLP_JSON_TRACES).encode(), content_type="application/json"
    )

    assert status == 200
    assert headers["Content-Type"] == "application/json"
    assert json.loads(body) == {}
    (span,) = receiver.spans()
    assert span.trace_id == "5b8efff798038103d269b633813fc60c"
    assert span.span_id == "eee19b7ec3c1b174"
    assert span.parent_span_id == "eee19b7ec3c1b173"
    assert span.kind == SPAN_KIND_SERVER
    assert (span.start_ns, span.end_ns) == (1544712660000000000, 1544712661000000000)
    assert span.attributes == {
        "http.response.status_code": 201,
        "server.address": "orders",
        "ratio": 0.5,
        "retried": False,
    }
    assert span.resource == {"service.name": "frontend"}
    assert (span.scope, span.scope_version) == ("otel-ebpf", "0.1.0")
    assert span.status_code == 1
    assert span.transport == "http"
    assert receiver.requests()[0].encoding == "json"


def test_a_gzipped_json_post_is_decoded(receiver):
    body = gzip.compress(json.dumps(OTLP_JSON_TRACES).encode())

    status, _, _ = _post(receiver.http_url("traces"), body, content_type="application/json", encoding="gzip")

    assert status == 200
    assert [s.name for s in receiver.spans()] == ["POST /orders"]


def test_a_json_post_with_base64_ids_is_rejected_as_a_bad_request(receiver):
    document = json.loads(json.dumps(OTLP_JSON_TRACES))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"] = "W47/95gDgQPSabYzgT/GDA=="

    status, _, body = _post(receiver.http_url("traces"), json.dumps(document).encode(), content_type="application/json")

    assert status == 400
    assert "hex" in json.loads(body)["message"]
    assert receiver.spans() == []


def test_unknown_paths_and_content_types_are_refused(receiver):
    assert _post(receiver.http_endpoint + "/v1/profiles", b"", content_type="application/x-protobuf")[0] == 404
    assert _post(receiver.http_url("traces"), b"", content_type="text/plain")[0] == 415
    assert _post(receiver.http_url("traces"), b"\x00", content_type="application/x-protobuf", encoding="br")[0] == 415
    assert receiver.requests() == []


def test_an_empty_protobuf_post_is_accepted_as_an_empty_request(receiver):
    status, headers, body = _post(receiver.http_url("metrics"), b"", content_type="application/x-protobuf")

    assert (status, headers["Content-Type"], body) == (200, "application/x-protobuf", b"")
    assert receiver.requests()[0].signal == "metrics"
    assert receiver.metrics() == []


def test_a_failing_receiver_makes_the_grpc_exporter_report_failure_and_keeps_nothing():
    with OtlpReceiver(fail_with=grpc.StatusCode.UNAVAILABLE) as receiver:
        # A short timeout: the exporter gives up when its next backoff would pass it.
        exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True, timeout=0.5)
        provider = TracerProvider(resource=RESOURCE)
        span = provider.get_tracer("t").start_span("lost")
        span.end()

        assert exporter.export([span]) is SpanExportResult.FAILURE
        assert receiver.rejected_requests >= 1
        assert receiver.spans() == []
        exporter.shutdown()


def test_a_failing_receiver_answers_http_with_the_matching_status_and_a_status_body():
    with OtlpReceiver(fail_with=grpc.StatusCode.UNAVAILABLE, retry_after_s=3) as receiver:
        status, headers, body = _post(receiver.http_url("traces"), b"", content_type="application/x-protobuf")

        assert status == 503
        assert headers["Retry-After"] == "3"
        assert status_pb2.Status.FromString(body).code == grpc.StatusCode.UNAVAILABLE.value[0]
        exporter = HttpSpanExporter(endpoint=receiver.http_url("traces"), timeout=0.5)
        span = TracerProvider().get_tracer("t").start_span("lost")
        span.end()
        receiver.set_failure(429)
        assert exporter.export([span]) is SpanExportResult.FAILURE
        assert receiver.spans() == []
        exporter.shutdown()


@pytest.mark.parametrize("transport", ["grpc", "http"])
def test_a_receiver_failing_once_with_retry_after_lets_the_exporters_retry_succeed(transport):
    with OtlpReceiver(fail_with=grpc.StatusCode.UNAVAILABLE, fail_times=1, retry_after_s=0) as receiver:
        if transport == "grpc":
            exporter = GrpcSpanExporter(endpoint=receiver.grpc_endpoint, insecure=True)
        else:
            exporter = HttpSpanExporter(endpoint=receiver.http_url("traces"))
        span = TracerProvider().get_tracer("t").start_span("eventually")
        span.end()

        assert exporter.export([span]) is SpanExportResult.SUCCESS
        assert receiver.rejected_requests == 1
        assert [s.name for s in receiver.spans()] == ["eventually"]
        exporter.shutdown()


def test_waiting_for_spans_that_never_come_raises_timeout_error_naming_what_came(receiver):
    _post(receiver.http_url("traces"), json.dumps(OTLP_JSON_TRACES).encode(), content_type="application/json")

    with pytest.raises(TimeoutError, match="POST /orders"):
        receiver.wait_for_spans(2, timeout=0.05)


def test_wait_for_returns_the_predicates_value(receiver):
    _post(receiver.http_url("traces"), json.dumps(OTLP_JSON_TRACES).encode(), content_type="application/json")

    names = receiver.wait_for(lambda spans: [s.name for s in spans])

    assert names == ["POST /orders"]


def test_clear_forgets_what_was_received(receiver):
    _post(receiver.http_url("traces"), json.dumps(OTLP_JSON_TRACES).encode(), content_type="application/json")

    receiver.clear()

    assert receiver.spans() == []
    assert receiver.requests() == []


def test_stop_is_safe_twice_and_before_start_and_keeps_the_data():
    OtlpReceiver().stop()
    receiver = OtlpReceiver().start()
    _post(receiver.http_url("traces"), json.dumps(OTLP_JSON_TRACES).encode(), content_type="application/json")

    receiver.stop()
    receiver.stop()

    assert len(receiver.spans()) == 1
    with pytest.raises(RuntimeError):
        receiver.start()


def test_endpoints_of_a_receiver_not_started_raise():
    receiver = OtlpReceiver()

    with pytest.raises(RuntimeError):
        _ = receiver.grpc_endpoint
    with pytest.raises(RuntimeError):
        _ = receiver.http_endpoint
