"""TCP flows as telemetry: network metrics, flow logs, and the trace ids seen on each connection.

Usage::

    flows = FlowTelemetry(max_series=10_000)
    flows.note_span(exchange.connection.sock_id, span.context.trace_id)   # every exchange span
    record = flows.record(flow, resource)       # metrics; returns the flow's log record
    metrics = flows.collect(now_ns)             # [(Resource, [Metric, ...]), ...]

The schema (names, units, attributes, and why they carry the project's prefix) is
docs/telemetry.md. In short: semantic conventions have no per-connection byte, RTT,
retransmission or reset metrics (``process.network.io`` is per process), so these are
``otel_ebpf.tcp.*``, with semconv attribute names wherever one fits (``server.address``,
``server.port``, ``network.peer.address``, ``network.transport``, ``network.type``,
``network.io.direction``, ``error.type``). Ephemeral ports never become attributes: a flow's
``server.port`` is its listening side, found from the role the kernel saw.

Counters advance by each record's interval fields, so a flow reported every 15 s and once at
close adds up to its totals exactly once. Series are bounded (``max_series``); past the bound a
measurement goes to one overflow series per metric (``otel_ebpf.metrics.overflow`` = true).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from itertools import islice
from typing import Any

from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    Metric,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.resources import Resource

from otel_ebpf.records import FlowState, Role, TcpFlow

__all__ = ["FLOW_METRICS", "FlowTelemetry", "flow_attributes", "flow_log_attributes", "server_side"]

BYTES = "otel_ebpf.tcp.bytes"
OPENED = "otel_ebpf.tcp.connections.opened"
CLOSED = "otel_ebpf.tcp.connections.closed"
FAILED = "otel_ebpf.tcp.connections.failed"
RETRANSMITS = "otel_ebpf.tcp.retransmits"
RESETS = "otel_ebpf.tcp.resets"
RTT = "otel_ebpf.tcp.rtt"
DURATION = "otel_ebpf.tcp.connection.duration"

_RTT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
_DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 3600.0)

# name -> (kind, unit, description, histogram bounds)
FLOW_METRICS: dict[str, tuple[str, str, str, tuple[float, ...] | None]] = {
    BYTES: ("sum", "By", "Bytes carried by TCP connections: acknowledged by the peer (transmit) or received.",
            None),
    OPENED: ("sum", "{connection}", "TCP connections that reached ESTABLISHED.", None),
    CLOSED: ("sum", "{connection}", "Established TCP connections that closed.", None),
    FAILED: ("sum", "{connection}", "TCP connects that never reached ESTABLISHED (error.type says why).", None),
    RETRANSMITS: ("sum", "{segment}", "TCP segments retransmitted.", None),
    RESETS: ("sum", "{reset}", "TCP resets sent (transmit) or received (receive).", None),
    RTT: ("histogram", "s", "Smoothed round-trip time of TCP connections, one sample per flow record.",
          _RTT_BUCKETS),
    DURATION: ("histogram", "s", "Lifetime of closed TCP connections.", _DURATION_BUCKETS),
}

_CUMULATIVE = AggregationTemporality.CUMULATIVE
_OVERFLOW_ATTRS = {"otel_ebpf.metrics.overflow": True}
_ROLE_NAMES = {Role.CLIENT: "client", Role.SERVER: "server", Role.UNKNOWN: "unknown"}
_BOUNDED_PEER_KEYS = ("service.peer.name", "service.peer.namespace", "otel_ebpf.peer.k8s.workload.kind",
                      "otel_ebpf.peer.k8s.workload.name")
_MAX_TRACE_IDS = 32  # per flow and interval, in the flow log
_MAX_JOINED_FLOWS = 65536  # connections whose recent trace ids are remembered


def _forget_oldest(table: dict, limit: int) -> None:
    """Past ``limit`` entries, forget the oldest sixteenth of ``table`` in one pass.

    Per-connection tables are plain dicts (an OrderedDict entry costs about 50 bytes more), kept in
    insertion order. Evicting one entry per insert with ``next(iter(table))`` would rescan the
    deleted slots at the front each time; a batch amortises that."""
    if len(table) > limit:
        for key in list(islice(table, len(table) - limit + limit // 16)):
            del table[key]


def server_side(flow: TcpFlow) -> tuple[str, int]:
    """(address, port) of the listening end: the peer of a client, this host for a server. For a
    connection opened before the agent started (role unknown) the lower port is taken as the
    server's (ephemeral ports are high)."""
    if flow.role == Role.SERVER:
        return flow.local_address, flow.local_port
    if flow.role == Role.CLIENT or flow.remote_port <= flow.local_port:
        return flow.remote_address, flow.remote_port
    return flow.local_address, flow.local_port


def flow_attributes(flow: TcpFlow) -> dict[str, Any]:
    """Metric attributes of a flow: bounded cardinality (no ephemeral port, ever)."""
    address, port = server_side(flow)
    attrs: dict[str, Any] = {
        "otel_ebpf.tcp.role": _ROLE_NAMES[flow.role],
        "server.address": address,
        "server.port": port,
        "network.peer.address": flow.remote_address,
        "network.transport": "tcp",
        "network.type": "ipv6" if flow.family == 6 else "ipv4",
    }
    return attrs


def flow_log_attributes(flow: TcpFlow, trace_ids: list[int]) -> dict[str, Any]:
    """Everything a flow log record says about one flow (see docs/telemetry.md)."""
    attrs: dict[str, Any] = {
        "otel_ebpf.flow.id": f"{flow.flow_id:016x}",
        "otel_ebpf.flow.state": flow.state.value,
        "otel_ebpf.tcp.role": _ROLE_NAMES[flow.role],
        "network.transport": "tcp",
        "network.type": "ipv6" if flow.family == 6 else "ipv4",
        "network.local.address": flow.local_address,
        "network.local.port": flow.local_port,
        "network.peer.address": flow.remote_address,
        "network.peer.port": flow.remote_port,
        "otel_ebpf.flow.start": flow.start_ns,
        "otel_ebpf.flow.duration": flow.duration_ns / 1e9,
        "otel_ebpf.tcp.bytes.sent": flow.bytes_sent,
        "otel_ebpf.tcp.bytes.received": flow.bytes_received,
        "otel_ebpf.tcp.segments.sent": flow.segments_sent,
        "otel_ebpf.tcp.segments.received": flow.segments_received,
        "otel_ebpf.tcp.retransmits": flow.retransmits,
        "otel_ebpf.tcp.resets.sent": flow.resets_sent,
        "otel_ebpf.tcp.resets.received": flow.resets_received,
        "otel_ebpf.tcp.interval.bytes.sent": flow.interval_bytes_sent,
        "otel_ebpf.tcp.interval.bytes.received": flow.interval_bytes_received,
        "otel_ebpf.tcp.interval.retransmits": flow.interval_retransmits,
        "process.pid": flow.pid,
    }
    if flow.comm:
        attrs["process.executable.name"] = flow.comm
    if flow.srtt_us:
        attrs["otel_ebpf.tcp.rtt"] = flow.srtt_us / 1e6
    if flow.min_rtt_us:
        attrs["otel_ebpf.tcp.min_rtt"] = flow.min_rtt_us / 1e6
    if flow.failure:
        attrs["error.type"] = flow.failure
    if flow.partial:
        attrs["otel_ebpf.flow.partial"] = True
    if flow.cgroup_id:
        attrs["otel_ebpf.cgroup.id"] = flow.cgroup_id
    if trace_ids:
        attrs["otel_ebpf.flow.trace_ids"] = [f"{t:032x}" for t in trace_ids]
    return attrs


class _Series:
    __slots__ = ("attributes", "counts", "max", "min", "start_ns", "sum", "value")

    def __init__(self, attributes: dict[str, Any], start_ns: int, buckets: int) -> None:
        self.attributes = attributes
        self.start_ns = start_ns
        self.value = 0
        self.counts = [0] * buckets if buckets else None
        self.sum = 0.0
        self.min = float("inf")
        self.max = float("-inf")


class FlowTelemetry:
    """Flow metrics (cumulative, per Resource) and the trace ids each connection carried.
    Thread-safe; meant to be fed from one pipeline worker and collected from the exporter."""

    def __init__(self, *, max_series: int = 10_000, peer=None) -> None:
        """``peer(address) -> dict | None``: the remote end's identity attributes (Kubernetes), which
        then replace ``network.peer.address`` on metrics (workloads are bounded, pod IPs churn)."""
        self._max_series = max_series
        self._peer = peer
        self._lock = threading.Lock()
        self._series: dict[Resource, dict[tuple, _Series]] = {}
        self._n_series = 0
        self.overflowed = 0
        self._opened: dict[int, None] = {}  # flows already counted as opened
        self._resets: dict[int, tuple[int, int]] = {}  # flow -> (sent, received) already counted
        # sock id -> the trace id (an int: one trace per connection is the common case), or the
        # list of trace ids, of the spans seen since the connection's last flow record
        self._traces: dict[int, int | list[int]] = {}

    # -- the join with spans ------------------------------------------------------------------

    def note_span(self, sock_id: int, trace_id: int) -> None:
        """A span was made from an exchange on connection ``sock_id`` (= the flow id)."""
        traces = self._traces
        ids = traces.get(sock_id)
        if ids is None:
            traces[sock_id] = trace_id
            _forget_oldest(traces, _MAX_JOINED_FLOWS)
        elif type(ids) is int:
            if ids != trace_id:
                traces[sock_id] = [ids, trace_id]
        elif len(ids) < _MAX_TRACE_IDS and trace_id not in ids:
            ids.append(trace_id)

    def take_trace_ids(self, flow_id: int, *, final: bool) -> list[int]:
        """Trace ids seen on the connection since its previous record (forgotten once taken, at
        an interim record as at its end)."""
        ids = self._traces.pop(flow_id, None)
        if ids is None:
            return []
        return [ids] if type(ids) is int else ids

    # -- metrics ------------------------------------------------------------------------------

    def peer_attributes(self, flow: TcpFlow) -> dict[str, Any]:
        if self._peer is None:
            return {}
        return self._peer(flow.remote_address) or {}

    def record(self, flow: TcpFlow, resource: Resource) -> None:
        attrs = flow_attributes(flow)
        peer = self.peer_attributes(flow)
        if peer:
            del attrs["network.peer.address"]
            attrs.update((k, v) for k, v in peer.items() if k in _BOUNDED_PEER_KEYS)
        now = flow.end_ns
        final = flow.state is not FlowState.ACTIVE
        with self._lock:
            if flow.state is FlowState.FAILED:
                self._add(FAILED, resource, {**attrs, "error.type": flow.failure or "unknown"}, 1, now)
            else:
                if flow.flow_id not in self._opened and not flow.partial:
                    self._add(OPENED, resource, attrs, 1, now)
                if not final:
                    self._opened[flow.flow_id] = None
                    _forget_oldest(self._opened, _MAX_JOINED_FLOWS)
                else:
                    self._opened.pop(flow.flow_id, None)
                    self._add(CLOSED, resource, attrs, 1, now)
                    self._observe(DURATION, resource, attrs, flow.duration_ns / 1e9, now)
                if flow.interval_bytes_sent:
                    self._add(BYTES, resource, {**attrs, "network.io.direction": "transmit"},
                              flow.interval_bytes_sent, now)
                if flow.interval_bytes_received:
                    self._add(BYTES, resource, {**attrs, "network.io.direction": "receive"},
                              flow.interval_bytes_received, now)
                if flow.srtt_us:
                    self._observe(RTT, resource, attrs, flow.srtt_us / 1e6, now)
            if flow.interval_retransmits:
                self._add(RETRANSMITS, resource, attrs, flow.interval_retransmits, now)
            sent0, received0 = self._resets.pop(flow.flow_id, (0, 0))
            if flow.resets_sent > sent0:
                self._add(RESETS, resource, {**attrs, "network.io.direction": "transmit"}, flow.resets_sent - sent0,
                          now)
            if flow.resets_received > received0:
                self._add(RESETS, resource, {**attrs, "network.io.direction": "receive"},
                          flow.resets_received - received0, now)
            if not final and (flow.resets_sent or flow.resets_received):
                self._resets[flow.flow_id] = (flow.resets_sent, flow.resets_received)
                _forget_oldest(self._resets, _MAX_JOINED_FLOWS)

    def _slot(self, metric: str, resource: Resource, attrs: dict[str, Any], now: int) -> _Series:
        by_key = self._series.setdefault(resource, {})
        key = (metric, tuple(sorted(attrs.items())))
        series = by_key.get(key)
        if series is None:
            bounds = FLOW_METRICS[metric][3]
            if self._n_series >= self._max_series:
                self.overflowed += 1
                key = (metric, ("overflow",))
                series = by_key.get(key)
                if series is None:
                    series = by_key[key] = _Series(dict(_OVERFLOW_ATTRS), now, len(bounds) + 1 if bounds else 0)
                return series
            series = by_key[key] = _Series(attrs, now, len(bounds) + 1 if bounds else 0)
            self._n_series += 1
        return series

    def _add(self, metric: str, resource: Resource, attrs: dict[str, Any], value: int, now: int) -> None:
        self._slot(metric, resource, attrs, now).value += value

    def _observe(self, metric: str, resource: Resource, attrs: dict[str, Any], value: float, now: int) -> None:
        series = self._slot(metric, resource, attrs, now)
        series.counts[bisect_left(FLOW_METRICS[metric][3], value)] += 1
        series.value += 1
        series.sum += value
        series.min = min(series.min, value)
        series.max = max(series.max, value)

    def collect(self, now_ns: int | None = None) -> list[tuple[Resource, list[Metric]]]:
        now = time.time_ns() if now_ns is None else now_ns
        out = []
        with self._lock:
            for resource, by_key in self._series.items():
                points: dict[str, list] = {}
                for (metric, _), s in by_key.items():
                    kind, _unit, _desc, bounds = FLOW_METRICS[metric]
                    start = min(s.start_ns, now)
                    if kind == "sum":
                        points.setdefault(metric, []).append(NumberDataPoint(dict(s.attributes), start, now, s.value))
                    else:
                        points.setdefault(metric, []).append(HistogramDataPoint(
                            attributes=dict(s.attributes), start_time_unix_nano=start, time_unix_nano=now,
                            count=s.value, sum=s.sum, bucket_counts=list(s.counts), explicit_bounds=bounds,
                            min=s.min if s.value else 0.0, max=s.max if s.value else 0.0))
                metrics = []
                for metric in sorted(points):
                    kind, unit, desc, _ = FLOW_METRICS[metric]
                    data = (Sum(points[metric], _CUMULATIVE, True) if kind == "sum"
                            else Histogram(points[metric], _CUMULATIVE))
                    metrics.append(Metric(metric, desc, unit, data))
                if metrics:
                    out.append((resource, metrics))
        return out
