"""Flow telemetry: TCP flow records become otel_ebpf.tcp.* metrics and flow log records joined to
the trace ids of the spans seen on the same connection."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.records import FlowState, Role, TcpFlow
from otel_ebpf.telemetry.flows import FlowTelemetry, flow_attributes, server_side
from otel_ebpf.telemetry.jsonfile import FlowJsonLinesExporter
from otel_ebpf.telemetry.metrics import HttpMetricsAggregator, SelfMetrics
from otel_ebpf.telemetry.pipeline import TelemetryPipeline
from otel_ebpf.telemetry.spans import SpanBuilder

from ..factories import make_exchange, make_fake_proc
from .test_pipeline import RecordingMetricExporter

SOCK = 0xFFFF0000  # make_exchange's connection
T0 = 1_700_000_000_000_000_000


def flow(**kw) -> TcpFlow:
    base = dict(flow_id=SOCK, state=FlowState.CLOSED, family=4, local_address="10.0.0.1", local_port=8080,
                remote_address="10.0.0.2", remote_port=54321, role=Role.SERVER, pid=4242, comm="python3",
                cgroup_id=7, start_ns=T0, end_ns=T0 + 2_000_000_000, bytes_sent=5000, bytes_received=300,
                segments_sent=10, segments_received=8, retransmits=2, resets_sent=0, resets_received=1,
                srtt_us=1500, min_rtt_us=900, interval_bytes_sent=5000, interval_bytes_received=300,
                interval_retransmits=2)
    base.update(kw)
    return TcpFlow(**base)


@pytest.fixture
def parts(tmp_path):
    make_fake_proc(tmp_path, 4242, ["python3", "shop.py"], exe="/usr/bin/python3.11")
    builder = SpanBuilder(host_name="node-1", process_info=ProcessInfoCache(proc_root=str(tmp_path)))
    self_metrics = SelfMetrics()
    return builder, HttpMetricsAggregator(self_metrics=self_metrics), self_metrics


def _metrics(exporter) -> dict[str, list]:
    out: dict[str, list] = {}
    for rm in exporter.exports[-1].resource_metrics:
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                out.setdefault(m.name, []).extend(m.data.data_points)
    return out


def test_server_side_never_picks_an_ephemeral_port():
    assert server_side(flow()) == ("10.0.0.1", 8080)
    assert server_side(flow(role=Role.CLIENT, local_port=40000, remote_port=443)) == ("10.0.0.2", 443)
    assert server_side(flow(role=Role.UNKNOWN, local_port=51000, remote_port=5432)) == ("10.0.0.2", 5432)
    attrs = flow_attributes(flow())
    assert attrs["server.port"] == 8080 and 54321 not in attrs.values()


def test_flows_become_metrics_and_log_records_joined_to_the_connections_trace_ids(parts, tmp_path):
    builder, aggregator, self_metrics = parts
    spans, logs, metrics = InMemorySpanExporter(), InMemoryLogRecordExporter(), RecordingMetricExporter()
    jsonl = FlowJsonLinesExporter(tmp_path / "flows.jsonl")
    pipeline = TelemetryPipeline(span_builder=builder, metrics_aggregator=aggregator, self_metrics=self_metrics,
                                 span_exporters=[spans], metric_exporters=[metrics], log_exporters=[logs, jsonl],
                                 flow_telemetry=FlowTelemetry(), flow_log_delay_s=0.0)
    pipeline.consume(make_exchange(target="/a"))
    pipeline.consume(make_exchange(target="/b"))
    pipeline.consume_flow(flow(state=FlowState.ACTIVE, end_ns=T0 + 10**9, bytes_sent=3000, interval_bytes_sent=3000,
                               interval_bytes_received=300, interval_retransmits=1, retransmits=1))
    pipeline.consume(make_exchange(target="/c"))
    pipeline.consume_flow(flow(interval_bytes_sent=2000, interval_bytes_received=0, interval_retransmits=1))
    pipeline.consume_flow(flow(flow_id=99, state=FlowState.FAILED, role=Role.CLIENT, local_port=40000,
                               remote_port=9, failure="refused", interval_bytes_sent=0, interval_bytes_received=0,
                               interval_retransmits=0, srtt_us=0, resets_received=1))
    pipeline.shutdown()

    trace_ids = {f"{s.context.trace_id:032x}": s.attributes["url.path"] for s in spans.get_finished_spans()}
    records = [r.log_record for r in logs.get_finished_logs()]
    assert [r.attributes["otel_ebpf.flow.state"] for r in records] == ["active", "closed", "failed"]
    first, second, failed = records
    assert sorted(trace_ids[t] for t in first.attributes["otel_ebpf.flow.trace_ids"]) == ["/a", "/b"]
    assert [trace_ids[t] for t in second.attributes["otel_ebpf.flow.trace_ids"]] == ["/c"]
    assert second.attributes["otel_ebpf.tcp.bytes.sent"] == 5000 and second.attributes["otel_ebpf.tcp.rtt"] == 0.0015
    assert failed.attributes["error.type"] == "refused" and "otel_ebpf.flow.trace_ids" not in failed.attributes
    assert second.event_name == "otel_ebpf.tcp.flow"

    m = _metrics(metrics)
    sent = [p for p in m["otel_ebpf.tcp.bytes"] if p.attributes["network.io.direction"] == "transmit"]
    assert sum(p.value for p in sent) == 5000  # 3000 then 2000: intervals add up to the total once
    assert sum(p.value for p in m["otel_ebpf.tcp.retransmits"]) == 2
    assert sum(p.value for p in m["otel_ebpf.tcp.connections.opened"]) == 1
    assert sum(p.value for p in m["otel_ebpf.tcp.connections.closed"]) == 1
    (failed_point,) = m["otel_ebpf.tcp.connections.failed"]
    assert failed_point.value == 1 and failed_point.attributes["error.type"] == "refused"
    assert sum(p.count for p in m["otel_ebpf.tcp.rtt"]) == 2
    assert sum(p.count for p in m["otel_ebpf.tcp.connection.duration"]) == 1
    resets = m["otel_ebpf.tcp.resets"]
    assert {p.attributes["network.io.direction"] for p in resets} == {"receive"}
    assert sum(p.value for p in resets) == 2  # one per flow, the closed flow's counted once over two records

    lines = [json.loads(line) for line in (tmp_path / "flows.jsonl").read_text().splitlines()]
    assert [line["otel_ebpf.flow.state"] for line in lines] == ["active", "closed", "failed"]
    assert lines[1]["service.name"] == "shop" and lines[1]["network.peer.address"] == "10.0.0.2"


def test_metric_series_are_bounded_with_an_overflow_series():
    flows = FlowTelemetry(max_series=3)
    builder = SpanBuilder(host_name="node-1", process_info=ProcessInfoCache(proc_root="/nonexistent"))
    resource = builder.resource_for(1)
    for port in range(1, 200):
        flows.record(replace(flow(), role=Role.CLIENT, remote_address=f"10.1.0.{port}", remote_port=443,
                             local_port=50000), resource)
    collected = flows.collect()
    points = [p for _, metrics in collected for m in metrics for p in m.data.data_points]
    assert len(points) <= 3 + 8  # the bound, plus one overflow series per metric
    assert flows.overflowed > 0
    assert any(p.attributes.get("otel_ebpf.metrics.overflow") for p in points)


def test_trace_ids_per_connection_are_taken_once_per_record_without_duplicates():
    flows = FlowTelemetry()
    assert flows.take_trace_ids(1, final=False) == []
    flows.note_span(1, 0xA)
    flows.note_span(1, 0xA)  # a second span of the same trace on the connection
    flows.note_span(2, 0xB)
    assert flows.take_trace_ids(1, final=False) == [0xA]
    assert flows.take_trace_ids(1, final=False) == []  # taken: the next interim record starts afresh
    flows.note_span(1, 0xC)
    flows.note_span(1, 0xD)
    flows.note_span(1, 0xC)
    assert flows.take_trace_ids(1, final=True) == [0xC, 0xD]
    assert flows.take_trace_ids(2, final=True) == [0xB]


def test_trace_ids_per_record_and_remembered_connections_are_bounded(monkeypatch):
    import otel_ebpf.telemetry.flows as flows_module

    monkeypatch.setattr(flows_module, "_MAX_JOINED_FLOWS", 64)
    flows = FlowTelemetry()
    for trace_id in range(100):
        flows.note_span(1, trace_id)
    assert flows.take_trace_ids(1, final=True) == list(range(flows_module._MAX_TRACE_IDS))
    for sock in range(1000):
        flows.note_span(sock, sock + 1)
    assert len(flows._traces) <= 64
    assert flows.take_trace_ids(999, final=True) == [1000]  # the newest are kept, the oldest forgotten
    assert flows.take_trace_ids(0, final=True) == []
    for flow_id in range(1000):  # interim records of connections never seen closing
        flows.record(flow(flow_id=flow_id, state=FlowState.ACTIVE, resets_received=1), Resource.get_empty())
    assert len(flows._opened) <= 64 and len(flows._resets) <= 64 and 999 in flows._opened


class SizesLogExporter(InMemoryLogRecordExporter):
    def __init__(self) -> None:
        super().__init__()
        self.sizes: list[int] = []

    def export(self, batch):
        self.sizes.append(len(batch))
        return super().export(batch)


def test_a_burst_of_flow_records_is_exported_in_requests_of_at_most_max_batch(parts):
    builder, aggregator, self_metrics = parts
    logs = SizesLogExporter()
    pipeline = TelemetryPipeline(span_builder=builder, metrics_aggregator=aggregator, self_metrics=self_metrics,
                                 log_exporters=[logs], flow_telemetry=FlowTelemetry(), flow_log_delay_s=0.0,
                                 max_batch=100)
    for i in range(250):  # many connections closing together
        pipeline.consume_flow(flow(flow_id=1000 + i, remote_port=20000 + i))
    pipeline.shutdown()
    assert sum(logs.sizes) == 250 and max(logs.sizes) <= 100
    assert len(logs.get_finished_logs()) == 250
