"""DNS lookups as telemetry: a CLIENT span per lookup and the ``dns.lookup.duration`` histogram.

Usage::

    sem = describe_dns(lookup)        # lookup: otel_ebpf.protocols.dns.DnsLookup
    span = builder.build_other(sem, pid=conn.pid, start_ns=lookup.start_ns, end_ns=lookup.end_ns)

Semantic conventions (DNS, development): ``dns.question.name`` and ``dns.answers`` on the span,
``error.type`` when the lookup failed. ``dns.lookup.duration`` (seconds, semconv buckets) leaves
``dns.question.name`` out of its attributes on purpose: query names are unbounded (every pod, every
search-domain expansion), and one series per name would let a noisy resolver blow up the metric
store. The name is on every span; the metric keeps ``error.type``, the resolver's address and port
and the transport. The response code and query type, which semconv has no names for, are
``otel_ebpf.dns.response_code`` and ``otel_ebpf.dns.question.type``.
"""

from __future__ import annotations

from typing import Any

from opentelemetry.trace import SpanKind, Status, StatusCode

from otel_ebpf.protocols.dns import DnsLookup
from otel_ebpf.records import Connection
from otel_ebpf.telemetry.semantics import HttpSemantics

__all__ = ["DNS_BUCKETS", "DNS_LOOKUP_DURATION", "DnsContext", "describe_dns"]

DNS_LOOKUP_DURATION = "dns.lookup.duration"
DNS_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)

# error.type: the getaddrinfo-style names semconv suggests, from the response code.
_ERROR_TYPES = {3: "host_not_found", 2: "try_again", 5: "no_recovery", 1: "no_recovery", 4: "no_recovery"}
_OK = Status(StatusCode.UNSET)


class DnsContext:
    """What the receiver knows of the socket a query left from (``DnsLookup.context``)."""

    __slots__ = ("connection", "tid", "trace")

    def __init__(self, connection: Connection, tid: int) -> None:
        self.connection = connection
        self.tid = tid
        self.trace = None  # TraceIdentity set by the stitching processor: the request it served


def describe_dns(lookup: DnsLookup) -> HttpSemantics:
    ctx = lookup.context
    conn: Connection | None = ctx.connection if isinstance(ctx, DnsContext) else None
    attrs: dict[str, Any] = {"dns.question.name": lookup.name, "otel_ebpf.dns.question.type": lookup.type_name}
    if lookup.rcode_name is not None:
        attrs["otel_ebpf.dns.response_code"] = lookup.rcode_name
    addresses = [a.data for a in lookup.answers if a.type in (1, 28)]
    if addresses:
        attrs["dns.answers"] = addresses
    attrs["network.transport"] = lookup.transport
    mattrs: dict[str, Any] = {"network.transport": lookup.transport}
    if conn is not None:
        attrs["server.address"] = mattrs["server.address"] = conn.remote_address
        attrs["server.port"] = mattrs["server.port"] = conn.remote_port
        attrs["network.type"] = "ipv6" if conn.family == 6 else "ipv4"
    if isinstance(ctx, DnsContext) and ctx.tid > 0:
        attrs["thread.id"] = ctx.tid
    if lookup.truncated:
        attrs["otel_ebpf.dns.truncated"] = True
    error = None
    if lookup.timed_out:
        error = "timeout"
    elif lookup.rcode:
        error = _ERROR_TYPES.get(lookup.rcode, lookup.rcode_name or "_OTHER")
    status = _OK
    if error is not None:
        attrs["error.type"] = mattrs["error.type"] = error
        status = Status(StatusCode.ERROR)
    return HttpSemantics(f"DNS {lookup.type_name}", SpanKind.CLIENT, attrs, mattrs, status, error, None,
                         (DNS_LOOKUP_DURATION,))
