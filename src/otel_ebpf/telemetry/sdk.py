"""Library path: exchanges into *your* OpenTelemetry SDK providers.

Usage::

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.metrics import MeterProvider
    from otel_ebpf.telemetry.sdk import SdkTelemetry

    telemetry = SdkTelemetry(tracer_provider=my_tracer_provider, meter_provider=my_meter_provider)
    receiver = HttpReceiver(HttpReceiverConfig(), telemetry)   # spans and metrics go through your providers
    receiver.start()

Defaults are the global providers (``opentelemetry.trace.get_tracer_provider()`` and
``opentelemetry.metrics.get_meter_provider()``) and the processors
``[RedactionProcessor(), RoutesProcessor()]`` (default configs: redaction on, url.template
guessed, no routes). Pass ``processors=[...]`` to replace them.

For each exchange, ``consume`` starts a span with ``tracer.start_span`` (name, kind, attributes
and status from :mod:`otel_ebpf.telemetry.semantics`, ``start_time=exchange.start_ns``), under
the remote parent from ``traceparent``/``tracestate`` when valid (a ``NonRecordingSpan``
carrying the remote ``SpanContext``; otherwise an empty Context, never the calling thread's
current span), ends it at ``exchange.end_ns``, and records the duration in
``http.server.request.duration`` / ``http.client.request.duration`` histograms created with the
semconv bucket advice. Your sampler decides as usual.

**Identity.** The providers' single Resource describes the program hosting this library, and
``service.name`` cannot be overridden per span. The watched process is therefore named by span
attributes: ``process.pid``, ``process.executable.name`` (semconv process attributes) and
``otel_ebpf.service.name`` (the inferred service name; project prefix, because semconv has no
span attribute for it). Metric points carry ``otel_ebpf.service.name`` too, so RED metrics stay
per service (set ``service_metric_attribute=False`` to leave it out).

``consume`` is thread-safe and never raises (failures are counted in ``errors`` and, when given,
``self_metrics``). It runs on the caller's thread: pair it with a BatchSpanProcessor.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from opentelemetry import metrics as metrics_api
from opentelemetry import trace as trace_api
from opentelemetry.context import Context
from opentelemetry.semconv.metrics.http_metrics import (
    HTTP_CLIENT_REQUEST_DURATION,
    HTTP_SERVER_REQUEST_DURATION,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from otel_ebpf.processinfo import ProcessInfoCache
from otel_ebpf.processors.redaction import RedactionProcessor
from otel_ebpf.processors.routes import RoutesProcessor
from otel_ebpf.records import Exchange, Role
from otel_ebpf.telemetry.metrics import DEFAULT_DURATION_BUCKETS, SelfMetrics
from otel_ebpf.telemetry.pipeline import ExchangeProcessor
from otel_ebpf.telemetry.spans import PARENT_SOURCE, span_link
from otel_ebpf.telemetry.semantics import (
    OTEL_EBPF_SERVICE_NAME,
    SCHEMA_URL,
    SCOPE_NAME,
    SCOPE_VERSION,
    describe,
    process_attributes,
)

__all__ = ["SdkTelemetry"]

_logger = logging.getLogger(__name__)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NOT_SAMPLED = TraceFlags(TraceFlags.DEFAULT)


class SdkTelemetry:
    """Exchange consumer that emits through SDK providers (see the module docstring)."""

    def __init__(
        self,
        *,
        tracer_provider: trace_api.TracerProvider | None = None,
        meter_provider: metrics_api.MeterProvider | None = None,
        processors: Sequence[ExchangeProcessor] | None = None,
        process_info: ProcessInfoCache | None = None,
        self_metrics: SelfMetrics | None = None,
        service_metric_attribute: bool = True,
    ) -> None:
        self._tracer = trace_api.get_tracer(
            SCOPE_NAME, SCOPE_VERSION, tracer_provider=tracer_provider, schema_url=SCHEMA_URL
        )
        meter = metrics_api.get_meter(SCOPE_NAME, SCOPE_VERSION, meter_provider=meter_provider, schema_url=SCHEMA_URL)
        self._meter = meter
        self._rpc_histograms: dict[str, object] = {}
        self._server_duration = meter.create_histogram(
            HTTP_SERVER_REQUEST_DURATION,
            unit="s",
            description="Duration of HTTP server requests.",
            explicit_bucket_boundaries_advisory=DEFAULT_DURATION_BUCKETS,
        )
        self._client_duration = meter.create_histogram(
            HTTP_CLIENT_REQUEST_DURATION,
            unit="s",
            description="Duration of HTTP client requests.",
            explicit_bucket_boundaries_advisory=DEFAULT_DURATION_BUCKETS,
        )
        self._processors = (
            list(processors) if processors is not None else [RedactionProcessor(), RoutesProcessor()]
        )
        self._process_info = process_info if process_info is not None else ProcessInfoCache()
        self.process_info = self._process_info  # the receiver reads new processes into it while they live
        self._self = self_metrics
        self._service_metric_attribute = service_metric_attribute
        self.errors = 0

    def consume(self, exchange: Exchange) -> None:
        try:
            self._consume(exchange)
        except Exception:
            self.errors += 1
            if self._self is not None:
                self._self.add("otel_ebpf.sdk.errors")
            _logger.debug("dropping an exchange that failed in SdkTelemetry", exc_info=True)

    def _consume(self, exchange: Exchange) -> None:
        for processor in self._processors:
            result = processor.process(exchange)
            if result is None:
                if self._self is not None:
                    self._self.add("otel_ebpf.pipeline.filtered")
                return
            exchange = result
        sem = describe(exchange)
        info = self._process_info.get(exchange.connection.pid)
        identity = process_attributes(info)
        attributes = {**sem.attributes, **identity}

        parent = sem.parent
        links = None
        ident = exchange.trace
        if ident is not None:
            # Placed by the stitching processor. Your SDK generates its own span ids, so only a
            # parent from headers (another process's span) can be used as such; parents among our
            # own spans (thread, request id, connection pairing) become links here.
            attributes[PARENT_SOURCE] = ident.parent_source.value
            flags = _SAMPLED if ident.sampled else _NOT_SAMPLED
            links = [span_link(lk.trace_id, lk.span_id, lk.reason) for lk in ident.links]
            if ident.parent_span_id is not None and ident.remote_parent:
                remote = SpanContext(ident.trace_id, ident.parent_span_id, is_remote=True, trace_flags=flags)
                context = trace_api.set_span_in_context(NonRecordingSpan(remote), Context())
            else:
                if ident.parent_span_id is not None:
                    links.append(span_link(ident.trace_id, ident.parent_span_id,
                                           f"parent-{ident.parent_source.value}", sampled=ident.sampled))
                context = Context()
        elif parent is not None:
            remote = SpanContext(
                parent.trace_id,
                parent.span_id,
                is_remote=True,
                trace_flags=_SAMPLED if parent.sampled else _NOT_SAMPLED,
                trace_state=parent.trace_state,
            )
            context = trace_api.set_span_in_context(NonRecordingSpan(remote), Context())
        else:
            context = Context()
        end = exchange.end_ns if exchange.end_ns >= exchange.start_ns else exchange.start_ns
        span = self._tracer.start_span(
            sem.name, context=context, kind=sem.kind, attributes=attributes, start_time=exchange.start_ns, links=links
        )
        if sem.status.status_code is not trace_api.StatusCode.UNSET:
            span.set_status(sem.status)
        span.end(end_time=end)

        mattrs = sem.metric_attributes
        if self._service_metric_attribute:
            mattrs = {**mattrs, OTEL_EBPF_SERVICE_NAME: identity[OTEL_EBPF_SERVICE_NAME]}
        seconds = (end - exchange.start_ns) / 1e9
        if sem.metrics is not None:  # e.g. rpc.server.call.duration for gRPC
            for name in sem.metrics:
                histogram, scale = self._rpc_histogram(name)
                histogram.record(seconds * scale, attributes=mattrs)
            return
        role = exchange.connection.role
        if role == Role.SERVER:
            histogram = self._server_duration
        elif role == Role.CLIENT:
            histogram = self._client_duration
        else:
            return
        histogram.record(seconds, attributes=mattrs)

    def _rpc_histogram(self, name: str):
        found = self._rpc_histograms.get(name)
        if found is None:
            ms = not name.endswith(".call.duration")  # the older experimental rpc.*.duration are in ms
            found = self._rpc_histograms[name] = (self._meter.create_histogram(
                name, unit="ms" if ms else "s", description=f"Duration of RPC calls ({name}).",
                explicit_bucket_boundaries_advisory=None if ms else DEFAULT_DURATION_BUCKETS), 1000.0 if ms else 1.0)
        return found
