"""B2, pipeline replay: user-space cost per exchange, stage by stage, from a recorded kernel event stream.

    sudo .venv/bin/python benchmarks/bench_pipeline.py [--requests 20000] [--recording FILE]

Records a real event stream first (nginx + h2load on loopback, with the sockdata tracer; then
nghttpd over h2c) unless --recording names one, then replays it on one core through cumulative
stages, each timed in process CPU time (best of 3) and reported as exchanges/s per core, µs per
exchange and as a ratio to the bare-decode floor:

  decode -> + connection table and parsing (the receiver) -> + stitching -> + redaction, routes,
  semantics, span, metrics -> + OTLP protobuf encoding (the agent's default path minus the network)

The replay is deterministic (same records, same exchanges), so the figures work as a regression
check; the garbage collector runs with the agent's thresholds (service.runtime).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import Nghttpd, Nginx, h2load_h1, h2load_h2, save_results  # noqa: E402
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
from otel_ebpf.service.runtime import GC_THRESHOLDS  # noqa: E402
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


def replay(rec: Recording, codec: SockDataCodec, consume, on_request=None, records=None) -> tuple[int, float]:
    """Decodes and handles every record of ``rec``; returns (exchanges, process CPU seconds)."""
    clock = MonotonicClock()
    clock.offset_ns = rec.clock_offset_ns
    table = ConnectionTable(clock=clock, stats=Http1Stats())
    table.on_request = on_request
    records = list(rec.records()) if records is None else records
    t0 = time.process_time()
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
    return n, time.process_time() - t0


class _Sink:
    def consume(self, exchange) -> None:
        pass


def stages(rec: Recording, codec: SockDataCodec, trials: int = 3) -> list[dict]:
    """CPU seconds of each cumulative stage over the whole recording (best of ``trials``)."""
    records = list(rec.records())
    exchanges = 0

    def decode_only():
        t0 = time.process_time()
        decode = codec.decode
        for raw in records:
            decode(raw)
        return time.process_time() - t0

    def path(stage: str):
        nonlocal exchanges
        procs = ProcessInfoCache()
        builder = SpanBuilder(host_name="bench", process_info=procs)
        exporter = EncodingExporter(sdk=stage == "sdk")
        pipeline = TelemetryPipeline(span_builder=builder, metrics_aggregator=HttpMetricsAggregator(),
                                     span_exporters=[exporter if stage in ("encode", "sdk") else NullExporter()],
                                     processors=[RedactionProcessor(), RoutesProcessor()], max_queue=10_000_000)
        if stage == "receiver":
            n, cpu = replay(rec, codec, lambda ex: None, records=records)
        else:
            nxt = _Sink() if stage == "stitching" else pipeline
            stitcher = StitchingProcessor(StitchingConfig(), next_consumer=nxt, process_info=procs)
            t0 = time.process_time()
            n, _ = replay(rec, codec, stitcher.consume, stitcher.request_started, records=records)
            pipeline.shutdown(timeout_s=600)  # not started: runs the stages inline, on this thread
            cpu = time.process_time() - t0
        exchanges = n
        return cpu

    rows = []
    plan = [("bare decode of every kernel record (the floor)", decode_only),
            ("+ connection table + protocol parsing (receiver)", lambda: path("receiver")),
            ("+ stitching (request starts, parent choice)", lambda: path("stitching")),
            ("+ redaction, routes, semantics, span, metrics", lambda: path("pipeline")),
            ("+ OTLP protobuf encoding (direct): the agent's path", lambda: path("encode")),
            ("  same, with the SDK's OTLP encoder (reference)", lambda: path("sdk"))]
    for label, fn in plan:
        best = min(fn() for _ in range(trials if "SDK" not in label else 1))
        rows.append({"stage": label, "cpu_s": best})
    for row in rows:
        row["exchanges"] = exchanges
        row["exchanges_per_s"] = exchanges / row["cpu_s"]
        row["us_per_exchange"] = row["cpu_s"] / exchanges * 1e6
        row["ratio_to_floor"] = rows[0]["cpu_s"] / row["cpu_s"]
    return rows


class NullExporter(SpanExporter):
    def export(self, spans):
        return SpanExportResult.SUCCESS


def print_stages(title: str, rows: list[dict], target: str = "") -> None:
    print(f"{title} ({rows[0]['exchanges']:,} exchanges, one core, process CPU time, best of 3)")
    print(f"  {'stage (cumulative)':<56} {'exchanges/s':>12} {'µs each':>9} {'ratio to floor':>15}")
    for row in rows:
        print(f"  {row['stage']:<56} {row['exchanges_per_s']:>12,.0f} {row['us_per_exchange']:>9.1f}"
              f" {row['ratio_to_floor']:>15.3f}")
    if target:
        print(f"  target: {target}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=20_000)
    ap.add_argument("--recording", help="an HTTP/1 recording to replay instead of recording one (root)")
    args = ap.parse_args()
    gc.set_threshold(*GC_THRESHOLDS)  # as the agent runs (service.runtime.tune_gc)
    os.sched_setaffinity(0, {0})
    path = Path(args.recording) if args.recording else Path(tempfile.mkdtemp()) / "stream.oebr"
    if not args.recording:
        record(path, args.requests)
    info = BpfObjectInfo.from_file(object_path())
    codec = SockDataCodec(info)
    results = {}
    rec = Recording.open(path)
    rec.check_layout(info)
    rows = stages(rec, codec)
    print_stages("B2, HTTP/1 replay (nginx + h2load: client and server ends)", rows,
                 ">= 50k exchanges/s per core through span building and OTLP encoding")
    results["http1"] = rows
    if not args.recording:  # HTTP/2 (h2c): h2load against nghttpd, 10 streams per connection
        h2path = path.with_name("stream-h2.oebr")
        record(h2path, args.requests, http2=True)
        rows = stages(Recording.open(h2path), codec)
        print_stages("B2, HTTP/2 replay (nghttpd + h2load, 10 streams per connection)", rows)
        results["http2"] = rows
    save_results("bench_pipeline", results)


if __name__ == "__main__":
    if os.geteuid() != 0 and "--recording" not in sys.argv:
        sys.exit("run as root to record a stream, or pass --recording FILE")
    main()
