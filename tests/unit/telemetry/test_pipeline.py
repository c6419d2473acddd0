from __future__ import annotations

import threading

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv.attributes.http_attributes import HTTP_ROUTE
from opentelemetry.semconv.attributes.url_attributes import URL_QUERY
from opentelemetry.semconv.metrics.http_metrics import HTTP_SERVER_REQUEST_DURATION

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.processors.redaction import RedactionProcessor
from otel_ebpf.processors.routes import RoutesConfig, RoutesProcessor
from otel_ebpf.telemetry.metrics import HttpMetricsAggregator, SelfMetrics
from otel_ebpf.telemetry.pipeline import TelemetryPipeline
from otel_ebpf.telemetry.spans import SpanBuilder

from ..factories import make_exchange, make_fake_proc

WAIT = 30.0  # generous upper bound for waits; never asserted on


class RecordingMetricExporter(MetricExporter):
    def __init__(self) -> None:
        super().__init__()
        self.exports: list[MetricsData] = []
        self.exported = threading.Event()
        self.shut_down = 0
        self.flushed = 0

    def export(self, metrics_data, timeout_millis=10_000, **kwargs):
        encode_metrics(metrics_data)  # what an OTLP exporter would do
        self.exports.append(metrics_data)
        self.exported.set()
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis=10_000):
        self.flushed += 1
        return True

    def shutdown(self, timeout_millis=30_000, **kwargs):
        self.shut_down += 1


class RaisingSpanExporter(SpanExporter):
    def __init__(self) -> None:
        self.calls = 0

    def export(self, spans):
        self.calls += 1
        raise ConnectionError("collector down")

    def shutdown(self):
        raise RuntimeError("also broken")


class FailingSpanExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.FAILURE


class BatchSizes(SpanExporter):
    def __init__(self) -> None:
        self.sizes: list[int] = []

    def export(self, spans):
        self.sizes.append(len(spans))
        return SpanExportResult.SUCCESS


class DropHealthChecks:
    def process(self, exchange):
        return None if exchange.request.target.startswith("/healthz") else exchange


@pytest.fixture
def parts(tmp_path):
    make_fake_proc(tmp_path, 4242, ["python3", "shop.py"], exe="/usr/bin/python3.11")
    builder = SpanBuilder(host_name="node-1", process_info=ProcessInfoCache(proc_root=str(tmp_path)))
    self_metrics = SelfMetrics()
    aggregator = HttpMetricsAggregator(self_metrics=self_metrics, agent_resource=builder.agent_resource)
    return builder, aggregator, self_metrics


def _pipeline(parts, **kwargs):
    builder, aggregator, self_metrics = parts
    kwargs.setdefault("span_exporters", [InMemorySpanExporter()])
    kwargs.setdefault("metric_exporters", [RecordingMetricExporter()])
    return TelemetryPipeline(span_builder=builder, metrics_aggregator=aggregator, self_metrics=self_metrics, **kwargs)


def test_consumed_exchanges_reach_every_span_exporter_after_a_flush(parts):
    a, b = InMemorySpanExporter(), InMemorySpanExporter()
    pipeline = _pipeline(parts, span_exporters=[a, b])
    pipeline.start()
    for i in range(10):
        pipeline.consume(make_exchange(target=f"/items/{i}"))
    assert pipeline.force_flush(WAIT)
    assert len(a.get_finished_spans()) == 10
    assert len(b.get_finished_spans()) == 10
    assert pipeline.self_metrics.snapshot()["otel_ebpf.exchanges"] == 10
    pipeline.shutdown(WAIT)


def test_a_flush_exports_metrics_too(parts):
    metrics = RecordingMetricExporter()
    pipeline = _pipeline(parts, metric_exporters=[metrics])
    pipeline.start()
    pipeline.consume(make_exchange())
    assert pipeline.force_flush(WAIT)
    names = {m.name for rm in metrics.exports[-1].resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert HTTP_SERVER_REQUEST_DURATION in names
    assert "otel_ebpf.exchanges" in names
    assert metrics.flushed == 1
    pipeline.shutdown(WAIT)


def test_metrics_are_exported_on_the_interval(parts):
    metrics = RecordingMetricExporter()
    pipeline = _pipeline(parts, metric_exporters=[metrics], metric_interval_s=0.01)
    pipeline.start()
    pipeline.consume(make_exchange())
    assert metrics.exported.wait(WAIT)
    pipeline.shutdown(WAIT)


def test_processors_run_in_order_and_none_filters_an_exchange_out(parts):
    spans = InMemorySpanExporter()
    pipeline = _pipeline(
        parts,
        span_exporters=[spans],
        processors=[DropHealthChecks(), RedactionProcessor(), RoutesProcessor(RoutesConfig(patterns=["/users/{id}"]))],
    )
    pipeline.start()
    pipeline.consume(make_exchange(target="/healthz"))
    pipeline.consume(make_exchange(target="/users/7?token=abc"))
    assert pipeline.force_flush(WAIT)
    (span,) = spans.get_finished_spans()
    assert span.name == "GET /users/{id}"
    assert span.attributes[HTTP_ROUTE] == "/users/{id}"
    assert span.attributes[URL_QUERY] == "token=REDACTED"
    assert pipeline.self_metrics.get("otel_ebpf.pipeline.filtered") == 1
    pipeline.shutdown(WAIT)


def test_a_raising_or_failing_exporter_is_counted_and_the_others_still_get_spans(parts):
    good, raising = InMemorySpanExporter(), RaisingSpanExporter()
    pipeline = _pipeline(parts, span_exporters=[raising, FailingSpanExporter(), good])
    pipeline.start()
    pipeline.consume(make_exchange())
    assert pipeline.force_flush(WAIT)
    pipeline.consume(make_exchange())
    assert pipeline.force_flush(WAIT)
    assert len(good.get_finished_spans()) == 2
    sm = pipeline.self_metrics
    assert sm.get("otel_ebpf.export.failed", {"exporter": "RaisingSpanExporter", "signal": "traces"}) == 2
    assert sm.get("otel_ebpf.export.failed", {"exporter": "FailingSpanExporter", "signal": "traces"}) == 2
    assert sm.get("otel_ebpf.export.spans", {"exporter": "InMemorySpanExporter"}) == 2
    assert pipeline.shutdown(WAIT)


def test_an_exchange_that_breaks_a_stage_is_dropped_and_counted(parts):
    class Broken:
        def process(self, exchange):
            if exchange.request.target == "/boom":
                raise ValueError("boom")
            return exchange

    spans = InMemorySpanExporter()
    pipeline = _pipeline(parts, span_exporters=[spans], processors=[Broken()])
    pipeline.start()
    pipeline.consume(make_exchange(target="/boom"))
    pipeline.consume(make_exchange(target="/fine"))
    assert pipeline.force_flush(WAIT)
    assert len(spans.get_finished_spans()) == 1
    assert pipeline.self_metrics.get("otel_ebpf.pipeline.errors") == 1
    pipeline.shutdown(WAIT)


def test_a_full_queue_drops_and_counts(parts):
    spans = InMemorySpanExporter()
    pipeline = _pipeline(parts, span_exporters=[spans], max_queue=2)
    for _ in range(5):
        pipeline.consume(make_exchange())  # not started: nothing drains the queue
    assert pipeline.self_metrics.snapshot()["otel_ebpf.pipeline.dropped"] == 3
    assert pipeline.shutdown(WAIT)
    assert len(spans.get_finished_spans()) == 2
    assert pipeline.self_metrics.get("otel_ebpf.export.spans", {"exporter": "InMemorySpanExporter"}) == 2


def test_shutdown_before_start_drains_on_the_calling_thread_and_is_safe_twice(parts):
    sizes = BatchSizes()
    metrics = RecordingMetricExporter()
    pipeline = _pipeline(parts, span_exporters=[sizes], metric_exporters=[metrics], max_batch=2)
    for _ in range(5):
        pipeline.consume(make_exchange())
    assert pipeline.shutdown(WAIT)
    assert pipeline.shutdown(WAIT)
    assert sizes.sizes == [2, 2, 1]
    assert len(metrics.exports) == 1
    assert metrics.shut_down == 1
    pipeline.start()  # after shutdown: a no-op
    pipeline.consume(make_exchange())
    assert pipeline.self_metrics.snapshot()["otel_ebpf.pipeline.dropped"] == 1


def test_shutdown_exports_the_last_spans_and_metrics_then_shuts_exporters_down(parts):
    sizes = BatchSizes()
    metrics = RecordingMetricExporter()
    pipeline = _pipeline(
        parts, span_exporters=[sizes, RaisingSpanExporter()], metric_exporters=[metrics], schedule_delay_s=3600
    )
    pipeline.start()
    for _ in range(3):
        pipeline.consume(make_exchange())
    assert pipeline.shutdown(WAIT)
    assert sum(sizes.sizes) == 3
    assert len(metrics.exports) == 1
    assert metrics.shut_down == 1
    assert pipeline.shutdown(WAIT)
    assert metrics.shut_down == 1


def test_batches_are_cut_at_max_batch(parts):
    sizes = BatchSizes()
    pipeline = _pipeline(parts, span_exporters=[sizes], max_batch=3, schedule_delay_s=3600)
    pipeline.start()
    for _ in range(7):
        pipeline.consume(make_exchange())
    assert pipeline.force_flush(WAIT)
    assert sum(sizes.sizes) == 7
    assert max(sizes.sizes) <= 3
    pipeline.shutdown(WAIT)


def test_spans_whose_parent_is_not_sampled_are_not_exported_but_are_measured(parts):
    spans = InMemorySpanExporter()
    metrics = RecordingMetricExporter()
    pipeline = _pipeline(parts, span_exporters=[spans], metric_exporters=[metrics])
    pipeline.start()
    unsampled = (("traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"),)
    pipeline.consume(make_exchange(headers=unsampled))
    assert pipeline.force_flush(WAIT)
    assert spans.get_finished_spans() == ()
    assert pipeline.self_metrics.get("otel_ebpf.spans.unsampled") == 1
    points = [
        p
        for rm in metrics.exports[-1].resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == HTTP_SERVER_REQUEST_DURATION
        for p in m.data.data_points
    ]
    assert sum(p.count for p in points) == 1
    pipeline.shutdown(WAIT)


def test_on_exchange_sees_every_exchange_and_its_span_and_may_fail_safely(parts):
    seen = []

    def on_exchange(exchange, span):
        seen.append((exchange.request.target, span.name))
        if len(seen) == 1:
            raise RuntimeError("summary broke")

    pipeline = _pipeline(parts, on_exchange=on_exchange)
    pipeline.start()
    pipeline.consume(make_exchange(target="/a"))
    pipeline.consume(make_exchange(target="/b"))
    assert pipeline.force_flush(WAIT)
    assert seen == [("/a", "GET"), ("/b", "GET")]
    assert pipeline.self_metrics.get("otel_ebpf.pipeline.callback_errors") == 1
    pipeline.shutdown(WAIT)


def test_consume_is_safe_from_many_threads(parts):
    spans = InMemorySpanExporter()
    pipeline = _pipeline(parts, span_exporters=[spans], max_queue=100_000)
    pipeline.start()

    def produce():
        for _ in range(500):
            pipeline.consume(make_exchange())

    threads = [threading.Thread(target=produce) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert pipeline.force_flush(WAIT)
    assert len(spans.get_finished_spans()) == 2000
    assert pipeline.self_metrics.snapshot()["otel_ebpf.exchanges"] == 2000
    pipeline.shutdown(WAIT)


def test_flush_and_shutdown_after_shutdown_return_at_once(parts):
    pipeline = _pipeline(parts)
    pipeline.start()
    assert pipeline.shutdown(WAIT)
    assert pipeline.force_flush(WAIT)
