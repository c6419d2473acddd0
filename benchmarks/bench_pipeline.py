"""User-space pipeline throughput from a recorded kernel event stream, in HTTP/1 exchanges per second.

    sudo .venv/bin/python benchmarks/bench_pipeline.py [--requests 20000] [--recording FILE]

Records a real event stream first (nginx + h2load on loopback, with the sockdata tracer) unless
--recording names one, then replays it several times on one core:
  1. decode + connection table + HTTP/1 parsing (the receiver's reader thread),
  2. (1) + processors + span building + metrics aggregation + OTLP protobuf encoding of every span
     (the agent's default path minus the network).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Nghttpd, Nginx, h2load_h1, h2load_h2  # noqa: E402

from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402

from otel_ebpf.bpf.btf import BpfObjectInfo  # noqa: E402
from otel_ebpf.bpf.clock import MonotonicClock  # noqa: E402
from otel_ebpf.bpf.events import SockDataCodec  # noqa: E402
from otel_ebpf.bpf.recording import Recording, RecordingWriter  # noqa: E402
from otel_ebpf.bpf.sockdata import SockDataTracer, object_path  # noqa: E402
from otel_ebpf.processinfo import ProcessInfoCache  # noqa: E402
from otel_ebpf.processors.redaction import RedactionProcessor  # noqa: E402
from otel_ebpf.processors.routes import RoutesProcessor  # noqa: E402
from otel_ebpf.processors.stitching import StitchingConfig, StitchingProcessor  # noqa: E402
from otel_ebpf.protocols.http1 import Http1Stats  # noqa: E402
from otel_ebpf.stream.conntable import ConnectionTable  # noqa: E402
from otel_ebpf.telemetry.metrics import HttpMetricsAggregator  # noqa: E402
from otel_ebpf.telemetry.otlp_fast import encode_trace_request  # noqa: E402
from otel_ebpf.telemetry.pipeline import TelemetryPipeline  # noqa: E402
from otel_ebpf.telemetry.spans import SpanBuilder  # noqa: E402


def record(path: Path, requests: int, *, http2: bool = False) -> None:
    nginx = Nghttpd() if http2 else Nginx()
    generate = h2load_h2 if http2 else h2load_h1
    tracer = SockDataTracer(ports=[nginx.port])
    tracer.start()
    clock = MonotonicClock()
    n = 0
    try:
        with RecordingWriter(path, clock_offset_ns=clock.offset_ns, info=BpfObjectInfo.from_file(object_path())) as w:
            import threading

            done = threading.Event()
            result = {}

            def load():
                result.update(generate(nginx.url, requests=requests, clients=10, rps_per_client=400))
                done.set()

            threading.Thread(target=load, daemon=True).start()
            while not done.is_set():
                for rec in tracer.poll_raw(50):
                    w.write(rec)
                    n += 1
            time.sleep(0.3)
            for rec in tracer.poll_raw(0):
                w.write(rec)
                n += 1
    finally:
        tracer.close()
        nginx.stop()
    print(f"recorded {n:,} kernel records for {result.get('succeeded', 0):,} requests -> {path}")


class EncodingExporter(SpanExporter):
    """Encodes every batch to OTLP protobuf bytes, as the agent's OTLP exporters do (the direct
    encoder), or with the SDK's encoder (``sdk=True``), and drops the bytes."""

    def __init__(self, *, sdk: bool = False) -> None:
        self.spans = 0
        self._sdk = sdk

    def export(self, spans):
        if self._sdk:
            encode_spans(spans).SerializeToString()
        else:
            encode_trace_request(spans)
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def replay(rec: Recording, codec: SockDataCodec, consume, on_request=None) -> tuple[int, float]:
    clock = MonotonicClock()
    clock.offset_ns = rec.clock_offset_ns
    table = ConnectionTable(clock=clock, stats=Http1Stats())
    table.on_request = on_request
    records = list(rec.records())
    t0 = time.perf_counter()
    n = 0
    decode, handle = codec.decode, table.handle
    for raw in records:
        ev = decode(raw)
        if ev is not None:
            for ex in handle(ev):
                consume(ex)
                n += 1
    for ex in table.close_all():
        consume(ex)
        n += 1
    return n, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--recording")
    args = ap.parse_args()
    os.sched_setaffinity(0, {0})
    path = Path(args.recording) if args.recording else Path(tempfile.mkdtemp()) / "stream.oebr"
    if not args.recording:
        record(path, args.requests)
    rec = Recording.open(path)
    info = BpfObjectInfo.from_file(object_path())
    rec.check_layout(info)
    codec = SockDataCodec(info)

    best = None
    for _ in range(3):
        n, dt = replay(rec, codec, lambda ex: None)
        best = dt if best is None else min(best, dt)
    print(f"receiver stage (decode + connection table + HTTP/1 parse): {n / best:,.0f} exchanges/s "
          f"({n:,} exchanges in {best:.3f} s)")

    for sdk in (False, True):
        procs = ProcessInfoCache()
        builder = SpanBuilder(host_name="bench", process_info=procs)
        exporter = EncodingExporter(sdk=sdk)
        pipeline = TelemetryPipeline(span_builder=builder, metrics_aggregator=HttpMetricsAggregator(),
                                     span_exporters=[exporter], processors=[RedactionProcessor(), RoutesProcessor()],
                                     max_queue=10_000_000)
        # Same thread, no queue hand-off: process inline to measure the CPU cost per exchange.
        t0 = time.perf_counter()
        n, _ = replay(rec, codec, pipeline.consume)
        pipeline.shutdown(timeout_s=600)
        dt = time.perf_counter() - t0
        encoder = "the SDK's OTLP encoder" if sdk else "direct OTLP encoding, as the agent exports"
        print(f"full agent path (+ redaction, routes, spans, metrics, {encoder}): "
              f"{n / dt:,.0f} exchanges/s ({exporter.spans:,} spans encoded in {dt:.3f} s)")

    best = None
    for _ in range(3):
        sink = []
        stitcher = StitchingProcessor(StitchingConfig(envoy_process_names=[]), next_consumer=type(
            "Sink", (), {"consume": staticmethod(sink.append)})())
        n, dt = replay(rec, codec, stitcher.consume, stitcher.request_started)
        best = dt if best is None else min(best, dt)
    print(f"receiver stage + stitching (request starts, parent choice): {n / best:,.0f} exchanges/s")

    if not args.recording:  # HTTP/2 (h2c): h2load against nghttpd, 10 streams per connection
        h2path = path.with_name("stream-h2.oebr")
        record(h2path, args.requests, http2=True)
        h2rec = Recording.open(h2path)
        best = None
        for _ in range(3):
            n, dt = replay(h2rec, codec, lambda ex: None)
            best = dt if best is None else min(best, dt)
        print(f"HTTP/2 receiver stage (decode + connection table + frames + HPACK): {n / best:,.0f} exchanges/s "
              f"({n:,} exchanges)")


if __name__ == "__main__":
    if os.geteuid() != 0 and "--recording" not in sys.argv:
        sys.exit("run as root to record a stream, or pass --recording FILE")
    main()
