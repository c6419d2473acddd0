"""The agent: builds receivers → processors → telemetry → exporters from a ServiceConfig.

Usage::

    agent = Agent(ServiceConfig.embedded_default(environ=os.environ), pids=[], ports=[8080])
    agent.start()          # exporters first, receivers last; raises on probe failure
    ...
    agent.shutdown()       # receivers first, then drain and flush everything; safe twice

Lifecycle rules (written once, obeyed by every component): ``start()`` returns
quickly; ``shutdown()`` is safe twice and before ``start()``; exporters start
first and receivers last, and shutdown stops receivers first so that what they
already captured drains downstream before the exporters close.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, TextIO

from opentelemetry.sdk._logs.export import ConsoleLogRecordExporter, LogRecordExporter
from opentelemetry.sdk.metrics.export import ConsoleMetricExporter, MetricExporter
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SpanExporter

from ..processinfo import ProcessInfoCache, parse_resource_attributes
from ..processors.redaction import RedactionConfig, RedactionProcessor
from ..processors.routes import RoutesProcessor
from ..processors.stitching import StitchingConfig, StitchingProcessor
from ..receivers.http import HttpReceiver
from ..receivers.tcpflow import TcpFlowReceiver
from ..records import FlowState, TcpFlow
from ..telemetry.flows import FlowTelemetry, server_side
from ..telemetry.jsonfile import FlowJsonLinesExporter, OtlpJsonFileMetricExporter, OtlpJsonFileSpanExporter
from ..telemetry.metrics import HttpMetricsAggregator, SelfMetrics
from ..telemetry.pipeline import TelemetryPipeline
from ..telemetry.spans import SpanBuilder
from ..telemetry.summary import RedSummary, SummaryPrinter
from ..kube.enrich import KubeEnricher, peer_attributes
from ..kube.metadata import KubeConfig, KubeMetadata
from ..receivers.tcpflow import TcpFlowReceiverConfig
from ..telemetry.servicegraph import ServiceGraph, ServiceGraphConfig
from .config import ExporterConfig, ServiceConfig

__all__ = ["Agent"]

log = logging.getLogger(__name__)


def _span_exporter(cfg: ExporterConfig) -> SpanExporter | None:
    # The SDK's OTLP exporters with the span encoding replaced by a direct one (telemetry/otlp_fast.py).
    if cfg.type == "otlp":
        from ..telemetry.otlp_fast import FastOtlpGrpcSpanExporter

        return FastOtlpGrpcSpanExporter(**_otlp_kwargs(cfg, grpc=True))
    if cfg.type == "otlphttp":
        from ..telemetry.otlp_fast import FastOtlpHttpSpanExporter

        return FastOtlpHttpSpanExporter(**_otlp_kwargs(cfg, grpc=False, signal="traces"))
    if cfg.type == "console":
        return ConsoleSpanExporter()
    if cfg.type == "file":
        return OtlpJsonFileSpanExporter(Path(cfg.directory) / "traces.jsonl", max_bytes=cfg.max_bytes,
                                        backups=cfg.backups)
    return None


def _metric_exporter(cfg: ExporterConfig) -> MetricExporter | None:
    if cfg.type == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        return OTLPMetricExporter(**_otlp_kwargs(cfg, grpc=True))
    if cfg.type == "otlphttp":
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetricExporter

        return HttpMetricExporter(**_otlp_kwargs(cfg, grpc=False, signal="metrics"))
    if cfg.type == "console":
        return ConsoleMetricExporter()
    if cfg.type == "file":
        return OtlpJsonFileMetricExporter(Path(cfg.directory) / "metrics.jsonl", max_bytes=cfg.max_bytes,
                                          backups=cfg.backups)
    return None


def _log_exporter(cfg: ExporterConfig) -> LogRecordExporter | None:
    if cfg.type == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

        return OTLPLogExporter(**_otlp_kwargs(cfg, grpc=True))
    if cfg.type == "otlphttp":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as HttpLogExporter

        return HttpLogExporter(**_otlp_kwargs(cfg, grpc=False, signal="logs"))
    if cfg.type == "console":
        return ConsoleLogRecordExporter()
    if cfg.type == "file":
        return FlowJsonLinesExporter(Path(cfg.directory) / "flows.jsonl", max_bytes=cfg.max_bytes,
                                     backups=cfg.backups)
    return None


def _otlp_kwargs(cfg: ExporterConfig, *, grpc: bool, signal: str = "") -> dict[str, Any]:
    """Only what the YAML sets: everything else comes from the exporters' own OTEL_* handling."""
    kw: dict[str, Any] = {}
    if cfg.endpoint:
        if grpc:
            kw["endpoint"] = cfg.endpoint
            if cfg.insecure is None:
                kw["insecure"] = cfg.endpoint.startswith("http://")
        else:
            kw["endpoint"] = cfg.endpoint.rstrip("/") + f"/v1/{signal}"
    if grpc and cfg.insecure is not None:
        kw["insecure"] = cfg.insecure
    if cfg.headers:
        kw["headers"] = dict(cfg.headers)
    if cfg.timeout is not None:
        kw["timeout"] = cfg.timeout
    if cfg.compression is not None:
        if grpc:
            from grpc import Compression

            kw["compression"] = Compression.Gzip if cfg.compression == "gzip" else Compression.NoCompression
        else:
            from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression

            kw["compression"] = HttpCompression.Gzip if cfg.compression == "gzip" else HttpCompression.NoCompression
    return kw


class Agent:
    def __init__(
        self,
        config: ServiceConfig,
        *,
        pids: list[int] | None = None,
        ports: list[int] | None = None,
        environ: dict[str, str] | None = None,
        summary_stream: TextIO | None = None,
        record_path: str | None = None,
        kube_api_client=None,
        kube_sync_timeout_s: float = 15.0,
    ):
        self.config = config
        self.kube_sync_timeout_s = kube_sync_timeout_s
        environ = dict(os.environ if environ is None else environ)
        self.self_metrics = SelfMetrics()
        self.process_info = ProcessInfoCache()
        resource_attrs = parse_resource_attributes(environ.get("OTEL_RESOURCE_ATTRIBUTES"))
        self.span_builder = SpanBuilder(host_name=socket.gethostname(), process_info=self.process_info,
                                        resource_attributes=resource_attrs)
        self.aggregator = HttpMetricsAggregator(self_metrics=self.self_metrics,
                                                agent_resource=self.span_builder.agent_resource)

        # Which components are used by which signal.
        span_exporter_names, metric_exporter_names, processor_names, receiver_names = [], [], [], []
        log_exporter_names: list[str] = []
        for pname, pipe in config.pipelines.items():
            signal = pname.split("/")[0]
            target = {"traces": span_exporter_names, "metrics": metric_exporter_names,
                      "logs": log_exporter_names}[signal]
            for e in pipe.exporters:
                if e not in target:
                    target.append(e)
            for p in pipe.processors:
                if p not in processor_names:
                    processor_names.append(p)
            for r in pipe.receivers:
                if r not in receiver_names:
                    receiver_names.append(r)

        self.summary: RedSummary | None = None
        self._printer: SummaryPrinter | None = None
        span_exporters: list[SpanExporter] = []
        metric_exporters: list[MetricExporter] = []
        for name in span_exporter_names:
            cfg = config.exporters[name]
            if cfg.type == "summary":
                self.summary = RedSummary()
                self._printer = SummaryPrinter(self.summary, summary_stream or sys.stdout, interval_s=cfg.interval,
                                               counters_fn=self._summary_counters)
                continue
            exp = _span_exporter(cfg)
            if exp is not None:
                span_exporters.append(exp)
        for name in metric_exporter_names:
            exp = _metric_exporter(config.exporters[name])
            if exp is not None:
                metric_exporters.append(exp)
        log_exporters: list[LogRecordExporter] = []
        flow_summary = False
        for name in log_exporter_names:
            cfg = config.exporters[name]
            if cfg.type == "summary":
                flow_summary = True
                if self.summary is None:
                    self.summary = RedSummary()
                    self._printer = SummaryPrinter(self.summary, summary_stream or sys.stdout,
                                                   interval_s=cfg.interval, counters_fn=self._summary_counters)
                continue
            exp = _log_exporter(cfg)
            if exp is not None:
                log_exporters.append(exp)
        has_flows = any(isinstance(config.receivers[r], TcpFlowReceiverConfig) for r in receiver_names)
        self.flow_telemetry = None

        processors = []
        stitching: StitchingConfig | None = None
        self.kube: KubeMetadata | None = None
        self.kube_enricher: KubeEnricher | None = None
        self.service_graph: ServiceGraph | None = None
        for name in processor_names:
            pcfg = config.processors[name]
            if isinstance(pcfg, KubeConfig):
                self.kube = KubeMetadata(pcfg, api_client=kube_api_client)
                self.kube_enricher = KubeEnricher(self.kube)
                self.kube_enricher.on_change = self.span_builder.invalidate_resources
                self.span_builder.resource_enricher = self.kube_enricher.resource_attributes
                self.self_metrics.register(self._kube_counters)
            elif isinstance(pcfg, ServiceGraphConfig):
                self.service_graph = ServiceGraph(resource=self.span_builder.agent_resource, wait_s=pcfg.wait)
            elif isinstance(pcfg, StitchingConfig):
                stitching = pcfg  # a stage in front of the pipeline (it needs request starts), not a per-exchange step
            elif isinstance(pcfg, RedactionConfig):
                processors.append(RedactionProcessor(pcfg))
            else:
                processors.append(RoutesProcessor(pcfg))

        enricher = self.kube_enricher
        if has_flows:
            self.flow_telemetry = FlowTelemetry(peer=self._flow_peer if enricher is not None else None)
        self.pipeline = TelemetryPipeline(
            span_builder=self.span_builder, metrics_aggregator=self.aggregator, span_exporters=span_exporters,
            metric_exporters=metric_exporters, processors=processors, self_metrics=self.self_metrics,
            metric_interval_s=config.metrics_interval,
            on_exchange=self._on_exchange if self.summary is not None else None,
            log_exporters=log_exporters, flow_telemetry=self.flow_telemetry,
            on_flow=self._on_flow if flow_summary else None,
            exchange_enricher=enricher.exchange_attributes if enricher is not None else None,
            service_graph=self.service_graph,
            peer_service=enricher.peer_service if enricher is not None else None,
        )
        # receivers -> [stitching] -> pipeline (processors, spans, metrics) -> exporters
        self.stitcher: StitchingProcessor | None = None
        head = self.pipeline
        if stitching is not None:
            self.stitcher = StitchingProcessor(stitching, next_consumer=self.pipeline, process_info=self.process_info)
            self.self_metrics.register(self.stitcher.stats)
            head = self.stitcher
        self.head = head  # where receivers deliver (request starts and exchanges)
        self.receivers: list[HttpReceiver | TcpFlowReceiver] = []
        for name in receiver_names:
            rcfg = config.receivers[name]
            if isinstance(rcfg, TcpFlowReceiverConfig):
                flow_receiver = TcpFlowReceiver(rcfg, self.pipeline)
                self.receivers.append(flow_receiver)
                self.self_metrics.register(self._flow_counters(flow_receiver))
                continue
            if pids:
                rcfg = replace(rcfg, pids=list(pids))
            if ports:
                rcfg = replace(rcfg, ports=list(ports))
            if record_path:
                rcfg = replace(rcfg, record_path=record_path)
            receiver = HttpReceiver(rcfg, head, process_info=self.process_info)
            self.receivers.append(receiver)
            self.self_metrics.register(self._receiver_counters(receiver))
        self._lock = threading.Lock()
        self._started = False
        self._stopped = False

    @staticmethod
    def _receiver_counters(receiver: HttpReceiver):
        names = {
            "kernel.events": "otel_ebpf.ringbuf.events",
            "kernel.lost": "otel_ebpf.ringbuf.lost",
            "kernel.lost_with_room": "otel_ebpf.ringbuf.lost_with_room",
            "kernel.busy_stalls": "otel_ebpf.ringbuf.busy_stalls",
            "kernel.active_full": "otel_ebpf.kernel.calls_untraced",
            "kernel.truncated": "otel_ebpf.kernel.payloads_truncated",
            "kernel.decode_errors": "otel_ebpf.ringbuf.decode_errors",
            "kernel.h2_forwarded": "otel_ebpf.kernel.http2_frames_forwarded",
            "kernel.bad_segments": "otel_ebpf.ringbuf.bad_segments",
            "table.evicted": "otel_ebpf.connections.evicted",
            "table.expired": "otel_ebpf.connections.expired",
            "table.connections_opened": "otel_ebpf.connections.opened",
            "http1.messages": "otel_ebpf.http1.messages",
            "http1.parse_errors": "otel_ebpf.http1.parse_errors",
            "http1.non_http_connections": "otel_ebpf.http1.non_http_connections",
            "http1.truncated_messages": "otel_ebpf.http1.truncated_messages",
            "http1.resyncs": "otel_ebpf.http1.resyncs",
            "http1.orphan_responses": "otel_ebpf.http1.orphan_responses",
            "http1.dropped_pending": "otel_ebpf.http1.dropped_pending",
            "http2.frames": "otel_ebpf.http2.frames",
            "http2.parse_errors": "otel_ebpf.http2.parse_errors",
            "http2.non_http2_connections": "otel_ebpf.http2.non_http2_connections",
            "http2.hpack_unknown_refs": "otel_ebpf.http2.hpack_unknown_refs",
            "http2.hpack_gaps": "otel_ebpf.http2.hpack_gaps",
            "http2.truncated_frames": "otel_ebpf.http2.truncated_frames",
            "http2.dropped_streams": "otel_ebpf.http2.dropped_streams",
            "http2.resets": "otel_ebpf.http2.resets",
            "consumer_errors": "otel_ebpf.receiver.consumer_errors",
        }

        def counters() -> dict[str, int]:
            stats = receiver.stats() if not getattr(receiver, "_stopped", False) else getattr(receiver, "last_stats", {})
            return {metric: stats[key] for key, metric in names.items() if key in stats}

        return counters

    @staticmethod
    def _flow_counters(receiver: TcpFlowReceiver):
        names = {
            "kernel.events": "otel_ebpf.tcpflow.records",
            "kernel.lost": "otel_ebpf.tcpflow.lost",
            "kernel.flows_full": "otel_ebpf.tcpflow.table_full",
            "kernel.decode_errors": "otel_ebpf.tcpflow.decode_errors",
            "flows": "otel_ebpf.tcpflow.flows",
            "consumer_errors": "otel_ebpf.tcpflow.consumer_errors",
        }

        def counters() -> dict[str, int]:
            stats = receiver.stats()
            return {metric: stats[key] for key, metric in names.items() if key in stats}

        return counters

    def _flow_peer(self, address: str) -> dict | None:
        identity = self.kube_enricher.peer_identity(address)
        return peer_attributes(identity) if identity is not None else None

    def _kube_counters(self) -> dict[str, int]:
        return {f"otel_ebpf.kubernetes.{k}": v for k, v in self.kube.counters().items()} if self.kube else {}

    def _on_flow(self, flow: TcpFlow, resource) -> None:
        address, port = server_side(flow)
        self.summary.record_flow(
            str(resource.attributes.get("service.name", flow.comm or "unknown")), f"{address}:{port}",
            bytes_moved=flow.interval_bytes_sent + flow.interval_bytes_received,
            retransmits=flow.interval_retransmits, srtt_s=flow.srtt_us / 1e6,
            failed=flow.state is FlowState.FAILED, closed=flow.state is FlowState.CLOSED)

    def _summary_counters(self) -> dict[str, int]:
        snap = self.self_metrics.snapshot()
        keep = ("otel_ebpf.ringbuf.events", "otel_ebpf.ringbuf.lost", "otel_ebpf.exchanges",
                "otel_ebpf.http1.parse_errors", "otel_ebpf.pipeline.dropped", "otel_ebpf.export.failed")
        return {k.removeprefix("otel_ebpf."): int(v) for k, v in snap.items() if k in keep}

    def _on_exchange(self, exchange, span) -> None:
        from opentelemetry.trace import SpanKind, StatusCode

        service = str(span.resource.attributes.get("service.name", "unknown"))
        kind = "server" if span.kind == SpanKind.SERVER else "client" if span.kind == SpanKind.CLIENT else "other"
        self.summary.record(service, kind, (exchange.end_ns - exchange.start_ns) / 1e9,
                            span.status.status_code == StatusCode.ERROR, exchange.end_ns / 1e9)

    def start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
        self.pipeline.start()
        if self.kube is not None:
            self.kube.start()
            if not self.kube.wait_synced(self.kube_sync_timeout_s):
                log.warning("kubernetes metadata not in sync after %.0fs: going on, spans get it once it is",
                            self.kube_sync_timeout_s)
        started: list = []
        try:
            for r in self.receivers:
                r.start()
                started.append(r)
        except BaseException:
            for r in started:
                r.shutdown()
            self.pipeline.shutdown(timeout_s=5)
            raise
        if self._printer is not None:
            self._printer.start()

    @property
    def attached_programs(self) -> list[str]:
        return [p for r in self.receivers for p in r.attached_programs]

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        return self.pipeline.force_flush(timeout_s)

    def shutdown(self, timeout_s: float = 30.0) -> None:
        with self._lock:
            if self._stopped:
                return
            self._stopped = True
        deadline = time.monotonic() + timeout_s
        for r in self.receivers:
            r.shutdown()
        self.pipeline.shutdown(timeout_s=max(1.0, deadline - time.monotonic()))
        if self.kube is not None:
            self.kube.stop()
        if self._printer is not None:
            self._printer.stop()
