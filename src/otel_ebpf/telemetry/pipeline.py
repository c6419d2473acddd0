"""The agent's export path: exchanges in, spans and metrics out to SDK exporters.

Usage::

    from otel_ebpf.telemetry.pipeline import TelemetryPipeline

    pipeline = TelemetryPipeline(
        span_builder=builder, metrics_aggregator=aggregator, self_metrics=self_metrics,
        span_exporters=[OTLPSpanExporter()], metric_exporters=[OTLPMetricExporter()],
        processors=[RedactionProcessor(), RoutesProcessor(routes_config)],
    )
    pipeline.start()                      # returns at once
    receiver = HttpReceiver(HttpReceiverConfig(), pipeline)  # consume() from any thread, never blocks
    ...
    pipeline.shutdown(timeout_s=10)       # drains, exports the last spans and metrics

Stages, top to bottom, on two threads:

``consume(exchange)`` (caller's thread)
    appends to a bounded queue; when ``max_queue`` exchanges wait, the exchange is dropped and
    counted in ``otel_ebpf.pipeline.dropped``. Never blocks, never raises.
worker thread ``otel-ebpf-pipeline``
    each processor in order (``process(exchange) -> Exchange | None``; None filters the exchange
    out: ``otel_ebpf.pipeline.filtered``), then :func:`semantics.describe`, ``SpanBuilder.build``,
    ``HttpMetricsAggregator.record`` and ``on_exchange(exchange, span)``. Any exception there
    drops that one exchange (``otel_ebpf.pipeline.errors``). Sampled spans are batched; spans
    whose remote parent is not sampled are not exported (``otel_ebpf.spans.unsampled``), as a
    ParentBased sampler would decide. A batch is handed on at ``max_batch`` spans or
    ``schedule_delay_s`` after its first span.
export thread ``otel-ebpf-export``
    exports each batch to every span exporter, and every ``metric_interval_s`` the aggregator's
    ``collect()`` to every metric exporter, so a slow backend never stalls processing and
    metrics stay exact when traces cannot be delivered. A failed or raising exporter is counted
    in ``otel_ebpf.export.failed`` with attributes ``exporter`` (class name) and ``signal``
    (``traces``/``metrics``); exported spans in ``otel_ebpf.export.spans``. At most
    ``max_queue // max_batch`` batches wait for export; more are dropped
    (``otel_ebpf.export.dropped_spans``).

Lifecycle: ``start()`` returns quickly; ``force_flush(timeout_s)`` returns True once everything
consumed before the call is exported (spans and metrics) and the exporters flushed;
``shutdown(timeout_s)`` stops accepting, drains the queue, exports final spans and metrics, shuts
every exporter down, and is safe twice and before ``start()`` (it then drains on the calling
thread). Every exchange taken in is counted in ``otel_ebpf.exchanges``.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from opentelemetry._logs import LogRecord, SeverityNumber
from opentelemetry.sdk._logs import ReadableLogRecord
from opentelemetry.sdk._logs.export import LogRecordExporter, LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExporter, MetricExportResult
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_ebpf.protocols.dns import DnsLookup
from otel_ebpf.records import Exchange, FlowState, Role, TcpFlow
from otel_ebpf.telemetry.dns import DNS_LOOKUP_DURATION, DnsContext, describe_dns
from otel_ebpf.telemetry.flows import FlowTelemetry, flow_log_attributes
from otel_ebpf.telemetry.servicegraph import ServiceGraph
from otel_ebpf.telemetry.metrics import HttpMetricsAggregator, SelfMetrics
from otel_ebpf.telemetry.semantics import describe
from otel_ebpf.telemetry.spans import SpanBuilder
from otel_ebpf.threads import name_os_thread

__all__ = ["ExchangeProcessor", "TelemetryPipeline"]

_logger = logging.getLogger(__name__)

EXCHANGES = "otel_ebpf.exchanges"
DROPPED = "otel_ebpf.pipeline.dropped"
FILTERED = "otel_ebpf.pipeline.filtered"
ERRORS = "otel_ebpf.pipeline.errors"
UNSAMPLED = "otel_ebpf.spans.unsampled"
EXPORT_FAILED = "otel_ebpf.export.failed"
EXPORT_SPANS = "otel_ebpf.export.spans"
EXPORT_DROPPED = "otel_ebpf.export.dropped_spans"
CALLBACK_ERRORS = "otel_ebpf.pipeline.callback_errors"
FLOWS = "otel_ebpf.flows"
EXPORT_LOGS = "otel_ebpf.export.logs"
DROPPED_FLOW_LOGS = "otel_ebpf.export.dropped_flow_logs"


class ExchangeProcessor(Protocol):
    def process(self, exchange: Exchange) -> Exchange | None: ...


class _LogBatch:
    __slots__ = ("records",)

    def __init__(self, records: list) -> None:
        self.records = records


class _Flush:
    """Marker travelling through both queues behind everything consumed before it."""

    __slots__ = ("done", "final")

    def __init__(self, final: bool = False) -> None:
        self.done = threading.Event()
        self.final = final


class TelemetryPipeline:
    """Exchanges → processors → spans + metrics → exporters (see the module docstring)."""

    def __init__(
        self,
        *,
        span_builder: SpanBuilder,
        metrics_aggregator: HttpMetricsAggregator,
        span_exporters: Sequence[SpanExporter] = (),
        metric_exporters: Sequence[MetricExporter] = (),
        processors: Sequence[ExchangeProcessor] = (),
        self_metrics: SelfMetrics | None = None,
        max_queue: int = 8192,
        max_batch: int = 512,
        schedule_delay_s: float = 1.0,
        metric_interval_s: float = 10.0,
        export_timeout_s: float = 10.0,
        on_exchange: Callable[[Exchange, ReadableSpan], None] | None = None,
        log_exporters: Sequence[LogRecordExporter] = (),
        flow_telemetry: FlowTelemetry | None = None,
        flow_log_delay_s: float = 1.0,
        on_flow: Callable[[TcpFlow, Resource], None] | None = None,
        exchange_enricher: Callable[[Exchange], dict] | None = None,
        service_graph: ServiceGraph | None = None,
        peer_service: Callable[[str], str | None] | None = None,
    ) -> None:
        if max_queue < 1 or max_batch < 1:
            raise ValueError("max_queue and max_batch must be positive")
        self._builder = span_builder
        self._aggregator = metrics_aggregator
        self._span_exporters = list(span_exporters)
        self._metric_exporters = list(metric_exporters)
        self._processors = list(processors)
        self._self = self_metrics if self_metrics is not None else SelfMetrics()
        self._max_queue = max_queue
        self._max_batch = max_batch
        self._delay = schedule_delay_s
        self._metric_interval = metric_interval_s
        self._export_timeout_s = export_timeout_s
        self._on_exchange = on_exchange
        self._log_exporters = list(log_exporters)
        self._flows = flow_telemetry
        if flow_telemetry is not None:
            metrics_aggregator.add_source(flow_telemetry.collect)
        self._flow_log_delay = flow_log_delay_s
        self._on_flow = on_flow
        self._enrich = exchange_enricher
        self._graph = service_graph
        self._peer_service = peer_service
        if service_graph is not None:
            metrics_aggregator.add_source(service_graph.collect)
        # Flow records wait a moment before their log record is made: the exchanges of the same
        # connection come from another receiver thread and may be a poll interval behind.
        self._pending_flows: collections.deque[tuple[float, TcpFlow, Resource]] = collections.deque()
        self._log_batch: list[ReadableLogRecord] = []

        self._queue: collections.deque[Any] = collections.deque()
        self._wakeup = threading.Event()
        self._export_queue: collections.deque[Any] = collections.deque()
        self._export_wakeup = threading.Event()
        self._max_export_batches = max(2, max_queue // max_batch)

        self._batch: list[ReadableSpan] = []
        self._batch_started = 0.0
        self._state_lock = threading.Lock()
        self._started = False
        self._closed = False
        self._shut_down = False
        self._worker: threading.Thread | None = None
        self._exporter: threading.Thread | None = None
        # plain-int counters on the hot path, published through a callback
        self._count_lock = threading.Lock()
        self._consumed = 0
        self._dropped = 0
        self._self.register(self._counters)

    # -- public API ------------------------------------------------------------------------

    @property
    def self_metrics(self) -> SelfMetrics:
        return self._self

    def start(self) -> None:
        with self._state_lock:
            if self._started or self._closed:
                return
            self._started = True
            self._worker = threading.Thread(target=self._work, name="otel-ebpf-pipeline", daemon=True)
            self._exporter = threading.Thread(target=self._export_loop, name="otel-ebpf-export", daemon=True)
            self._exporter.start()
            self._worker.start()

    def consume(self, exchange: Exchange) -> None:
        """Queue one exchange. Thread-safe, non-blocking; drops (counted) when full or closed."""
        with self._count_lock:
            self._consumed += 1
            if self._closed or len(self._queue) >= self._max_queue:
                self._dropped += 1
                return
        self._queue.append(exchange)
        if not self._wakeup.is_set():
            self._wakeup.set()

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        if self._shut_down:
            return True
        if not self._started:
            self._drain_inline(final=False)
            return True
        marker = _Flush()
        self._queue.append(marker)
        self._wakeup.set()
        return marker.done.wait(timeout_s)

    def shutdown(self, timeout_s: float = 30.0) -> bool:
        with self._state_lock:
            if self._shut_down:
                return True
            self._shut_down = True
            self._closed = True
            started = self._started
        deadline = time.monotonic() + timeout_s
        if not started:
            self._drain_inline(final=True)
            ok = True
        else:
            marker = _Flush(final=True)
            self._queue.append(marker)
            self._wakeup.set()
            ok = marker.done.wait(timeout_s)
            for thread in (self._worker, self._exporter):
                if thread is not None:
                    thread.join(max(0.0, deadline - time.monotonic()))
        self._shutdown_exporters()
        return ok

    # -- worker ----------------------------------------------------------------------------

    def _counters(self) -> dict[str, int]:
        return {EXCHANGES: self._consumed, DROPPED: self._dropped}

    def _work(self) -> None:
        name_os_thread()
        queue = self._queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                item = None
            if item is None:
                if self._pending_flows:
                    self._release_flows(final=False)
                if (self._batch or self._log_batch) and time.monotonic() - self._batch_started >= self._delay:
                    self._hand_over()
                self._wakeup.clear()
                if queue:
                    continue
                timeout = self._delay
                if self._batch:
                    timeout = max(0.0, self._batch_started + self._delay - time.monotonic())
                self._wakeup.wait(timeout)
                continue
            if isinstance(item, _Flush):
                self._release_flows(final=True)
                self._hand_over()
                self._enqueue_export(item)
                if item.final:
                    return
                continue
            kind = type(item)
            if kind is TcpFlow:
                self._handle_flow(item)
            elif kind is DnsLookup:
                self._handle_dns(item)
            else:
                self._handle(item)
            if self._pending_flows:
                self._release_flows(final=False)
            if len(self._batch) >= self._max_batch or len(self._log_batch) >= self._max_batch:
                self._hand_over()

    def _handle(self, exchange: Exchange) -> None:
        try:
            for processor in self._processors:
                exchange = processor.process(exchange)
                if exchange is None:
                    self._self.add(FILTERED)
                    return
            sem = describe(exchange)
            if self._enrich is not None:
                extra = self._enrich(exchange)
                if extra:
                    sem.attributes.update(extra)
            span = self._builder.build(exchange, semantics=sem)
            if self._graph is not None:
                conn = exchange.connection
                peer = self._peer_service(conn.remote_address) if self._peer_service is not None else None
                server = sem.attributes.get("server.address")
                if conn.role == Role.SERVER:
                    key = (conn.remote_address, conn.remote_port, conn.local_address, conn.local_port)
                else:
                    key = (conn.local_address, conn.local_port, conn.remote_address, conn.remote_port)
                self._graph.record(span, service=str(span.resource.attributes.get("service.name", "unknown")),
                                   peer=peer, connection=key, peer_address=str(server) if server else conn.remote_address)
            self._aggregator.record(exchange, span.resource, attributes=sem.metric_attributes, metrics=sem.metrics)
        except Exception:
            self._self.add(ERRORS)
            _logger.debug("dropping an exchange that failed in the pipeline", exc_info=True)
            return
        if self._flows is not None:
            self._flows.note_span(exchange.connection.sock_id, span.context.trace_id)
        if span.context.trace_flags.sampled:
            if not self._batch:
                self._batch_started = time.monotonic()
            self._batch.append(span)
        else:
            self._self.add(UNSAMPLED)
        if self._on_exchange is not None:
            try:
                self._on_exchange(exchange, span)
            except Exception:
                self._self.add(CALLBACK_ERRORS)
                _logger.debug("on_exchange callback failed", exc_info=True)

    def consume_dns(self, lookup: DnsLookup) -> None:
        """Queue one DNS lookup (same queue, bounds and drop counting as exchanges)."""
        self.consume(lookup)  # type: ignore[arg-type]

    def _handle_dns(self, lookup: DnsLookup) -> None:
        try:
            sem = describe_dns(lookup)
            ctx = lookup.context
            pid = ctx.connection.pid if isinstance(ctx, DnsContext) else 0
            trace = ctx.trace if isinstance(ctx, DnsContext) else None
            span = self._builder.build_other(sem, pid=pid, start_ns=lookup.start_ns, end_ns=lookup.end_ns,
                                             trace=trace)
            self._aggregator.record_duration(DNS_LOOKUP_DURATION, lookup.start_ns, lookup.end_ns, span.resource,
                                             sem.metric_attributes)
        except Exception:
            self._self.add(ERRORS)
            _logger.debug("dropping a DNS lookup that failed in the pipeline", exc_info=True)
            return
        if not span.context.trace_flags.sampled:  # the request it served was not sampled
            self._self.add(UNSAMPLED)
            return
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append(span)

    def consume_flow(self, flow: TcpFlow) -> None:
        """Queue one TCP flow record (same queue, bounds and drop counting as exchanges)."""
        self.consume(flow)  # type: ignore[arg-type]

    def _handle_flow(self, flow: TcpFlow) -> None:
        try:
            resource = self._builder.resource_for(flow.pid)
            if self._flows is not None:
                self._flows.record(flow, resource)
        except Exception:
            self._self.add(ERRORS)
            _logger.debug("dropping a flow that failed in the pipeline", exc_info=True)
            return
        self._self.add(FLOWS)
        if self._on_flow is not None:
            try:
                self._on_flow(flow, resource)
            except Exception:
                self._self.add(CALLBACK_ERRORS)
        if self._log_exporters:
            self._pending_flows.append((time.monotonic(), flow, resource))
            if len(self._pending_flows) > self._max_queue:
                self._pending_flows.popleft()
                self._self.add(DROPPED_FLOW_LOGS)

    def _release_flows(self, *, final: bool) -> None:
        """Flow log records for flows that waited long enough (all of them when ``final``)."""
        pending = self._pending_flows
        limit = time.monotonic() - self._flow_log_delay
        while pending and (final or pending[0][0] <= limit):
            _, flow, resource = pending.popleft()
            done = flow.state is not FlowState.ACTIVE
            trace_ids = self._flows.take_trace_ids(flow.flow_id, final=done) if self._flows is not None else []
            attributes = flow_log_attributes(flow, trace_ids)
            if self._flows is not None:
                attributes.update(self._flows.peer_attributes(flow))
            record = LogRecord(
                timestamp=flow.end_ns, observed_timestamp=time.time_ns(), severity_text="INFO",
                severity_number=SeverityNumber.INFO, body=f"tcp flow {flow.state.value}",
                attributes=attributes, event_name="otel_ebpf.tcp.flow",
            )
            if not self._batch and not self._log_batch:
                self._batch_started = time.monotonic()
            self._log_batch.append(ReadableLogRecord(record, resource, self._builder.instrumentation_scope))

    def _hand_over(self) -> None:
        if self._log_batch:
            logs, self._log_batch = self._log_batch, []
            self._enqueue_export(_LogBatch(logs))
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if sum(1 for x in self._export_queue if not isinstance(x, _Flush)) >= self._max_export_batches:
            self._self.add(EXPORT_DROPPED, len(batch))
            return
        self._enqueue_export(batch)

    def _enqueue_export(self, item: Any) -> None:
        self._export_queue.append(item)
        self._export_wakeup.set()

    # -- exporter thread -------------------------------------------------------------------

    def _export_loop(self) -> None:
        name_os_thread()
        next_metrics = time.monotonic() + self._metric_interval
        queue = self._export_queue
        while True:
            try:
                item = queue.popleft()
            except IndexError:
                item = None
            if item is None:
                now = time.monotonic()
                if now >= next_metrics:
                    self._export_metrics()
                    next_metrics = now + self._metric_interval
                    continue
                self._export_wakeup.clear()
                if queue:
                    continue
                self._export_wakeup.wait(max(0.0, next_metrics - now))
                continue
            if isinstance(item, _Flush):
                self._export_metrics()
                next_metrics = time.monotonic() + self._metric_interval
                if not item.final:
                    self._flush_exporters()
                item.done.set()
                if item.final:
                    return
                continue
            if type(item) is _LogBatch:
                self._export_logs(item.records)
                continue
            self._export_spans(item)

    def _export_logs(self, records: list[ReadableLogRecord]) -> None:
        # Flow records come due together (thousands when many connections close at once) and the
        # SDK's OTLP log encoders build a whole request as protobuf objects (~10 KiB per record
        # while encoding): requests of at most max_batch records keep that to a few MiB.
        step = self._max_batch
        for start in range(0, len(records), step):
            self._export_batch(self._log_exporters, records[start:start + step], LogRecordExportResult.SUCCESS,
                               EXPORT_LOGS, "logs")

    def _export_spans(self, batch: list[ReadableSpan]) -> None:
        self._export_batch(self._span_exporters, batch, SpanExportResult.SUCCESS, EXPORT_SPANS, "traces")

    def _export_batch(self, exporters: list, batch: list, success, counter: str, signal: str) -> None:
        """``batch`` to each exporter; what each exported or failed is counted (an exporter that
        raises counts as failed: exporters must not stop the pipeline)."""
        for exporter in exporters:
            try:
                result = exporter.export(batch)
            except Exception:
                result = None
                _logger.debug("%s exporter %r raised", signal, exporter, exc_info=True)
            if result is success:
                self._self.add(counter, len(batch), {"exporter": type(exporter).__name__})
            else:
                self._self.add(EXPORT_FAILED, 1, {"exporter": type(exporter).__name__, "signal": signal})

    def _export_metrics(self) -> None:
        if not self._metric_exporters:
            return
        try:
            data = self._aggregator.collect()
        except Exception:
            self._self.add(ERRORS)
            _logger.debug("metrics collection failed", exc_info=True)
            return
        if not data.resource_metrics:
            return
        timeout_ms = self._export_timeout_s * 1000
        for exporter in self._metric_exporters:
            try:
                result = exporter.export(data, timeout_millis=timeout_ms)
            except Exception:
                result = None
                _logger.debug("metric exporter %r raised", exporter, exc_info=True)
            if result is not MetricExportResult.SUCCESS:
                self._self.add(EXPORT_FAILED, 1, {"exporter": type(exporter).__name__, "signal": "metrics"})

    def _flush_exporters(self) -> None:
        timeout_ms = int(self._export_timeout_s * 1000)
        for exporter in [*self._span_exporters, *self._metric_exporters, *self._log_exporters]:
            try:
                exporter.force_flush(timeout_ms)
            except Exception:
                _logger.debug("force_flush of %r raised", exporter, exc_info=True)

    def _shutdown_exporters(self) -> None:
        for exporter in [*self._span_exporters, *self._metric_exporters, *self._log_exporters]:
            try:
                exporter.shutdown()
            except Exception:
                _logger.debug("shutdown of %r raised", exporter, exc_info=True)

    # -- not started: run the stages on the caller's thread ------------------------------

    def _drain_inline(self, *, final: bool) -> None:
        while True:
            try:
                item = self._queue.popleft()
            except IndexError:
                break
            if isinstance(item, _Flush):
                item.done.set()
                continue
            kind = type(item)
            if kind is TcpFlow:
                self._handle_flow(item)
            elif kind is DnsLookup:
                self._handle_dns(item)
            else:
                self._handle(item)
            if self._pending_flows:
                self._release_flows(final=False)
            if len(self._batch) >= self._max_batch:
                batch, self._batch = self._batch, []
                self._export_spans(batch)
        self._release_flows(final=True)
        if self._batch:
            batch, self._batch = self._batch, []
            self._export_spans(batch)
        if self._log_batch:
            logs, self._log_batch = self._log_batch, []
            self._export_logs(logs)
        self._export_metrics()
        if not final:
            self._flush_exporters()
