"""Agent path metrics: HTTP duration histograms per watched process, and the agent's own counters.

Usage::

    from otel_ebpf.telemetry.metrics import HttpMetricsAggregator, SelfMetrics

    self_metrics = SelfMetrics()
    self_metrics.add("otel_ebpf.ringbuf.lost", 3)
    self_metrics.register(lambda: {"otel_ebpf.http1.parse_errors": parser.errors})

    metrics = HttpMetricsAggregator(self_metrics=self_metrics, agent_resource=builder.agent_resource)
    metrics.record(exchange, span.resource)            # http.{server,client}.request.duration
    data = metrics.collect()                           # MetricsData for any MetricExporter
    exporter.export(data)

A MeterProvider per watched process (the only SDK way to give each its own Resource) would cost
far more than these few dictionaries, so the aggregation is done here and handed to the SDK's
exporters as ``MetricsData``:

* ``http.server.request.duration`` (Role.SERVER) and ``http.client.request.duration``
  (Role.CLIENT), unit ``s``, explicit-bucket histograms with the semconv-advised boundaries,
  **cumulative** temporality (a series' ``start_time_unix_nano`` is the wall-clock time of its
  first measurement);
  exchanges of unknown role are not recorded. The series key is (metric, Resource, metric
  attributes from :func:`otel_ebpf.telemetry.semantics.metric_attributes`).
* At most ``max_series`` series exist. Past that, a measurement for a new attribute set goes to
  its Resource's ``otel.metric.overflow=true`` series (as the SDK's cardinality limit does) or,
  with ``overflow_series=False`` or for a Resource that has no series yet, is dropped. Either way
  it is counted in ``otel_ebpf.metrics.overflow``. A series not updated for ``series_ttl_s``
  (measured on the agent's monotonic clock, not the exchanges' timestamps) is removed at the next ``collect()`` (``otel_ebpf.metrics.series_expired``); should it come back
  it starts again from zero with a new start time, which is how cumulative resets are signalled.
* ``collect()`` returns one ``ResourceMetrics`` per distinct Resource, plus the
  :class:`SelfMetrics` counters as monotonic cumulative Sums under ``agent_resource``
  (``service.name`` ``otel-ebpf``). Resources are compared by value: two ResourceMetrics with
  equal Resources would overwrite each other in the OTLP encoder.

:class:`SelfMetrics` is the agent's counter registry: ``add(name, value, attributes)``
(thread-safe), ``register(fn)`` for components that keep their own cumulative counters
(``fn() -> {name: value}``, called at each collect), ``snapshot()`` totals by name. Names follow
``otel_ebpf.<component>.<what>``: ``otel_ebpf.ringbuf.events``, ``otel_ebpf.ringbuf.lost``,
``otel_ebpf.http1.parse_errors``, ``otel_ebpf.exchanges``, ``otel_ebpf.pipeline.dropped``,
``otel_ebpf.export.failed`` …
"""

from __future__ import annotations

import logging
import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    MetricsData,
    NumberDataPoint,
    ResourceMetrics,
    ScopeMetrics,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv._incubating.metrics.rpc_metrics import (
    RPC_CLIENT_CALL_DURATION,
    RPC_CLIENT_DURATION,
    RPC_SERVER_CALL_DURATION,
    RPC_SERVER_DURATION,
)
from opentelemetry.semconv.metrics.http_metrics import (
    HTTP_CLIENT_REQUEST_DURATION,
    HTTP_SERVER_REQUEST_DURATION,
)

from otel_ebpf.records import Exchange, Role
from otel_ebpf.telemetry.semantics import SCHEMA_URL, SCOPE_NAME, SCOPE_VERSION, metric_attributes

__all__ = [
    "DEFAULT_DURATION_BUCKETS",
    "OVERFLOW_ATTRIBUTE",
    "HttpMetricsAggregator",
    "SelfMetrics",
]

_logger = logging.getLogger(__name__)

DEFAULT_DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""Bucket boundaries semconv advises for ``http.*.request.duration`` (seconds)."""

OVERFLOW_ATTRIBUTE = "otel.metric.overflow"
"""The attribute of the overflow series, as in the metrics SDK specification (no semconv constant)."""

_MS_BUCKETS = (0.0, 5.0, 10.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 750.0, 1000.0, 2500.0, 5000.0, 7500.0,
               10000.0)  # the SDK's default explicit buckets, which dashboards of the old ms metrics expect


class _MetricSpec:
    __slots__ = ("description", "unit", "scale", "bounds")

    def __init__(self, description: str, unit: str, scale: float, bounds: tuple[float, ...] | None):
        self.description = description
        self.unit = unit
        self.scale = scale  # seconds -> unit
        self.bounds = bounds  # None: the aggregator's boundaries


_METRICS = {
    HTTP_SERVER_REQUEST_DURATION: _MetricSpec("Duration of HTTP server requests.", "s", 1.0, None),
    HTTP_CLIENT_REQUEST_DURATION: _MetricSpec("Duration of HTTP client requests.", "s", 1.0, None),
    RPC_SERVER_CALL_DURATION: _MetricSpec("Measures the duration of an incoming Remote Procedure Call (RPC).", "s",
                                          1.0, None),
    RPC_CLIENT_CALL_DURATION: _MetricSpec("Measures the duration of an outgoing Remote Procedure Call (RPC).", "s",
                                          1.0, None),
    # the older experimental names, with OTEL_SEMCONV_STABILITY_OPT_IN=rpc/dup
    RPC_SERVER_DURATION: _MetricSpec("Measures the duration of inbound RPC.", "ms", 1000.0, _MS_BUCKETS),
    RPC_CLIENT_DURATION: _MetricSpec("Measures the duration of outbound RPC.", "ms", 1000.0, _MS_BUCKETS),
    "dns.lookup.duration": _MetricSpec("Measures the time taken to perform a DNS lookup.", "s", 1.0,
                                       (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
                                        10.0)),
}
_OVERFLOW = "otel_ebpf.metrics.overflow"
_EXPIRED = "otel_ebpf.metrics.series_expired"
_UNKNOWN_ROLE = "otel_ebpf.metrics.unknown_role"
_CALLBACK_ERRORS = "otel_ebpf.self_metrics.callback_errors"
_SELF_DROPPED = "otel_ebpf.self_metrics.dropped"
_CUMULATIVE = AggregationTemporality.CUMULATIVE

AttrKey = tuple[tuple[str, Any], ...]


def _key(attributes: Mapping[str, Any] | None) -> AttrKey:
    return tuple(sorted(attributes.items())) if attributes else ()


class SelfMetrics:
    """Thread-safe named monotonic counters of the agent itself (see the module docstring)."""

    def __init__(self, *, max_series: int = 1000) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[str, AttrKey], int | float] = {}
        self._callbacks: list[Callable[[], Mapping[str, int | float]]] = []
        self._meta: dict[str, tuple[str, str]] = {}
        self._max_series = max_series
        self._dropped = 0
        self._callback_errors = 0
        self.start_time_ns = time.time_ns()

    def add(self, name: str, value: int | float = 1, attributes: Mapping[str, Any] | None = None) -> None:
        key = (name, _key(attributes) if attributes else ())
        with self._lock:
            current = self._values.get(key)
            if current is None:
                if len(self._values) >= self._max_series:
                    self._dropped += 1
                    return
                self._values[key] = value
            else:
                self._values[key] = current + value

    def describe(self, name: str, *, description: str = "", unit: str = "") -> None:
        """Optional description and UCUM unit exported with counter ``name``."""
        self._meta[name] = (description, unit)

    def register(self, fn: Callable[[], Mapping[str, int | float]]) -> Callable[[], Mapping[str, int | float]]:
        """Add a callback returning cumulative ``{name: value}``; called at every collect/snapshot."""
        with self._lock:
            self._callbacks.append(fn)
        return fn

    def get(self, name: str, attributes: Mapping[str, Any] | None = None) -> int | float:
        """Value of one counter series (0 when never added); callbacks are not consulted."""
        with self._lock:
            return self._values.get((name, _key(attributes)), 0)

    def series(self) -> list[tuple[str, dict[str, Any], int | float]]:
        """Every (name, attributes, value), callbacks and the registry's own counters included."""
        with self._lock:
            out = [(name, dict(attrs), value) for (name, attrs), value in self._values.items()]
            callbacks = list(self._callbacks)
        for fn in callbacks:
            try:
                values = fn()
                out.extend((str(name), {}, value) for name, value in values.items())
            except Exception:
                self._callback_errors += 1
                _logger.debug("self-metrics callback %r failed", fn, exc_info=True)
        if self._dropped:
            out.append((_SELF_DROPPED, {}, self._dropped))
        if self._callback_errors:
            out.append((_CALLBACK_ERRORS, {}, self._callback_errors))
        # one point per (name, attributes): a callback may report a name that is also add()ed
        merged: dict[tuple[str, AttrKey], tuple[str, dict[str, Any], int | float]] = {}
        for name, attrs, value in out:
            key = (name, _key(attrs))
            prev = merged.get(key)
            merged[key] = (name, attrs, value if prev is None else prev[2] + value)
        return list(merged.values())

    def snapshot(self) -> dict[str, int | float]:
        """Totals by counter name (all attribute sets summed)."""
        totals: dict[str, int | float] = {}
        for name, _, value in self.series():
            totals[name] = totals.get(name, 0) + value
        return totals

    def to_metrics(self, now_ns: int) -> list[Metric]:
        """The counters as SDK ``Metric`` objects (monotonic cumulative Sums)."""
        points: dict[str, list[NumberDataPoint]] = {}
        start = min(self.start_time_ns, now_ns)
        for name, attrs, value in self.series():
            points.setdefault(name, []).append(NumberDataPoint(attrs, start, now_ns, value))
        metrics = []
        for name in sorted(points):
            description, unit = self._meta.get(name, ("", ""))
            metrics.append(Metric(name, description, unit, Sum(points[name], _CUMULATIVE, True)))
        return metrics


class _Series:
    __slots__ = ("attributes", "bounds", "count", "counts", "last_used", "max", "min", "start_ns", "sum")

    def __init__(self, attributes: dict[str, Any], bounds: tuple[float, ...], start_ns: int, now: float) -> None:
        self.attributes = attributes
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")
        self.start_ns = start_ns  # wall clock, first measurement
        self.last_used = now  # monotonic, for the idle TTL


class _ResourceSlot:
    __slots__ = ("overflow", "resource", "series")

    def __init__(self, resource: Resource) -> None:
        self.resource = resource
        self.series: dict[tuple[str, AttrKey], _Series] = {}
        self.overflow: dict[str, _Series] = {}


class HttpMetricsAggregator:
    """Cumulative HTTP duration histograms keyed by (metric, Resource, attributes). Thread-safe."""

    def __init__(
        self,
        *,
        max_series: int = 4000,
        boundaries: Sequence[float] = DEFAULT_DURATION_BUCKETS,
        self_metrics: SelfMetrics | None = None,
        agent_resource: Resource | None = None,
        overflow_series: bool = True,
        series_ttl_s: float | None = 1800.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_series < 1:
            raise ValueError("max_series must be positive")
        bounds = tuple(float(b) for b in boundaries)
        if any(b2 <= b1 for b1, b2 in zip(bounds, bounds[1:])):
            raise ValueError("boundaries must be strictly increasing")
        self._bounds = bounds
        self._max_series = max_series
        self._self_metrics = self_metrics
        self._sources: list = []
        self._agent_resource = agent_resource
        self._overflow_enabled = overflow_series
        self._ttl_s = series_ttl_s
        self._clock = clock
        self._scope = InstrumentationScope(SCOPE_NAME, SCOPE_VERSION, SCHEMA_URL)
        self._lock = threading.Lock()
        self._slots: dict[Resource, _ResourceSlot] = {}
        self._by_id: dict[int, tuple[Resource, _ResourceSlot]] = {}
        self._n_series = 0
        self.overflowed = 0
        self.expired = 0

    @property
    def series_count(self) -> int:
        """Series held now, overflow series included."""
        return self._n_series

    def record(
        self, exchange: Exchange, resource: Resource, *, attributes: Mapping[str, Any] | None = None,
        metrics: Sequence[str] | None = None,
    ) -> None:
        """Add the exchange's duration; ``attributes`` defaults to ``metric_attributes(exchange)``.

        ``metrics`` names the histograms to record into (e.g. ``rpc.server.call.duration``); by
        default the HTTP duration histogram of the exchange's role.
        """
        if metrics is None:
            role = exchange.connection.role
            if role == Role.SERVER:
                metrics = (HTTP_SERVER_REQUEST_DURATION,)
            elif role == Role.CLIENT:
                metrics = (HTTP_CLIENT_REQUEST_DURATION,)
            else:
                if self._self_metrics is not None:
                    self._self_metrics.add(_UNKNOWN_ROLE)
                return
        if attributes is None:
            attributes = metric_attributes(exchange)
        seconds = (exchange.end_ns - exchange.start_ns) / 1e9
        if seconds < 0.0:
            seconds = 0.0
        for metric in metrics:
            spec = _METRICS[metric]
            self._record_one(metric, seconds * spec.scale, spec.bounds or self._bounds, resource, attributes)

    def add_source(self, source) -> None:
        """Also collect ``source(now_ns) -> [(Resource, [Metric, ...]), ...]`` (e.g. flow metrics)."""
        self._sources.append(source)

    def record_duration(self, metric: str, start_ns: int, end_ns: int, resource: Resource,
                        attributes: Mapping[str, Any]) -> None:
        """Add one duration to the histogram ``metric`` (a name :data:`_METRICS` knows)."""
        spec = _METRICS[metric]
        seconds = max(0.0, (end_ns - start_ns) / 1e9)
        self._record_one(metric, seconds * spec.scale, spec.bounds or self._bounds, resource, attributes)

    def _record_one(self, metric: str, duration: float, bounds: tuple[float, ...], resource: Resource,
                    attributes: Mapping[str, Any]) -> None:
        key = (metric, tuple(sorted(attributes.items())))
        overflowed = False
        now = self._clock()
        with self._lock:
            slot = self._slot(resource)
            series = slot.series.get(key) if slot is not None else None
            if series is None:
                if self._n_series < self._max_series:
                    if slot is None:
                        slot = self._new_slot(resource)
                    series = _Series(dict(attributes), bounds, time.time_ns(), now)
                    slot.series[key] = series
                    self._n_series += 1
                else:
                    overflowed = True
                    self.overflowed += 1
                    if self._overflow_enabled and slot is not None:
                        series = slot.overflow.get(metric)
                        if series is None:
                            series = _Series({OVERFLOW_ATTRIBUTE: True}, bounds, time.time_ns(), now)
                            slot.overflow[metric] = series
                            self._n_series += 1
            if series is not None:
                series.counts[bisect_left(bounds, duration)] += 1
                series.count += 1
                series.sum += duration
                if duration < series.min:
                    series.min = duration
                if duration > series.max:
                    series.max = duration
                series.last_used = now
        if overflowed and self._self_metrics is not None:
            self._self_metrics.add(_OVERFLOW)

    def _slot(self, resource: Resource) -> _ResourceSlot | None:
        hit = self._by_id.get(id(resource))
        if hit is not None and hit[0] is resource:
            return hit[1]
        slot = self._slots.get(resource)  # one hash by value for a Resource object seen first
        if slot is not None:
            if len(self._by_id) >= 4 * self._max_series:
                self._by_id.clear()
            self._by_id[id(resource)] = (resource, slot)
        return slot

    def _new_slot(self, resource: Resource) -> _ResourceSlot:
        slot = _ResourceSlot(resource)
        self._slots[resource] = slot
        self._by_id[id(resource)] = (resource, slot)
        return slot

    def collect(self, now_ns: int | None = None) -> MetricsData:
        """Cumulative state as MetricsData (one ResourceMetrics per Resource, self-metrics last)."""
        now = time.time_ns() if now_ns is None else now_ns
        idle_limit = None if self._ttl_s is None else self._clock() - self._ttl_s
        by_resource: dict[Resource, list[Metric]] = {}
        expired = 0
        with self._lock:
            for resource, slot in list(self._slots.items()):
                if idle_limit is not None:
                    expired += self._expire(slot, idle_limit)
                    if not slot.series and not slot.overflow:
                        del self._slots[resource]
                        self._by_id = {k: v for k, v in self._by_id.items() if v[1] is not slot}
                        continue
                points: dict[str, list[HistogramDataPoint]] = {}
                for (metric, _), series in slot.series.items():
                    points.setdefault(metric, []).append(self._point(series, now))
                for metric, series in slot.overflow.items():
                    points.setdefault(metric, []).append(self._point(series, now))
                metrics = by_resource.setdefault(resource, [])
                for metric in sorted(points):
                    spec = _METRICS[metric]
                    metrics.append(Metric(metric, spec.description, spec.unit, Histogram(points[metric], _CUMULATIVE)))
            self.expired += expired
        if expired and self._self_metrics is not None:
            self._self_metrics.add(_EXPIRED, expired)
        for source in self._sources:
            try:
                for resource, metrics in source(now):
                    by_resource.setdefault(resource, []).extend(metrics)
            except Exception:  # a broken source must not cost the other metrics
                if self._self_metrics is not None:
                    self._self_metrics.add(_CALLBACK_ERRORS)
        if self._self_metrics is not None and self._agent_resource is not None:
            own = self._self_metrics.to_metrics(now)
            if own:
                by_resource.setdefault(self._agent_resource, []).extend(own)
        resource_metrics = [
            ResourceMetrics(
                resource=resource,
                scope_metrics=[ScopeMetrics(scope=self._scope, metrics=metrics, schema_url=SCHEMA_URL)],
                schema_url=resource.schema_url,
            )
            for resource, metrics in by_resource.items()
            if metrics
        ]
        return MetricsData(resource_metrics=resource_metrics)

    def _expire(self, slot: _ResourceSlot, limit: float) -> int:
        stale = [k for k, s in slot.series.items() if s.last_used < limit]
        for k in stale:
            del slot.series[k]
        stale_overflow = [m for m, s in slot.overflow.items() if s.last_used < limit]
        for m in stale_overflow:
            del slot.overflow[m]
        n = len(stale) + len(stale_overflow)
        self._n_series -= n
        return n

    def _point(self, s: _Series, now: int) -> HistogramDataPoint:
        return HistogramDataPoint(
            attributes=dict(s.attributes),
            start_time_unix_nano=min(s.start_ns, now),
            time_unix_nano=now,
            count=s.count,
            sum=s.sum,
            bucket_counts=list(s.counts),
            explicit_bounds=s.bounds,
            min=s.min if s.count else 0.0,
            max=s.max if s.count else 0.0,
        )
