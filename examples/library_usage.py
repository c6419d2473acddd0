"""Use otel-ebpf inside your own agent, with your own OpenTelemetry SDK providers.

    sudo .venv/bin/python examples/library_usage.py --port 8080 --duration 30

Every HTTP/1.x exchange on the given port becomes a span in *your* TracerProvider and a
point in *your* MeterProvider's http.server/client.request.duration histograms. Your
Resource describes this program; the watched process is named by the span attributes
process.pid, process.executable.name and otel_ebpf.service.name.
"""

import argparse
import time

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

from otel_ebpf import HttpReceiver, HttpReceiverConfig, SdkTelemetry


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, action="append", default=[])
    parser.add_argument("--duration", type=float, default=30.0)
    args = parser.parse_args()

    resource = Resource.create({"service.name": "my-agent"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter()))
    meter_provider = MeterProvider(resource=resource, metric_readers=[
        PeriodicExportingMetricReader(ConsoleMetricExporter(), export_interval_millis=10_000)])

    telemetry = SdkTelemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
    receiver = HttpReceiver(HttpReceiverConfig(ports=args.port), telemetry)
    receiver.start()  # raises with a clear message when the host cannot load BPF
    try:
        time.sleep(args.duration)
    finally:
        receiver.shutdown()
        tracer_provider.shutdown()
        meter_provider.shutdown()


if __name__ == "__main__":
    main()
