"""B3, export: spans per second (and per CPU-second of the exporting process) through each exporter,
with the receiving end in another process.

    .venv/bin/python benchmarks/bench_export.py [--spans 20000] [--batch 512]

The spans are the agent's own (SpanBuilder from HTTP exchanges, one Resource per process). The
receiver is a separate process that accepts OTLP/gRPC and OTLP/HTTP requests and answers at once
without decoding, so the figure is the exporter's cost. Exporters: OTLP/gRPC and OTLP/HTTP as the
agent uses them (direct encoding), the same with the SDK's encoder, and the OTLP/JSON file exporter.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import NULL_OTLP_SINK, save_results  # noqa: E402
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
    OTLPSpanExporter as SdkGrpc,
)
from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
    OTLPSpanExporter as SdkHttp,
)

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.records import Connection, Exchange, HttpRequest, HttpResponse, Role
from otel_ebpf.telemetry.jsonfile import OtlpJsonFileSpanExporter
from otel_ebpf.telemetry.otlp_fast import (
    FastOtlpGrpcSpanExporter,
    FastOtlpHttpSpanExporter,
)
from otel_ebpf.telemetry.spans import SpanBuilder
from otel_ebpf.testing.net import free_port, wait_listening


def agent_spans(n: int) -> list:
    builder = SpanBuilder(host_name="bench", process_info=ProcessInfoCache(proc_root="/nonexistent"))
    spans = []
    for i in range(n):
        conn = Connection(1000 + i % 20, 7, 0xFFFF0000 + i % 50, 4, "10.0.0.1", 8080, f"10.0.1.{i % 200}",
                          40000 + i % 20000, Role.SERVER)
        request = HttpRequest("GET", f"/users/{i}?page={i % 7}", "1.1",
                              (("host", "shop.example:8080"), ("user-agent", "curl/8.5.0")))
        response = HttpResponse(200 if i % 10 else 503, "OK", "1.1", (("content-type", "application/json"),),
                                body_size=512)
        start = 1_700_000_000_000_000_000 + i * 1_000_000
        spans.append(builder.build(Exchange("http1", conn, request, response, start, start + 2_000_000, tid=1000)))
    return spans


RESULTS: dict[str, dict] = {}


def run(name: str, exporter, spans: list, batch: int) -> None:
    exporter.export(spans[:batch])  # connect, warm caches
    t0, c0 = time.perf_counter(), time.process_time()
    for i in range(0, len(spans), batch):
        result = exporter.export(spans[i:i + batch])
        if result.name != "SUCCESS":
            print(f"{name}: export failed")
            return
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    exporter.shutdown()
    print(f"{name:<44} {len(spans) / wall:>10,.0f} spans/s  {len(spans) / cpu:>10,.0f} spans per CPU-second")
    RESULTS[name] = {"spans_per_s": len(spans) / wall, "spans_per_cpu_s": len(spans) / cpu}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--spans", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=512)
    args = ap.parse_args()
    grpc_port, http_port = free_port(), free_port()
    sink = subprocess.Popen([sys.executable, "-c", NULL_OTLP_SINK, str(grpc_port), str(http_port)], stdout=subprocess.PIPE,
                            text=True)
    try:
        assert sink.stdout.readline().strip() == "ready"
        wait_listening(http_port)
        spans = agent_spans(args.spans)
        grpc_endpoint, http_endpoint = f"http://127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}/v1/traces"
        print(f"B3: {args.spans:,} agent spans in batches of {args.batch}, receiver in another process")
        run("OTLP/gRPC, direct encoding (the agent)", FastOtlpGrpcSpanExporter(endpoint=grpc_endpoint, insecure=True),
            spans, args.batch)
        run("OTLP/gRPC, SDK encoder", SdkGrpc(endpoint=grpc_endpoint, insecure=True), spans, args.batch)
        run("OTLP/HTTP protobuf, direct encoding (the agent)", FastOtlpHttpSpanExporter(endpoint=http_endpoint),
            spans, args.batch)
        run("OTLP/HTTP protobuf, SDK encoder", SdkHttp(endpoint=http_endpoint), spans, args.batch)
        with tempfile.TemporaryDirectory() as tmp:
            run("OTLP/JSON lines file", OtlpJsonFileSpanExporter(Path(tmp) / "traces.jsonl"), spans, args.batch)
        save_results("bench_export", RESULTS)
    finally:
        sink.terminate()
        sink.wait(10)


if __name__ == "__main__":
    main()
