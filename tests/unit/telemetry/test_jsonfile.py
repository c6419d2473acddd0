"""OTLP/JSON line exporters: lines parse back to the OTLP request, ids are hex, files rotate."""

from __future__ import annotations

import base64
import json
import re
import threading

import pytest
from google.protobuf import json_format
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import LogRecordExportResult, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import Counter, MeterProvider
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Metric,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExportResult
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags

from otel_ebpf.telemetry.jsonfile import (
    OtlpJsonFileLogExporter,
    OtlpJsonFileMetricExporter,
    OtlpJsonFileSpanExporter,
    decode_otlp_json,
    encode_otlp_json,
)

SCOPE = InstrumentationScope("otel-ebpf", "0.1.0")
ID_KEYS = {"traceId", "spanId", "parentSpanId"}


def _span(name, *, resource, trace_id=0x5B8EFFF798038103D269B633813FC60C, span_id=0xEEE19B7EC3C1B174, parent=None):
    return ReadableSpan(
        name=name,
        context=SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)),
        parent=parent,
        resource=resource,
        attributes={"http.request.method": "GET", "http.response.status_code": 200},
        kind=SpanKind.SERVER,
        start_time=1_700_000_000_000_000_000,
        end_time=1_700_000_000_250_000_000,
        instrumentation_scope=SCOPE,
    )


def _process(pid, name):
    return Resource({"service.name": name, "process.pid": pid})


def _parse_line(line, message_class):
    """Parse one OTLP/JSON line independently of the module under test: hex ids back to base64."""

    def unhex(node):
        if isinstance(node, dict):
            return {
                key: base64.b64encode(bytes.fromhex(value)).decode() if key in ID_KEYS else unhex(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [unhex(item) for item in node]
        return node

    return json_format.ParseDict(unhex(json.loads(line)), message_class())


def _id_values(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ID_KEYS:
                yield key, value
            else:
                yield from _id_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _id_values(item)


def _lines(path):
    return path.read_text().splitlines()


@pytest.fixture
def exporters():
    """Exporters made in a test, shut down (closing their files) after it."""
    made = []

    def make(cls, *args, **kwargs):
        made.append(cls(*args, **kwargs))
        return made[-1]

    yield make
    for exporter in made:
        exporter.shutdown()


def test_a_batch_of_spans_becomes_one_line_that_parses_back_to_the_same_request(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    exporter = exporters(OtlpJsonFileSpanExporter, path)
    parent = SpanContext(0x5B8EFFF798038103D269B633813FC60C, 0x1111111111111111, is_remote=True)
    spans = [
        _span("GET /a", resource=_process(1, "a"), parent=parent),
        _span("GET /b", resource=_process(1, "a"), span_id=0x2222222222222222),
    ]

    assert exporter.export(spans) is SpanExportResult.SUCCESS

    (line,) = _lines(path)
    assert _parse_line(line, ExportTraceServiceRequest) == encode_spans(spans)


def test_ids_are_hex_strings_enums_integers_and_names_lower_camel_case(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    exporter = exporters(OtlpJsonFileSpanExporter, path)
    linked = SpanContext(0xABCDEF0123456789ABCDEF0123456789, 0x0123456789ABCDEF, is_remote=True)
    span = ReadableSpan(
        name="GET",
        context=SpanContext(0x5B8EFFF798038103D269B633813FC60C, 0xEEE19B7EC3C1B174, is_remote=False),
        parent=SpanContext(0x5B8EFFF798038103D269B633813FC60C, 0x00000000000000FF, is_remote=False),
        resource=_process(7, "web"),
        kind=SpanKind.CLIENT,
        links=[Link(linked)],
        start_time=1,
        end_time=2,
    )

    exporter.export([span])

    document = json.loads(_lines(path)[0])
    written = document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert written["traceId"] == "5b8efff798038103d269b633813fc60c"
    assert written["spanId"] == "eee19b7ec3c1b174"
    assert written["parentSpanId"] == "00000000000000ff"
    assert written["links"][0] == {
        "traceId": "abcdef0123456789abcdef0123456789",
        "spanId": "0123456789abcdef",
        "flags": 768,
    }
    assert written["kind"] == 3  # SPAN_KIND_CLIENT, as an integer
    assert written["startTimeUnixNano"] == "1"  # int64 as a decimal string
    assert "start_time_unix_nano" not in written
    for key, value in _id_values(document):
        assert re.fullmatch(r"[0-9a-f]{32}" if key == "traceId" else r"[0-9a-f]{16}", value), (key, value)


def test_spans_of_different_processes_are_grouped_under_one_resource_each(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    exporter = exporters(OtlpJsonFileSpanExporter, path)
    spans = [
        _span("a1", resource=_process(1, "a")),
        _span("b1", resource=_process(2, "b")),
        _span("a2", resource=_process(1, "a")),  # an equal Resource, but another object
    ]

    exporter.export(spans)

    request = _parse_line(_lines(path)[0], ExportTraceServiceRequest)
    by_pid = {
        next(kv.value.int_value for kv in rs.resource.attributes if kv.key == "process.pid"): [
            span.name for scope_spans in rs.scope_spans for span in scope_spans.spans
        ]
        for rs in request.resource_spans
    }
    assert by_pid == {1: ["a1", "a2"], 2: ["b1"]}
    assert len(request.resource_spans) == 2


def test_each_export_call_appends_one_line_and_empty_batches_write_nothing(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    exporter = exporters(OtlpJsonFileSpanExporter, path)

    exporter.export([_span("one", resource=_process(1, "a"))])
    assert exporter.export([]) is SpanExportResult.SUCCESS
    exporter.export([_span("two", resource=_process(1, "a"))])

    names = [
        _parse_line(line, ExportTraceServiceRequest).resource_spans[0].scope_spans[0].spans[0].name
        for line in _lines(path)
    ]
    assert names == ["one", "two"]


def test_the_file_rotates_at_max_bytes_keeping_only_the_newest_backups(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    line_size = len(encode_otlp_json(encode_spans([_span("s00", resource=_process(1, "a"))]))) + 1
    exporter = exporters(OtlpJsonFileSpanExporter, path, max_bytes=2 * line_size, backups=2)

    for index in range(7):  # 7 lines of equal size, two per file: files hold 1 | 2 | 2 | 2
        assert exporter.export([_span(f"s{index:02}", resource=_process(1, "a"))]) is SpanExportResult.SUCCESS
    exporter.shutdown()

    def names(file):
        return [
            _parse_line(line, ExportTraceServiceRequest).resource_spans[0].scope_spans[0].spans[0].name
            for line in _lines(file)
        ]

    assert names(path) == ["s06"]
    assert names(tmp_path / "traces.jsonl.1") == ["s04", "s05"]
    assert names(tmp_path / "traces.jsonl.2") == ["s02", "s03"]
    assert not (tmp_path / "traces.jsonl.3").exists()
    assert all(f.stat().st_size <= 2 * line_size for f in tmp_path.iterdir())


def test_with_no_backups_rotation_starts_the_file_over(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    exporter = exporters(OtlpJsonFileSpanExporter, path, max_bytes=10, backups=0)

    exporter.export([_span("first", resource=_process(1, "a"))])
    exporter.export([_span("second", resource=_process(1, "a"))])

    assert [p.name for p in tmp_path.iterdir()] == ["traces.jsonl"]
    (line,) = _lines(path)  # a line larger than max_bytes still makes a whole file of its own
    assert "second" in line


def test_an_existing_file_is_appended_to_and_its_size_counts_toward_rotation(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    path.write_text("x" * 100 + "\n")
    exporter = exporters(OtlpJsonFileSpanExporter, path, max_bytes=150, backups=1)

    exporter.export([_span("new", resource=_process(1, "a"))])

    assert (tmp_path / "traces.jsonl.1").read_text() == "x" * 100 + "\n"
    assert "new" in path.read_text()


def test_parent_directories_are_created(tmp_path, exporters):
    path = tmp_path / "deep" / "er" / "traces.jsonl"

    exporters(OtlpJsonFileSpanExporter, path).export([_span("s", resource=_process(1, "a"))])

    assert len(_lines(path)) == 1


def test_a_write_error_returns_failure_and_is_counted_without_raising(tmp_path, exporters):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    exporter = exporters(OtlpJsonFileSpanExporter, blocker / "traces.jsonl")

    assert exporter.export([_span("s", resource=_process(1, "a"))]) is SpanExportResult.FAILURE
    assert exporter.export([_span("s", resource=_process(1, "a"))]) is SpanExportResult.FAILURE

    assert exporter.failed_exports == 2
    assert isinstance(exporter.last_error, OSError)


def test_shutdown_is_idempotent_and_later_exports_fail(tmp_path, exporters):
    exporter = exporters(OtlpJsonFileSpanExporter, tmp_path / "traces.jsonl")
    exporter.export([_span("s", resource=_process(1, "a"))])

    exporter.shutdown()
    exporter.shutdown()

    assert exporter.export([_span("late", resource=_process(1, "a"))]) is SpanExportResult.FAILURE
    assert exporter.failed_exports == 1
    assert len(_lines(tmp_path / "traces.jsonl")) == 1


def test_exports_from_many_threads_write_whole_lines(tmp_path, exporters):
    path = tmp_path / "traces.jsonl"
    exporter = exporters(OtlpJsonFileSpanExporter, path, max_bytes=20_000, backups=1000)

    def work(worker):
        for index in range(25):
            exporter.export([_span(f"w{worker}-{index}", resource=_process(worker, "w"))])

    threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    exporter.shutdown()

    names = set()
    for file in tmp_path.iterdir():
        for line in _lines(file):
            names.add(_parse_line(line, ExportTraceServiceRequest).resource_spans[0].scope_spans[0].spans[0].name)
    assert names == {f"w{worker}-{index}" for worker in range(8) for index in range(25)}


def test_a_span_exporter_works_behind_a_tracer_provider(tmp_path):
    path = tmp_path / "traces.jsonl"
    provider = TracerProvider(resource=_process(9, "svc"))
    provider.add_span_processor(SimpleSpanProcessor(OtlpJsonFileSpanExporter(path)))

    with provider.get_tracer("t").start_as_current_span("outer"):
        with provider.get_tracer("t").start_as_current_span("inner"):
            pass
    provider.shutdown()

    inner, outer = (_parse_line(line, ExportTraceServiceRequest) for line in _lines(path))
    inner_span = inner.resource_spans[0].scope_spans[0].spans[0]
    outer_span = outer.resource_spans[0].scope_spans[0].spans[0]
    assert inner_span.parent_span_id == outer_span.span_id


def _sum(value, resource):
    point = NumberDataPoint(attributes={"k": "v"}, start_time_unix_nano=1, time_unix_nano=2, value=value)
    metric = Metric("requests", "served", "{request}", Sum([point], AggregationTemporality.CUMULATIVE, True))
    return ResourceMetrics(resource, [ScopeMetrics(SCOPE, [metric], "")], "")


def _counter_values_over_two_collections(path, exporter):
    """Add 5, export, add 2, export; return each line's (temporality, value) as written in JSON."""
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    provider = MeterProvider(resource=_process(3, "m"), metric_readers=[reader])
    counter = provider.get_meter("otel-ebpf").create_counter("requests")
    counter.add(5, {"route": "/a"})
    reader.force_flush()
    counter.add(2, {"route": "/a"})
    reader.force_flush()
    provider.shutdown()
    out = []
    for line in _lines(path)[:2]:
        request = _parse_line(line, ExportMetricsServiceRequest)
        (metric,) = request.resource_metrics[0].scope_metrics[0].metrics
        assert metric.name == "requests"
        written = json.loads(line)["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][0]["sum"]
        out.append((written["aggregationTemporality"], metric.sum.data_points[0].as_int))
    return out


def test_metrics_are_written_cumulative_by_default_and_parse_back(tmp_path, exporters):
    path = tmp_path / "metrics.jsonl"
    exporter = exporters(OtlpJsonFileMetricExporter, path)

    assert _counter_values_over_two_collections(path, exporter) == [(2, 5), (2, 7)]  # 2: cumulative


def test_metric_temporality_is_configurable_per_instrument(tmp_path, exporters):
    path = tmp_path / "metrics.jsonl"
    exporter = exporters(
        OtlpJsonFileMetricExporter, path, preferred_temporality={Counter: AggregationTemporality.DELTA}
    )

    assert _counter_values_over_two_collections(path, exporter) == [(1, 5), (1, 2)]  # 1: delta


def test_metrics_of_two_entries_with_equal_resources_are_both_kept(tmp_path, exporters):
    path = tmp_path / "metrics.jsonl"
    exporter = exporters(OtlpJsonFileMetricExporter, path)
    data = MetricsData([_sum(1, _process(1, "a")), _sum(2, _process(1, "a"))])

    assert exporter.export(data) is MetricExportResult.SUCCESS

    request = _parse_line(_lines(path)[0], ExportMetricsServiceRequest)
    values = [rm.scope_metrics[0].metrics[0].sum.data_points[0].as_int for rm in request.resource_metrics]
    assert values == [1, 2]


def test_log_records_are_written_with_hex_ids(tmp_path):
    path = tmp_path / "logs.jsonl"
    provider = LoggerProvider(resource=_process(4, "l"))
    provider.add_log_record_processor(SimpleLogRecordProcessor(OtlpJsonFileLogExporter(path)))
    tracer = TracerProvider().get_tracer("t")
    with tracer.start_as_current_span("s") as span:
        provider.get_logger("otel-ebpf").emit(body="ring buffer full", severity_number=SeverityNumber.WARN)
    provider.shutdown()

    (line,) = _lines(path)
    record = json.loads(line)["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert record["traceId"] == f"{span.get_span_context().trace_id:032x}"
    assert record["spanId"] == f"{span.get_span_context().span_id:016x}"
    assert record["severityNumber"] == SeverityNumber.WARN.value
    request = _parse_line(line, ExportLogsServiceRequest)
    assert request.resource_logs[0].scope_logs[0].log_records[0].body.string_value == "ring buffer full"


def test_a_log_exporter_write_error_returns_failure(tmp_path, exporters):
    blocker = tmp_path / "file"
    blocker.write_text("")
    exporter = exporters(OtlpJsonFileLogExporter, blocker / "logs.jsonl")
    provider = LoggerProvider()
    logger = provider.get_logger("x")
    captured = []
    provider.add_log_record_processor(SimpleLogRecordProcessor(_Capture(captured)))
    logger.emit(body="x")

    assert exporter.export(captured) is LogRecordExportResult.FAILURE
    assert exporter.failed_exports == 1


class _Capture:
    def __init__(self, into):
        self._into = into

    def export(self, batch):
        self._into.extend(batch)
        return LogRecordExportResult.SUCCESS

    def shutdown(self):
        pass

    def force_flush(self, timeout_millis=30_000):
        return True


def test_decode_reads_back_what_encode_wrote():
    request = encode_spans([_span("s", resource=_process(1, "a"))])

    assert decode_otlp_json(encode_otlp_json(request), ExportTraceServiceRequest()) == request


def test_decode_refuses_base64_ids():
    document = json.loads(encode_otlp_json(encode_spans([_span("s", resource=_process(1, "a"))])))
    document["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["spanId"] = "7uGbfsPBsXQ="

    with pytest.raises(ValueError, match="hex"):
        decode_otlp_json(document, ExportTraceServiceRequest())
