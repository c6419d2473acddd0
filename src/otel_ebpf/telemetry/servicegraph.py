"""Service graph metrics between services, named as the Collector's servicegraph connector and
Tempo's metrics-generator name them, so their dashboards work unchanged.

Usage::

    graph = ServiceGraph(wait_s=2.0)
    graph.record(exchange, span, service="checkout", peer="payments")   # every exchange span
    graph.expire(now_s)                       # pairs that waited too long become virtual-node edges
    graph.collect(now_ns)                     # [(Resource, [Metric, ...])] under the agent's Resource

Metrics: ``traces_service_graph_request_total``, ``traces_service_graph_request_failed_total``
(Sums), ``traces_service_graph_request_server_seconds`` and
``traces_service_graph_request_client_seconds`` (Histograms, seconds), with labels ``client``,
``server`` and ``connection_type``.

An edge is one request from a client span to the server span that served it. Tempo pairs them by
trace context (the server span's parent is the client span); the kernel sees better: both ends of
one TCP connection, so a CLIENT exchange and a SERVER exchange pair when their connection is the
same 4-tuple seen from either end, in request order (keep-alive connections carry many). This
needs no propagated context at all. Whichever half comes second completes the edge (the client's
service and the server's, each from its own Resource). A half left alone for ``wait_s`` becomes an edge to or from a virtual
node (``connection_type`` = ``virtual_node``): the peer's Kubernetes identity when known, else
``user`` for a caller outside our view, or the server's address for an uninstrumented one.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from bisect import bisect_left
from collections import OrderedDict, deque
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
from opentelemetry.trace import SpanKind, StatusCode

__all__ = ["ServiceGraph", "ServiceGraphConfig"]

REQUEST_TOTAL = "traces_service_graph_request_total"
REQUEST_FAILED_TOTAL = "traces_service_graph_request_failed_total"
SERVER_SECONDS = "traces_service_graph_request_server_seconds"
CLIENT_SECONDS = "traces_service_graph_request_client_seconds"
BUCKETS = (0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0)
"""The connector's default latency buckets."""

_CUMULATIVE = AggregationTemporality.CUMULATIVE
MAX_PENDING = 100_000  # halves waiting for their other end
MAX_EDGES = 10_000  # (client, server, connection_type) series


class _Edge:
    __slots__ = ("client_counts", "client_max", "client_min", "client_n", "client_sum", "failed", "requests",
                 "server_counts", "server_max", "server_min", "server_n", "server_sum", "start_ns")

    def __init__(self, start_ns: int) -> None:
        self.start_ns = start_ns
        self.requests = 0
        self.failed = 0
        self.server_counts = [0] * (len(BUCKETS) + 1)
        self.client_counts = [0] * (len(BUCKETS) + 1)
        self.server_n = self.client_n = 0
        self.server_sum = self.client_sum = 0.0
        self.server_min = self.client_min = float("inf")
        self.server_max = self.client_max = 0.0


class ServiceGraph:
    def __init__(self, *, resource: Resource, wait_s: float = 2.0) -> None:
        self._resource = resource
        self._wait_s = wait_s
        self._lock = threading.Lock()
        # connection (client ip, client port, server ip, server port) -> halves waiting, oldest first
        self._servers: OrderedDict[tuple, deque] = OrderedDict()
        self._clients: OrderedDict[tuple, deque] = OrderedDict()
        self._pending = 0
        self._edges: dict[tuple[str, str, str], _Edge] = {}
        self.dropped_pending = 0
        self.dropped_edges = 0

    def record(self, span, *, service: str, peer: str | None, connection: tuple[str, int, str, int],
               peer_address: str = "") -> None:
        """One exchange span. ``service``: its Resource's service.name; ``peer``: the other end's
        service name when known (Kubernetes identity), else None; ``connection``: (client ip,
        client port, server ip, server port) of its TCP connection."""
        kind = span.kind
        if kind not in (SpanKind.SERVER, SpanKind.CLIENT):
            return
        seconds = max(0.0, (span.end_time - span.start_time) / 1e9)
        failed = span.status.status_code == StatusCode.ERROR
        now = time.monotonic()
        with self._lock:
            mine, theirs = (self._servers, self._clients) if kind == SpanKind.SERVER else (self._clients, self._servers)
            waiting = theirs.get(connection)
            if waiting:
                _, other_service, other_seconds, other_failed, _ = waiting.popleft()
                self._pending -= 1
                if not waiting:
                    del theirs[connection]
                if kind == SpanKind.SERVER:
                    self._edge(other_service, service, "", other_seconds, seconds, failed or other_failed)
                else:
                    self._edge(service, other_service, "", seconds, other_seconds, failed or other_failed)
                return
            other_end = peer or ("user" if kind == SpanKind.SERVER else (peer_address or "unknown"))
            queue = mine.get(connection)
            if queue is None:
                queue = mine[connection] = deque()
            queue.append((now, service, seconds, failed, other_end))
            self._pending += 1
            if self._pending > MAX_PENDING:
                self._drop_oldest()

    def _drop_oldest(self) -> None:
        for table in (self._servers, self._clients):
            if table:
                key, queue = next(iter(table.items()))
                queue.popleft()
                if not queue:
                    del table[key]
                self._pending -= 1
                self.dropped_pending += 1
                return

    def expire(self, now_s: float | None = None) -> None:
        """Halves older than ``wait_s`` become edges with a virtual node on the missing side."""
        limit = (time.monotonic() if now_s is None else now_s) - self._wait_s
        with self._lock:
            for table, server_side in ((self._servers, True), (self._clients, False)):
                for key in [k for k, q in table.items() if q[0][0] <= limit]:
                    queue = table[key]
                    while queue and queue[0][0] <= limit:
                        _, service, seconds, failed, other = queue.popleft()
                        self._pending -= 1
                        if server_side:
                            self._edge(other, service, "virtual_node", None, seconds, failed)
                        else:
                            self._edge(service, other, "virtual_node", seconds, None, failed)
                    if not queue:
                        del table[key]

    def _edge(self, client: str, server: str, connection_type: str, client_seconds: float | None,
              server_seconds: float | None, failed: bool) -> None:
        key = (client, server, connection_type)
        edge = self._edges.get(key)
        if edge is None:
            if len(self._edges) >= MAX_EDGES:
                self.dropped_edges += 1
                return
            edge = self._edges[key] = _Edge(time.time_ns())
        edge.requests += 1
        if failed:
            edge.failed += 1
        if server_seconds is not None:
            edge.server_counts[bisect_left(BUCKETS, server_seconds)] += 1
            edge.server_n += 1
            edge.server_sum += server_seconds
            edge.server_min = min(edge.server_min, server_seconds)
            edge.server_max = max(edge.server_max, server_seconds)
        if client_seconds is not None:
            edge.client_counts[bisect_left(BUCKETS, client_seconds)] += 1
            edge.client_n += 1
            edge.client_sum += client_seconds
            edge.client_min = min(edge.client_min, client_seconds)
            edge.client_max = max(edge.client_max, client_seconds)

    def edges(self) -> dict[tuple[str, str, str], tuple[int, int]]:
        """(client, server, connection_type) -> (requests, failed), for tests and the summary."""
        with self._lock:
            return {k: (e.requests, e.failed) for k, e in self._edges.items()}

    def collect(self, now_ns: int | None = None) -> list[tuple[Resource, list[Metric]]]:
        now = time.time_ns() if now_ns is None else now_ns
        self.expire()
        total, failed, server, client = [], [], [], []
        with self._lock:
            for (c, s, t), e in self._edges.items():
                attrs: dict[str, Any] = {"client": c, "server": s, "connection_type": t}
                start = min(e.start_ns, now)
                total.append(NumberDataPoint(dict(attrs), start, now, e.requests))
                failed.append(NumberDataPoint(dict(attrs), start, now, e.failed))
                if e.server_n:
                    server.append(HistogramDataPoint(dict(attrs), start, now, e.server_n, e.server_sum,
                                                     list(e.server_counts), BUCKETS, e.server_min, e.server_max))
                if e.client_n:
                    client.append(HistogramDataPoint(dict(attrs), start, now, e.client_n, e.client_sum,
                                                     list(e.client_counts), BUCKETS, e.client_min, e.client_max))
        if not total:
            return []
        metrics = [
            Metric(REQUEST_TOTAL, "Requests between two services.", "{request}", Sum(total, _CUMULATIVE, True)),
            Metric(REQUEST_FAILED_TOTAL, "Failed requests between two services.", "{request}",
                   Sum(failed, _CUMULATIVE, True)),
        ]
        if server:
            metrics.append(Metric(SERVER_SECONDS, "Request time seen by the server.", "s",
                                  Histogram(server, _CUMULATIVE)))
        if client:
            metrics.append(Metric(CLIENT_SECONDS, "Request time seen by the client.", "s",
                                  Histogram(client, _CUMULATIVE)))
        return [(self._resource, metrics)]


@dataclass
class ServiceGraphConfig:
    """``processors: servicegraph:`` — ``wait``: how long a request's one side waits for the other
    before it becomes an edge to a virtual node (seconds, default 2)."""

    wait: float = 2.0

    def validate(self, key: str = "processors.servicegraph") -> None:
        if isinstance(self.wait, bool) or not isinstance(self.wait, (int, float)) or not 0 < self.wait <= 60:
            raise ValueError(f"{key}.wait: must be a duration between 0 and 60s")
