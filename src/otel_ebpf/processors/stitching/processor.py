"""The stitching processor: puts every exchange's span at its place in the mesh's traces.

Usage::

    stitcher = StitchingProcessor(StitchingConfig(), next_consumer=pipeline, process_info=cache)
    receiver = HttpReceiver(HttpReceiverConfig(), stitcher)   # gets request_started() and consume()

It sits between a receiver and the telemetry pipeline and sees each request twice: when its
head is parsed (``request_started``, in kernel order, while the exchange is in flight) and when
the exchange completes (``consume``). Identities are chosen at the start, in causal order: an
inbound request is read before the outbound calls it causes are written, and those before the
downstream server reads them. So a CLIENT span can name its SERVER parent although the client
exchange completes first, with no buffering and no delay. The rules are in docs/stitching.md.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque

from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator

from ...processinfo import ProcessInfoCache
from ...records import Exchange, ParentSource, RequestStart, Role, SpanLink, TraceIdentity, annotate
from .config import StitchingConfig
from .propagation import CarriedContext, extract

__all__ = ["StitchingProcessor"]

# Links kept per span: an ambiguous outbound call on a busy asyncio server could otherwise
# link to hundreds of candidate parents.
MAX_LINKS = 8
# Requests an Envoy worker thread read and has not forwarded yet, per thread: a worker handles
# many connections at once; past this the oldest are forgotten (their links are not made).
ENVOY_READS_PER_THREAD = 256


class _Flight:
    """An exchange between its request head and its completion."""

    __slots__ = ("exchange_id", "pid", "tid", "role", "conn_key", "request_id", "carried", "trace_id", "span_id",
                 "parent_span_id", "source", "sampled", "remote_parent", "trace_state", "links", "suppressed",
                 "envoy", "what")

    def __init__(self, start: RequestStart, carried: CarriedContext | None, envoy: bool):
        c = start.connection
        self.exchange_id = start.exchange_id
        self.pid = c.pid
        self.tid = start.tid
        self.role = c.role
        self.conn_key = (c.local_address, c.local_port, c.remote_address, c.remote_port)
        self.carried = carried
        self.request_id = carried.request_id if carried else _request_id(start.request.headers)
        self.trace_id = 0
        self.span_id = 0
        self.parent_span_id: int | None = None
        self.source = ParentSource.ROOT
        self.sampled = True
        self.remote_parent = False
        self.trace_state = ""
        self.links: list[SpanLink] = []
        self.suppressed = ""  # why no span is emitted ("" = emit)
        self.envoy = envoy
        self.what = (start.request.method, start.request.target)

    def link(self, trace_id: int, span_id: int, reason: str) -> None:
        if len(self.links) < MAX_LINKS and not any(lk.span_id == span_id for lk in self.links):
            self.links.append(SpanLink(trace_id, span_id, reason))

    def identity(self) -> TraceIdentity:
        return TraceIdentity(self.trace_id, self.span_id, self.parent_span_id, self.source, self.sampled,
                             self.remote_parent, self.trace_state, tuple(self.links))


def _request_id(headers) -> str | None:
    for k, v in headers:
        if k == "x-request-id":
            return v.strip() or None
    return None


class StitchingProcessor:
    """Consumer stage: ``request_started`` + ``consume`` in, exchanges with a TraceIdentity out."""

    def __init__(self, config: StitchingConfig, *, next_consumer, process_info: ProcessInfoCache | None = None,
                 id_generator: IdGenerator | None = None):
        config.validate()
        self.config = config
        self._next = next_consumer
        self.process_info = process_info if process_info is not None else ProcessInfoCache()
        self._ids = id_generator or RandomIdGenerator()
        self._envoy_names = {n.lower() for n in config.envoy_process_names}
        self._envoy_ports = set(config.envoy_ports)
        self._envoy_addresses = set(config.envoy_addresses)
        self._lock = threading.Lock()
        self._flights: OrderedDict[int, _Flight] = OrderedDict()
        self._servers_by_thread: dict[tuple[int, int], list[_Flight]] = {}
        self._servers_by_pid: dict[int, list[_Flight]] = {}
        self._servers_by_request_id: dict[tuple[int, str], _Flight] = {}
        self._servers_by_carried: dict[tuple[int, int, int], _Flight] = {}
        self._clients_by_conn: dict[tuple, deque[_Flight]] = {}
        self._envoy_downstream: OrderedDict[tuple[int, int], deque[_Flight]] = OrderedDict()
        self._restarted: OrderedDict[int, tuple[int, int]] = OrderedDict()
        self.counters: dict[str, int] = {
            "otel_ebpf.stitching.parent.header": 0, "otel_ebpf.stitching.parent.thread": 0,
            "otel_ebpf.stitching.dns_parented": 0,
            "otel_ebpf.stitching.parent.request_id": 0, "otel_ebpf.stitching.parent.process": 0,
            "otel_ebpf.stitching.parent.forwarded": 0,
            "otel_ebpf.stitching.parent.connection": 0, "otel_ebpf.stitching.root": 0,
            "otel_ebpf.stitching.ambiguous": 0, "otel_ebpf.stitching.conflicts": 0,
            "otel_ebpf.stitching.envoy_suppressed": 0, "otel_ebpf.stitching.duplicate_client_suppressed": 0,
            "otel_ebpf.stitching.envoy_links": 0, "otel_ebpf.stitching.evicted": 0,
            "otel_ebpf.stitching.unmatched": 0,
        }

    # ---- classification ----

    def _is_envoy(self, start: RequestStart) -> bool:
        c = start.connection
        if c.local_address in self._envoy_addresses or c.local_port in self._envoy_ports:
            return True
        if not self._envoy_names:
            return False
        info = self.process_info.get(c.pid)
        return info.executable_name.lower() in self._envoy_names

    # ---- request heads ----

    def request_started(self, start: RequestStart) -> None:
        carried = extract(start.request.headers)
        flight = _Flight(start, carried, self._is_envoy(start))
        with self._lock:
            self._admit(flight)
            if flight.envoy:
                self._envoy_flight(flight)
            elif flight.role == Role.SERVER:
                self._server_flight(flight)
            else:
                self._client_flight(flight)

    def _admit(self, flight: _Flight) -> None:
        self._flights[flight.exchange_id] = flight
        while len(self._flights) > self.config.max_in_flight:
            _id, old = self._flights.popitem(last=False)
            self._forget(old)
            self.counters["otel_ebpf.stitching.evicted"] += 1
        if flight.role == Role.CLIENT:
            self._clients_by_conn.setdefault(flight.conn_key, deque()).append(flight)

    def _new_ids(self, flight: _Flight) -> None:
        flight.span_id = self._ids.generate_span_id()
        if not flight.trace_id:
            flight.trace_id = self._ids.generate_trace_id()

    def _from_header(self, flight: _Flight, carried: CarriedContext) -> None:
        flight.trace_id = carried.trace_id
        flight.parent_span_id = carried.span_id
        flight.sampled = carried.sampled
        flight.remote_parent = True
        flight.trace_state = carried.trace_state
        flight.source = carried.source
        for trace_id, span_id, src in carried.alternates:
            flight.link(trace_id, span_id, f"conflicting-{src.value}")
        if carried.alternates:
            self.counters["otel_ebpf.stitching.conflicts"] += 1
        self.counters["otel_ebpf.stitching.parent.header"] += 1

    def _server_flight(self, flight: _Flight) -> None:
        carried = flight.carried
        if carried is not None:
            self._from_header(flight, carried)
            back = self._restarted.get(carried.trace_id)
            if back is not None:  # Envoy restarted the trace of a client we saw: link back to it
                flight.link(back[0], back[1], "envoy-restart")
                self.counters["otel_ebpf.stitching.envoy_links"] += 1
        else:
            client = self._peer_client(flight)
            if client is not None and not client.suppressed:
                flight.trace_id = client.trace_id
                flight.parent_span_id = client.span_id
                flight.sampled = client.sampled
                flight.source = ParentSource.CONNECTION
                self.counters["otel_ebpf.stitching.parent.connection"] += 1
            else:
                self.counters["otel_ebpf.stitching.root"] += 1
        self._new_ids(flight)
        self._servers_by_thread.setdefault((flight.pid, flight.tid), []).append(flight)
        self._servers_by_pid.setdefault(flight.pid, []).append(flight)
        if flight.request_id:
            self._servers_by_request_id[(flight.pid, flight.request_id)] = flight
        if carried is not None:
            self._servers_by_carried[(flight.pid, carried.trace_id, carried.span_id)] = flight

    def _peer_client(self, flight: _Flight) -> _Flight | None:
        """The client end of this server's connection, when this host saw it (no sidecar between)."""
        la, lp, ra, rp = flight.conn_key
        queue = self._clients_by_conn.get((ra, rp, la, lp))
        if not queue:
            return None
        for client in queue:
            if not client.envoy and client.pid != flight.pid:
                return client
        return None

    def _enclosing_server(self, flight: _Flight) -> tuple[_Flight | None, ParentSource | None, list[_Flight]]:
        """The inbound request this outbound call serves: (parent, how, ambiguous candidates)."""
        if flight.request_id:
            server = self._servers_by_request_id.get((flight.pid, flight.request_id))
            if server is not None:
                return server, ParentSource.REQUEST_ID, []
        same_thread = self._servers_by_thread.get((flight.pid, flight.tid), [])
        if len(same_thread) == 1:
            return same_thread[0], ParentSource.THREAD, []
        if len(same_thread) > 1:
            return None, None, same_thread
        in_process = self._servers_by_pid.get(flight.pid, [])
        if len(in_process) == 1:
            return in_process[0], ParentSource.PROCESS, []
        return None, None, in_process

    def _client_flight(self, flight: _Flight) -> None:
        carried = flight.carried
        if carried is not None:
            server = self._servers_by_carried.get((flight.pid, carried.trace_id, carried.span_id))
            if server is not None:
                # The inbound context forwarded verbatim (a proxy-like app): the app made no span,
                # so this call propagates nothing of its own; the forwarded context names its parent.
                server, how, candidates = server, ParentSource.FORWARDED, []
            elif self.config.suppress_instrumented_clients:
                # The app injected a context of its own: its SDK made the CLIENT span already.
                flight.suppressed = "instrumented-client"
                flight.trace_id, flight.span_id = carried.trace_id, carried.span_id
                return
            else:  # keep the app's own span as the parent (the header names it)
                server, how, candidates = None, None, []
        else:
            server, how, candidates = self._enclosing_server(flight)
        if server is not None:
            flight.trace_id = server.trace_id
            flight.parent_span_id = server.span_id
            flight.sampled = server.sampled
            flight.source = how
            key = {ParentSource.THREAD: "thread", ParentSource.REQUEST_ID: "request_id",
                   ParentSource.PROCESS: "process", ParentSource.FORWARDED: "forwarded"}[how]
            self.counters[f"otel_ebpf.stitching.parent.{key}"] += 1
        elif candidates:
            # Several inbound requests in flight on this thread/process (asyncio, thread pools):
            # a wrong parent is worse than none, so link to each candidate instead.
            for cand in candidates:
                flight.link(cand.trace_id, cand.span_id, "ambiguous-parent")
            self.counters["otel_ebpf.stitching.ambiguous"] += 1
        elif carried is not None:
            self._from_header(flight, carried)
        else:
            self.counters["otel_ebpf.stitching.root"] += 1
        self._new_ids(flight)

    def _envoy_flight(self, flight: _Flight) -> None:
        """Envoy's own ends: no span, but they tell which trace Envoy continued or restarted."""
        flight.suppressed = "envoy"
        key = (flight.pid, flight.tid)
        if flight.role == Role.SERVER:
            # Envoy read a request on this worker thread; the upstream request it writes next on the
            # same thread is that request's next hop. The app's client end is looked up only then:
            # its write may reach us after Envoy's read of it.
            queue = self._envoy_downstream.get(key)
            if queue is None:
                queue = self._envoy_downstream[key] = deque(maxlen=ENVOY_READS_PER_THREAD)
            queue.append(flight)
            self._envoy_downstream.move_to_end(key)
            while len(self._envoy_downstream) > self.config.max_in_flight:
                self._envoy_downstream.popitem(last=False)
            return
        # The upstream request matches the oldest request read on this worker thread with the same
        # method and target (Envoy forwards them unchanged; a worker serves its requests in order).
        downstream = None
        queue = self._envoy_downstream.get(key)
        if queue:
            for candidate in queue:
                if candidate.what == flight.what:
                    downstream = candidate
                    queue.remove(candidate)
                    break
        client = self._peer_client(downstream) if downstream is not None else None
        carried = flight.carried
        if client is None or carried is None or client.suppressed or client.trace_id == carried.trace_id:
            return
        # Envoy's egress leg started a new trace (the app propagated nothing): join both ways.
        client.link(carried.trace_id, carried.span_id, "envoy-egress")
        self._restarted[carried.trace_id] = (client.trace_id, client.span_id)
        while len(self._restarted) > self.config.max_in_flight:
            self._restarted.popitem(last=False)
        self.counters["otel_ebpf.stitching.envoy_links"] += 1

    # ---- completion ----

    def _forget(self, flight: _Flight) -> None:
        if flight.envoy and flight.role == Role.SERVER:
            # a request Envoy answered itself (503, rate limit, fault) must not stay a match candidate
            queue = self._envoy_downstream.get((flight.pid, flight.tid))
            if queue is not None:
                try:
                    queue.remove(flight)
                except ValueError:
                    pass
        for index, key in ((self._servers_by_thread, (flight.pid, flight.tid)),
                           (self._servers_by_pid, flight.pid)):
            lst = index.get(key)
            if lst is not None:
                try:
                    lst.remove(flight)
                except ValueError:
                    pass
                if not lst:
                    del index[key]
        if flight.request_id and self._servers_by_request_id.get((flight.pid, flight.request_id)) is flight:
            del self._servers_by_request_id[(flight.pid, flight.request_id)]
        if flight.carried is not None and flight.role == Role.SERVER:
            key = (flight.pid, flight.carried.trace_id, flight.carried.span_id)
            if self._servers_by_carried.get(key) is flight:
                del self._servers_by_carried[key]
        queue = self._clients_by_conn.get(flight.conn_key)
        if queue is not None:
            try:
                queue.remove(flight)
            except ValueError:
                pass
            if not queue:
                del self._clients_by_conn[flight.conn_key]

    def consume_dns(self, lookup) -> None:
        """A DNS lookup becomes a child of the one inbound request its thread was serving when the
        query left (the same rule as outbound HTTP calls; several in flight: a root, never a guess).
        The choice travels on the lookup's context (``DnsContext.trace``)."""
        ctx = lookup.context
        conn = getattr(ctx, "connection", None)
        if conn is not None:
            with self._lock:
                serving = self._servers_by_thread.get((conn.pid, ctx.tid), [])
                parent = serving[0] if len(serving) == 1 and serving[0].trace_id else None
                if parent is not None:
                    ctx.trace = TraceIdentity(parent.trace_id, self._ids.generate_span_id(), parent.span_id,
                                              ParentSource.THREAD, parent.sampled)
                    self.counters["otel_ebpf.stitching.dns_parented"] += 1
        forward = getattr(self._next, "consume_dns", None)
        if forward is not None:
            forward(lookup)

    def consume(self, exchange: Exchange) -> None:
        with self._lock:
            flight = self._flights.pop(exchange.exchange_id, None)
            if flight is not None:
                self._forget(flight)
                if flight.suppressed:
                    name = "envoy_suppressed" if flight.suppressed == "envoy" else "duplicate_client_suppressed"
                    self.counters[f"otel_ebpf.stitching.{name}"] += 1
            else:
                self.counters["otel_ebpf.stitching.unmatched"] += 1
        if flight is None:
            # No request head was seen through request_started (e.g. a receiver without it):
            # fall back to the headers alone.
            self._next.consume(exchange)
            return
        if flight.suppressed:
            return
        self._next.consume(annotate(exchange, trace=flight.identity()))

    def stats(self) -> dict[str, int]:
        with self._lock:
            out = dict(self.counters)
        out["otel_ebpf.stitching.in_flight"] = len(self._flights)
        return out
