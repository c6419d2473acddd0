"""DNS lookups from the kernel: glibc's resolver (getaddrinfo: sendmmsg + recvfrom on a connected UDP
socket) against dnsmasq in a network namespace, exported as CLIENT spans and dns.lookup.duration."""

from __future__ import annotations

from otel_ebpf.service.agent import Agent
from otel_ebpf.service.config import ServiceConfig
from otel_ebpf.testing import SPAN_KIND_CLIENT, OtlpReceiver
from otel_ebpf.testing.netns import DnsServer, NetNamespace

RESOLVE = """
import socket, sys
for name in sys.argv[1:]:
    try:
        print(name, sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)}))
    except socket.gaierror as e:
        print(name, "error", e.errno)
"""


def test_found_and_nxdomain_names_become_dns_spans_with_the_right_response_code():
    with OtlpReceiver() as otlp, NetNamespace() as ns, \
            DnsServer(ns, records={"found.test": "10.231.255.7"}) as _dns:
        cfg = ServiceConfig.from_dict({
            "receivers": {"http": {"poll_interval_ms": 20}},
            "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
            "service": {"metrics_interval": "1s", "pipelines": {
                "traces": {"receivers": ["http"], "exporters": ["otlp"]},
                "metrics": {"receivers": ["http"], "exporters": ["otlp"]}}},
        })
        agent = Agent(cfg, environ={})
        agent.start()
        try:
            out = ns.python(RESOLVE, "found.test", "nothere.test").stdout
            assert "found.test ['10.231.255.7']" in out and "nothere.test error" in out
            spans = otlp.wait_for_spans(2, timeout=30, where=lambda s: s.name.startswith("DNS ")
                                        and s.attributes.get("dns.question.name") in ("found.test", "nothere.test"))
            metrics = otlp.wait_for_metrics(1, timeout=30, where=lambda m: m.name == "dns.lookup.duration")
        finally:
            agent.shutdown()
    found = [s for s in spans if s.attributes["dns.question.name"] == "found.test"]
    missing = [s for s in spans if s.attributes["dns.question.name"] == "nothere.test"]
    assert found and missing
    a = found[0]
    assert a.kind == SPAN_KIND_CLIENT and a.name == "DNS A"
    assert a.attributes["otel_ebpf.dns.response_code"] == "NOERROR"
    assert list(a.attributes["dns.answers"]) == ["10.231.255.7"]
    assert a.attributes["server.address"] == "127.0.0.1" and a.attributes["server.port"] == 53
    assert a.attributes["network.transport"] == "udp" and a.status_code != 2
    assert 0 < a.end_ns - a.start_ns < 5e9
    m = missing[0]
    assert m.attributes["otel_ebpf.dns.response_code"] == "NXDOMAIN"
    assert m.attributes["error.type"] == "host_not_found" and m.status_code == 2
    assert metrics[0].unit == "s"
    assert all("dns.question.name" not in point["attributes"] for point in metrics[0].data_points)


def test_dns_over_tcp_is_reassembled_from_its_length_prefixed_messages():
    with OtlpReceiver() as otlp, NetNamespace() as ns, \
            DnsServer(ns, records={"tcp.test": "10.231.255.9"}) as _dns:
        cfg = ServiceConfig.from_dict({
            "receivers": {"http": {"poll_interval_ms": 20}},
            "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
            "service": {"pipelines": {"traces": {"receivers": ["http"], "exporters": ["otlp"]}}},
        })
        agent = Agent(cfg, environ={})
        agent.start()
        try:
            out = ns.run(["dig", "+tcp", "+tries=1", "@127.0.0.1", "tcp.test", "A"]).stdout
            assert "10.231.255.9" in out
            (span,) = otlp.wait_for_spans(1, timeout=30, where=lambda s: s.attributes.get("dns.question.name")
                                          == "tcp.test")
        finally:
            agent.shutdown()
    assert span.attributes["network.transport"] == "tcp"
    assert span.attributes["otel_ebpf.dns.response_code"] == "NOERROR"
    assert list(span.attributes["dns.answers"]) == ["10.231.255.9"]
