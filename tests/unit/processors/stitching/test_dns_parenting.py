"""DNS lookups join the request their thread was serving, like outbound HTTP calls."""

from __future__ import annotations

from dataclasses import replace

from otel_ebpf.processors.stitching import StitchingConfig, StitchingProcessor
from otel_ebpf.protocols.dns import DnsLookup
from otel_ebpf.records import Connection, ParentSource, RequestStart, Role
from otel_ebpf.telemetry.dns import DnsContext

from ...factories import make_exchange

T0 = 1_700_000_000_000_000_000


class Sink:
    def __init__(self):
        self.exchanges = []
        self.lookups = []

    def consume(self, exchange):
        self.exchanges.append(exchange)

    def consume_dns(self, lookup):
        self.lookups.append(lookup)


def lookup_from(pid: int, tid: int) -> DnsLookup:
    conn = Connection(pid, 9, 0xD5, 4, "127.0.0.1", 40000, "127.0.0.53", 53, Role.CLIENT)
    return DnsLookup(name="db.internal", type=1, type_name="A", rcode=0, rcode_name="NOERROR", answer_count=1,
                     answers=(), start_ns=T0 + 1_000, end_ns=T0 + 2_000, timed_out=False, truncated=False,
                     context=DnsContext(conn, tid), transport="udp")


def serve(stitcher: StitchingProcessor, exchange_id: int, tid: int):
    ex = replace(make_exchange(role=Role.SERVER, pid=4242, tid=tid), exchange_id=exchange_id)
    stitcher.request_started(RequestStart(exchange_id, ex.connection, ex.request, ex.start_ns, tid))
    return ex


def test_a_lookup_on_a_thread_serving_one_request_is_that_requests_child():
    sink = Sink()
    stitcher = StitchingProcessor(StitchingConfig(envoy_process_names=[]), next_consumer=sink)
    ex = serve(stitcher, 101, tid=7)
    lookup = lookup_from(4242, 7)
    stitcher.consume_dns(lookup)
    stitcher.consume(ex)
    (server,) = sink.exchanges
    trace = sink.lookups[0].context.trace
    assert trace.trace_id == server.trace.trace_id and trace.parent_span_id == server.trace.span_id
    assert trace.parent_source is ParentSource.THREAD and trace.span_id != server.trace.span_id


def test_a_lookup_on_a_thread_with_several_requests_in_flight_stays_a_root():
    sink = Sink()
    stitcher = StitchingProcessor(StitchingConfig(envoy_process_names=[]), next_consumer=sink)
    serve(stitcher, 201, tid=8)
    serve(stitcher, 202, tid=8)
    stitcher.consume_dns(lookup_from(4242, 8))
    stitcher.consume_dns(lookup_from(4242, 99))  # a thread serving nothing
    assert [lk.context.trace for lk in sink.lookups] == [None, None]


def test_the_dns_span_is_built_where_the_stitcher_placed_it():
    from otel_ebpf.processinfo import ProcessInfoCache  # noqa: PLC0415
    from otel_ebpf.records import TraceIdentity  # noqa: PLC0415
    from otel_ebpf.telemetry.dns import describe_dns  # noqa: PLC0415
    from otel_ebpf.telemetry.spans import SpanBuilder  # noqa: PLC0415

    lookup = lookup_from(4242, 7)
    lookup.context.trace = TraceIdentity(0xAB, 0xCD, 0xEF, ParentSource.THREAD)
    builder = SpanBuilder(host_name="n", process_info=ProcessInfoCache(proc_root="/nonexistent"))
    span = builder.build_other(describe_dns(lookup), pid=4242, start_ns=lookup.start_ns, end_ns=lookup.end_ns,
                               trace=lookup.context.trace)
    assert (span.context.trace_id, span.context.span_id, span.parent.span_id) == (0xAB, 0xCD, 0xEF)
    assert span.attributes["otel_ebpf.parent.source"] == ParentSource.THREAD.value and span.name == "DNS A"
