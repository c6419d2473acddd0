"""The library path: a receiver feeding the caller's own SDK providers."""

from __future__ import annotations

import subprocess

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from otel_ebpf import HttpReceiver, HttpReceiverConfig, SdkTelemetry

from .support import wait_until


def test_exchanges_become_spans_and_metrics_in_the_callers_providers(threading_server):
    resource = Resource.create({"service.name": "host-agent"})
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    receiver = HttpReceiver(HttpReceiverConfig(ports=[threading_server.port], poll_interval_ms=20),
                            SdkTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider))
    receiver.start()
    try:
        for path in ("/ok", "/error"):
            subprocess.run(["curl", "-s", "-o", "/dev/null", threading_server.url(path)], check=True, timeout=30)
        wait_until(lambda: len([s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER]) >= 2)
    finally:
        receiver.shutdown()
    server = {s.attributes["url.path"]: s for s in exporter.get_finished_spans() if s.kind == SpanKind.SERVER}
    assert set(server) == {"/ok", "/error"}
    span = server["/ok"]
    assert span.resource.attributes["service.name"] == "host-agent"  # the caller's Resource
    assert span.attributes["process.pid"] == threading_server.pid  # the watched process, on the span
    assert span.attributes["otel_ebpf.service.name"] == "threading_server"
    assert span.attributes["http.response.status_code"] == 200
    assert server["/error"].status.is_ok is False
    clients = [s for s in exporter.get_finished_spans() if s.kind == SpanKind.CLIENT]
    assert {s.attributes["otel_ebpf.service.name"] for s in clients} == {"curl"}
    data = reader.get_metrics_data()
    names = {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics}
    assert {"http.server.request.duration", "http.client.request.duration"} <= names
