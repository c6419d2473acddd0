from __future__ import annotations

import threading

import pytest
from opentelemetry.exporter.otlp.proto.common._internal.metrics_encoder import encode_metrics
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE
from opentelemetry.semconv.attributes.service_attributes import SERVICE_NAME
from opentelemetry.semconv.metrics.http_metrics import (
    HTTP_CLIENT_REQUEST_DURATION,
    HTTP_SERVER_REQUEST_DURATION,
)

from otel_ebpf.records import Role
from otel_ebpf.telemetry.metrics import (
    DEFAULT_DURATION_BUCKETS,
    OVERFLOW_ATTRIBUTE,
    HttpMetricsAggregator,
    SelfMetrics,
)

from ..factories import make_exchange

NOW = 1_800_000_000_000_000_000
RES_A = Resource({SERVICE_NAME: "a", "process.pid": 1})
RES_B = Resource({SERVICE_NAME: "b", "process.pid": 2})
AGENT = Resource({SERVICE_NAME: "otel-ebpf"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _ms(ms, **kw):
    return make_exchange(duration_ns=int(ms * 1_000_000), **kw)


def _metrics(data: MetricsData, resource: Resource):
    for rm in data.resource_metrics:
        if rm.resource == resource:
            return {m.name: m for sm in rm.scope_metrics for m in sm.metrics}
    raise AssertionError(f"no ResourceMetrics for {resource.attributes}")


def _points(data, resource, name) -> list[HistogramDataPoint]:
    return list(_metrics(data, resource)[name].data.data_points)


def test_server_and_client_durations_go_to_their_semconv_histograms():
    agg = HttpMetricsAggregator()
    agg.record(_ms(20), RES_A)
    agg.record(_ms(20, role=Role.CLIENT), RES_A)
    metrics = _metrics(agg.collect(NOW), RES_A)
    assert set(metrics) == {HTTP_SERVER_REQUEST_DURATION, HTTP_CLIENT_REQUEST_DURATION}
    server = metrics[HTTP_SERVER_REQUEST_DURATION]
    assert server.unit == "s"
    assert server.description == "Duration of HTTP server requests."
    assert metrics[HTTP_CLIENT_REQUEST_DURATION].description == "Duration of HTTP client requests."
    assert isinstance(server.data, Histogram)
    assert server.data.aggregation_temporality is AggregationTemporality.CUMULATIVE


def test_a_histogram_point_counts_sums_and_buckets_durations():
    agg = HttpMetricsAggregator()
    for ms in (1, 5, 20, 20, 3000, 60000):
        agg.record(_ms(ms), RES_A)
    (point,) = _points(agg.collect(NOW), RES_A, HTTP_SERVER_REQUEST_DURATION)
    assert point.count == 6
    assert point.sum == pytest.approx(63.046)
    assert point.min == pytest.approx(0.001)
    assert point.max == pytest.approx(60.0)
    assert tuple(point.explicit_bounds) == DEFAULT_DURATION_BUCKETS
    expected = [0] * 15
    expected[0] = 2  # 1 ms and 5 ms: bounds are inclusive upper limits
    expected[2] = 2  # 20 ms in (0.01, 0.025]
    expected[11] = 1  # 3 s in (2.5, 5]
    expected[14] = 1  # 60 s past the last bound
    assert list(point.bucket_counts) == expected
    assert point.attributes[HTTP_REQUEST_METHOD] == "GET"
    assert point.time_unix_nano == NOW


def test_points_are_cumulative_with_a_stable_start_time():
    agg = HttpMetricsAggregator()
    agg.record(_ms(10), RES_A)
    (first,) = _points(agg.collect(NOW), RES_A, HTTP_SERVER_REQUEST_DURATION)
    agg.record(_ms(10), RES_A)
    (second,) = _points(agg.collect(NOW + 10), RES_A, HTTP_SERVER_REQUEST_DURATION)
    assert (first.count, second.count) == (1, 2)
    assert first.start_time_unix_nano == second.start_time_unix_nano <= NOW
    assert second.time_unix_nano == NOW + 10


def test_series_are_split_by_attributes():
    agg = HttpMetricsAggregator()
    agg.record(_ms(1, status=200), RES_A)
    agg.record(_ms(1, status=500), RES_A)
    agg.record(_ms(1, status=500), RES_A)
    points = _points(agg.collect(NOW), RES_A, HTTP_SERVER_REQUEST_DURATION)
    assert sorted((p.attributes[HTTP_RESPONSE_STATUS_CODE], p.count) for p in points) == [(200, 1), (500, 2)]
    assert agg.series_count == 2


def test_given_attributes_are_used_instead_of_computing_them():
    agg = HttpMetricsAggregator()
    agg.record(_ms(1), RES_A, attributes={"x": 1})
    (point,) = _points(agg.collect(NOW), RES_A, HTTP_SERVER_REQUEST_DURATION)
    assert point.attributes == {"x": 1}


def test_each_resource_gets_one_resource_metrics_and_equal_resources_share_it():
    agg = HttpMetricsAggregator()
    agg.record(_ms(1), RES_A)
    agg.record(_ms(1), RES_B)
    agg.record(_ms(1), Resource({SERVICE_NAME: "a", "process.pid": 1}))  # equal to RES_A, another object
    data = agg.collect(NOW)
    assert len(data.resource_metrics) == 2
    (point,) = _points(data, RES_A, HTTP_SERVER_REQUEST_DURATION)
    assert point.count == 2


def test_unknown_roles_are_not_recorded_but_counted():
    self_metrics = SelfMetrics()
    agg = HttpMetricsAggregator(self_metrics=self_metrics)
    agg.record(_ms(1, role=Role.UNKNOWN), RES_A)
    assert agg.collect(NOW).resource_metrics == []
    assert self_metrics.get("otel_ebpf.metrics.unknown_role") == 1


def test_past_the_series_cap_measurements_go_to_the_overflow_series():
    self_metrics = SelfMetrics()
    agg = HttpMetricsAggregator(max_series=2, self_metrics=self_metrics)
    for status in (200, 201, 202, 203):
        agg.record(_ms(1, status=status), RES_A)
    points = _points(agg.collect(NOW), RES_A, HTTP_SERVER_REQUEST_DURATION)
    overflow = [p for p in points if p.attributes.get(OVERFLOW_ATTRIBUTE)]
    assert len(points) == 3
    assert overflow[0].attributes == {OVERFLOW_ATTRIBUTE: True}
    assert overflow[0].count == 2
    assert self_metrics.get("otel_ebpf.metrics.overflow") == 2
    assert agg.overflowed == 2


def test_without_overflow_series_measurements_past_the_cap_are_dropped_and_counted():
    self_metrics = SelfMetrics()
    agg = HttpMetricsAggregator(max_series=1, self_metrics=self_metrics, overflow_series=False)
    agg.record(_ms(1, status=200), RES_A)
    agg.record(_ms(1, status=500), RES_A)
    agg.record(_ms(1, status=200), RES_B)  # a new resource past the cap: dropped too
    data = agg.collect(NOW)
    assert len(data.resource_metrics) == 1
    assert [p.count for p in _points(data, RES_A, HTTP_SERVER_REQUEST_DURATION)] == [1]
    assert self_metrics.get("otel_ebpf.metrics.overflow") == 2


def test_idle_series_expire_and_come_back_from_zero():
    clock = FakeClock()
    self_metrics = SelfMetrics()
    agg = HttpMetricsAggregator(series_ttl_s=60, clock=clock, self_metrics=self_metrics)
    agg.record(_ms(1), RES_A)
    agg.record(_ms(1), RES_B)
    clock.now += 30
    agg.record(_ms(1), RES_B)
    clock.now += 31
    data = agg.collect(NOW)
    assert [rm.resource for rm in data.resource_metrics] == [RES_B]
    assert agg.series_count == 1
    assert self_metrics.get("otel_ebpf.metrics.series_expired") == 1
    agg.record(_ms(1), RES_A)
    (point,) = _points(agg.collect(NOW), RES_A, HTTP_SERVER_REQUEST_DURATION)
    assert point.count == 1


def test_self_metrics_are_exported_as_monotonic_sums_under_the_agent_resource():
    self_metrics = SelfMetrics()
    self_metrics.add("otel_ebpf.ringbuf.lost", 3)
    self_metrics.add("otel_ebpf.export.failed", 1, {"exporter": "X"})
    self_metrics.add("otel_ebpf.export.failed", 2, {"exporter": "Y"})
    self_metrics.register(lambda: {"otel_ebpf.http1.parse_errors": 7})
    self_metrics.describe("otel_ebpf.ringbuf.lost", description="Ring-buffer records lost.", unit="{record}")
    agg = HttpMetricsAggregator(self_metrics=self_metrics, agent_resource=AGENT)
    agg.record(_ms(1), RES_A)
    data = agg.collect(NOW)
    assert len(data.resource_metrics) == 2
    own = _metrics(data, AGENT)
    lost = own["otel_ebpf.ringbuf.lost"]
    assert isinstance(lost.data, Sum)
    assert lost.data.is_monotonic
    assert lost.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    assert (lost.description, lost.unit) == ("Ring-buffer records lost.", "{record}")
    assert lost.data.data_points[0].value == 3
    assert lost.data.data_points[0].time_unix_nano == NOW
    failed = {p.attributes["exporter"]: p.value for p in own["otel_ebpf.export.failed"].data.data_points}
    assert failed == {"X": 1, "Y": 2}
    assert own["otel_ebpf.http1.parse_errors"].data.data_points[0].value == 7


def test_the_real_otlp_encoder_accepts_what_collect_produces():
    self_metrics = SelfMetrics()
    self_metrics.add("otel_ebpf.exchanges", 5)
    agg = HttpMetricsAggregator(self_metrics=self_metrics, agent_resource=AGENT)
    agg.record(_ms(20), RES_A)
    agg.record(_ms(20, role=Role.CLIENT, status=None), RES_B)
    request = encode_metrics(agg.collect(NOW))
    assert len(request.resource_metrics) == 3
    names = {}
    for rm in request.resource_metrics:
        service = {kv.key: kv.value.string_value for kv in rm.resource.attributes}[SERVICE_NAME]
        for metric in rm.scope_metrics[0].metrics:
            names[(service, metric.name)] = metric
        assert rm.scope_metrics[0].scope.name == "otel_ebpf"
    server = names[("a", HTTP_SERVER_REQUEST_DURATION)].histogram
    assert server.aggregation_temporality == 2  # AGGREGATION_TEMPORALITY_CUMULATIVE
    assert server.data_points[0].count == 1
    assert list(server.data_points[0].bucket_counts)[2] == 1
    assert list(server.data_points[0].explicit_bounds) == list(DEFAULT_DURATION_BUCKETS)
    client = names[("b", HTTP_CLIENT_REQUEST_DURATION)].histogram.data_points[0]
    assert {kv.key: kv.value.string_value for kv in client.attributes}["error.type"] == "response_missing"
    exchanges = names[("otel-ebpf", "otel_ebpf.exchanges")].sum
    assert exchanges.is_monotonic and exchanges.data_points[0].as_int == 5


def test_self_metrics_counters_are_exact_under_concurrent_adds():
    self_metrics = SelfMetrics()

    def add():
        for _ in range(5000):
            self_metrics.add("otel_ebpf.test.hits")
            self_metrics.add("otel_ebpf.test.bytes", 2, {"dir": "in"})

    threads = [threading.Thread(target=add) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert self_metrics.get("otel_ebpf.test.hits") == 40000
    assert self_metrics.get("otel_ebpf.test.bytes", {"dir": "in"}) == 80000


def test_snapshot_totals_each_name_and_includes_callbacks():
    self_metrics = SelfMetrics()
    self_metrics.add("a", 1, {"k": "x"})
    self_metrics.add("a", 2, {"k": "y"})
    self_metrics.register(lambda: {"b": 5})
    assert self_metrics.snapshot() == {"a": 3, "b": 5}


def test_a_failing_callback_is_counted_and_does_not_break_collection():
    self_metrics = SelfMetrics()

    def broken():
        raise RuntimeError("boom")

    self_metrics.register(broken)
    self_metrics.add("a")
    assert self_metrics.snapshot()["a"] == 1
    assert self_metrics.snapshot()["otel_ebpf.self_metrics.callback_errors"] == 2


def test_self_metrics_series_are_capped():
    self_metrics = SelfMetrics(max_series=2)
    for i in range(5):
        self_metrics.add("n", 1, {"i": i})
    snap = self_metrics.snapshot()
    assert snap["n"] == 2
    assert snap["otel_ebpf.self_metrics.dropped"] == 3


def test_bad_boundaries_are_rejected():
    with pytest.raises(ValueError):
        HttpMetricsAggregator(boundaries=[1.0, 0.5])


def test_a_name_both_added_and_reported_by_a_callback_is_one_point():
    self_metrics = SelfMetrics()
    self_metrics.add("otel_ebpf.x", 2)
    self_metrics.register(lambda: {"otel_ebpf.x": 3})
    (metric,) = self_metrics.to_metrics(NOW)
    assert [p.value for p in metric.data.data_points] == [5]
