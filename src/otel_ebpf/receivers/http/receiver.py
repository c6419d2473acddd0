"""The ``http`` receiver: kernel payload capture → HTTP/1.x exchanges → the next consumer.

Usage::

    receiver = HttpReceiver(HttpReceiverConfig(ports=[8080]), consumer)
    receiver.start()          # returns once every probe is attached
    ...
    receiver.shutdown()       # detaches probes, flushes connections; safe twice

``consumer`` is anything with ``consume(exchange)`` (the telemetry pipeline, the
SDK bridge, or a list-backed sink in tests). It is called from the receiver's
reader thread and must not block for long.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from typing import Protocol

from ...bpf.btf import BpfObjectInfo
from ...bpf.clock import MonotonicClock
from ...bpf.events import ConnEvent, SockDataEvent
from ...bpf.recording import RecordingWriter
from ...bpf.sockdata import SockDataTracer
from ...processinfo import ProcessInfoCache
from ...protocols.dns import DnsTracker, TcpDnsFramer
from ...protocols.http1 import Http1Stats
from ...records import Connection, Direction, Exchange, Role
from ...telemetry.dns import DnsContext
from ...stream.conntable import ConnectionTable
from .config import HttpReceiverConfig
from ...threads import name_os_thread

__all__ = ["HttpReceiver", "ExchangeConsumer"]

log = logging.getLogger(__name__)

# Records taken from the ring per poll. When the agent falls behind, the ring is full (16 MiB) and
# an unbounded drain turns all of it into Python objects at once (~60k records: ~50 MiB of bytes
# and events); 4096 records (a ring wakeup's worth at typical record sizes) keep a batch to a few MiB.
MAX_BATCH_RECORDS = 4096
# At stop, how long the receiver keeps draining a backlog before it gives up on it.
FINAL_DRAIN_S = 10.0


class ExchangeConsumer(Protocol):
    """Receives completed exchanges. May also define ``request_started(start: RequestStart)``,
    then called for every request head, in kernel order, before the exchange completes."""

    def consume(self, exchange: Exchange) -> None: ...


def _causal_ts(ev: SockDataEvent | ConnEvent) -> int:
    if type(ev) is SockDataEvent:
        return ev.ts_enter if ev.direction == Direction.EGRESS else ev.ts_exit
    return ev.ts


def causal_order(raw: list[bytes], codec) -> list[SockDataEvent | ConnEvent]:
    """Decoded records of one ring-buffer batch in causal order.

    The ring holds records in the order syscalls *returned*. On loopback a reader in another
    process can return (and submit) before the writer that fed it does, so a server's read of a
    request may precede the client's write of it. Ordering by when bytes were available to each
    side — a write's entry, a read's exit — puts causes before effects again; within one
    connection and direction it keeps the syscalls' own order.
    """
    events = [ev for ev in map(codec.decode, raw) if ev is not None]
    events.sort(key=_causal_ts)
    return events


class HttpReceiver:
    def __init__(self, config: HttpReceiverConfig, consumer: ExchangeConsumer, *, tracer: SockDataTracer | None = None,
                 process_info: ProcessInfoCache | None = None):
        """``process_info`` (default: the consumer's ``process_info`` attribute, if any) is
        filled as soon as a connection of a new process is seen, so that short-lived
        clients are named before they exit."""
        config.validate()
        self.config = config
        self._consumer = consumer
        self._tracer = tracer or SockDataTracer(
            max_capture_bytes=config.max_capture_bytes, ring_bytes=config.ring_buffer_bytes,
            pids=config.pids, ports=config.ports, max_batch=MAX_BATCH_RECORDS,
        )
        self.clock = MonotonicClock()
        self.http1_stats = Http1Stats()
        self.table = ConnectionTable(clock=self.clock, stats=self.http1_stats,
                                     max_connections=config.max_connections, idle_timeout_s=config.idle_timeout)
        if hasattr(consumer, "request_started"):
            self.table.on_request = self._guarded(consumer.request_started)
        if process_info is None:  # not `or`: an empty cache is falsy
            process_info = getattr(consumer, "process_info", None)
        if process_info is not None:
            self.table.on_new_process = process_info.remember
        self.dns = DnsTracker()
        self._dns_framers: OrderedDict[tuple, TcpDnsFramer] = OrderedDict()
        self._dns_sink = getattr(consumer, "consume_dns", None)
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._recorder: RecordingWriter | None = None
        self.consumer_errors = 0
        self._started = False
        self._stopped = False

    def start(self) -> None:
        """Load and attach the probes (raises on failure), then start reading."""
        if self._started:
            return
        self._tracer.start()
        self._started = True
        if self.config.record_path:
            self._recorder = RecordingWriter(self.config.record_path, clock_offset_ns=self.clock.offset_ns,
                                             info=BpfObjectInfo.from_file(self._tracer._path))
        self._thread = threading.Thread(target=self._run, name="otel-ebpf-http-receiver", daemon=True)
        self._thread.start()

    def _guarded(self, fn):
        def call(start):
            try:
                fn(start)
            except Exception:  # a consumer bug must not stop capture
                self.consumer_errors += 1
                log.exception("consumer failed on a request start")

        return call

    @property
    def attached_programs(self) -> list[str]:
        return list(self._tracer.attached)

    def _emit(self, exchanges: list[Exchange]) -> None:
        consume = self._consumer.consume
        for ex in exchanges:
            try:
                consume(ex)
            except Exception:  # a consumer bug must not stop capture
                self.consumer_errors += 1
                log.exception("consumer failed on an exchange")

    def _run(self) -> None:
        name_os_thread()
        tracer, table = self._tracer, self.table
        codec = tracer.codec
        timeout = self.config.poll_interval_ms
        next_housekeeping = time.monotonic() + 1.0
        while not self._stop.is_set():
            try:
                raw = tracer.poll_raw(timeout)
                if self._recorder is not None:
                    self._record(raw)
                events = causal_order(raw, codec)
                raw = None  # the records are decoded: free them before the batch is handled
                self._handle_events(events)
                events = None
                now = time.monotonic()
                if now >= next_housekeeping:
                    next_housekeeping = now + 1.0
                    self.clock.maybe_refresh()
                    self._emit(table.expire(time.clock_gettime_ns(time.CLOCK_MONOTONIC)))
                    for lookup in self.dns.expire(self.clock.to_wall(time.clock_gettime_ns(time.CLOCK_MONOTONIC))):
                        self._emit_dns(lookup)
            except Exception:
                log.exception("http receiver loop error (continuing)")
                self._stop.wait(0.1)
        # Final drain of what the kernel already wrote: batch after batch (a batch is bounded)
        # until the ring is empty, within FINAL_DRAIN_S (a backlog after a burst can be large).
        deadline = time.monotonic() + FINAL_DRAIN_S
        while time.monotonic() < deadline:
            raw = tracer.poll_raw(0)
            if not raw:
                break
            if self._recorder is not None:
                self._record(raw)
            self._handle_events(causal_order(raw, codec))

    def _record(self, raw: list[bytes]) -> None:
        for rec in raw:
            self._recorder.write(rec)

    def _handle_events(self, events) -> None:
        """Decoded events in kernel order: DNS sockets to the DNS tracker, the rest to the
        connection table, whose completed exchanges go to the consumer."""
        handle = self.table.handle
        for ev in events:
            if type(ev) is SockDataEvent and (ev.transport != 6 or ev.remote_port == 53 or ev.local_port == 53):
                self._on_dns(ev)
                continue
            done = handle(ev)
            if done:
                self._emit(done)

    def _on_dns(self, ev: SockDataEvent) -> None:
        """A datagram (or TCP bytes) of a DNS socket: queries the process sent, answers it read.
        Only the client side becomes lookups; a DNS server's own sockets are skipped."""
        if ev.remote_port != 53:
            return  # a local DNS server (port 53 here): not a lookup of this process
        conn = Connection(ev.tgid, ev.fd, ev.sock_id, ev.family, ev.local_address, ev.local_port, ev.remote_address,
                          ev.remote_port, Role.CLIENT)
        key = (ev.tgid, ev.sock_id)
        ts = self.clock.to_wall(ev.ts_exit)
        context = DnsContext(conn, ev.tid)
        if ev.transport == 6:
            fkey = (ev.tgid, ev.sock_id, ev.direction)
            framer = self._dns_framers.get(fkey)
            if framer is None:
                framer = self._dns_framers[fkey] = TcpDnsFramer()
                if len(self._dns_framers) > 4096:
                    self._dns_framers.popitem(last=False)
            if ev.missing:
                framer.reset()  # an uncaptured part: drop the partial message, resync on the next
                return
            messages = framer.receive_data(ev.data)
            transport = "tcp"
        else:
            messages = [ev.data] if not ev.missing else []
            transport = "udp"
        for message in messages:
            lookup = self.dns.feed(key, message, self.clock.to_wall(ev.ts_enter) if ev.direction == Direction.EGRESS
                                   else ts, context=context, transport=transport)
            if lookup is not None:
                self._emit_dns(lookup)

    def _emit_dns(self, lookup) -> None:
        if self._dns_sink is None:
            return
        try:
            self._dns_sink(lookup)
        except Exception:  # a consumer bug must not stop capture
            self.consumer_errors += 1
            log.exception("consumer failed on a DNS lookup")

    def stats(self) -> dict[str, int]:
        """Cumulative counters of the kernel side, the connection table and the HTTP/1 parser."""
        out = {f"kernel.{k}": v for k, v in self._tracer.stats().items()} if self._started and not self._stopped else {}
        out.update({f"table.{k}": v for k, v in self.table.stats.as_dict().items()})
        out.update({f"http1.{k}": getattr(self.http1_stats, k) for k in self.http1_stats.__slots__})
        h2 = self.table.http2_stats
        if h2 is not None:
            out.update({f"http2.{k}": getattr(h2, k) for k in h2.__slots__})
        out["table.connections"] = len(self.table)
        dns = self.dns
        out.update({"dns.malformed": dns.malformed, "dns.unmatched_responses": dns.unmatched_responses,
                    "dns.evicted": dns.evicted, "dns.timed_out": dns.timed_out})
        out["consumer_errors"] = self.consumer_errors
        return out

    def shutdown(self, *, flush_connections: bool = False) -> None:
        """Stop reading, detach every probe. Safe twice and before start."""
        if self._stopped:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=FINAL_DRAIN_S + 10)
        if flush_connections:
            self._emit(self.table.close_all())
        if self._started:
            self.last_stats = self.stats()
        self._stopped = True
        self._tracer.close()
        if self._recorder is not None:
            self._recorder.close()
