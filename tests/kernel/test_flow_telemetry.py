"""The network layer through the agent: tcpflow records become otel_ebpf.tcp.* metrics and OTLP flow
logs joined to the trace ids of the HTTP spans seen on the same connection; the terminal summary
shows retransmits and RTT per service and peer under real loss."""

from __future__ import annotations

import io
import subprocess
import sys

from otel_ebpf.service.agent import Agent
from otel_ebpf.service.config import ServiceConfig
from otel_ebpf.testing import SPAN_KIND_SERVER, OtlpReceiver
from otel_ebpf.testing.netns import drop_random

CLIENT = """
import http.client, sys
conn = http.client.HTTPConnection("127.0.0.1", int(sys.argv[1]))
for i in range(int(sys.argv[2])):
    conn.request("GET", f"/big?n={sys.argv[3]}")
    assert len(conn.getresponse().read()) == int(sys.argv[3])
conn.close()
"""


def _agent(otlp: OtlpReceiver, port: int, **flow) -> Agent:
    cfg = ServiceConfig.from_dict({
        "receivers": {"http": {"ports": [port], "poll_interval_ms": 20},
                      "tcpflow": {"poll_interval_ms": 20, **flow}},
        "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}, "summary": {"interval": "1h"}},
        "service": {"metrics_interval": "1s", "pipelines": {
            "traces": {"receivers": ["http"], "exporters": ["otlp"]},
            "metrics": {"receivers": ["http", "tcpflow"], "exporters": ["otlp"]},
            "logs": {"receivers": ["tcpflow"], "exporters": ["otlp", "summary"]}}},
    })
    return Agent(cfg, environ={}, summary_stream=io.StringIO())


def test_flow_logs_carry_the_trace_ids_of_their_connection_and_metrics_count_its_bytes(threading_server):
    port = threading_server.port
    with OtlpReceiver() as otlp:
        agent = _agent(otlp, port)
        agent.start()
        try:
            subprocess.run([sys.executable, "-c", CLIENT, str(port), "3", "50000"], check=True, timeout=60)
            spans = otlp.wait_for_spans(3, timeout=30, where=lambda s: s.kind == SPAN_KIND_SERVER)
            logs = otlp.wait_for_logs(1, timeout=30, where=lambda r: r.attributes.get("otel_ebpf.tcp.role") == "server"
                                      and r.attributes.get("network.local.port") == port
                                      and r.attributes.get("otel_ebpf.flow.state") == "closed")
            metrics = otlp.wait_for_metrics(1, timeout=30, where=lambda m: m.name == "otel_ebpf.tcp.bytes")
        finally:
            agent.shutdown()
    record = logs[0]
    assert record.event_name == "otel_ebpf.tcp.flow"
    assert record.attributes["process.pid"] == threading_server.pid
    assert record.attributes["otel_ebpf.tcp.bytes.sent"] >= 3 * 50000
    assert record.attributes["otel_ebpf.tcp.rtt"] > 0
    span_traces = {s.trace_id for s in spans if s.attributes.get("server.port") == port}
    assert set(record.attributes["otel_ebpf.flow.trace_ids"]) == span_traces and len(span_traces) == 3
    points = [p for m in otlp.metrics() if m.name == "otel_ebpf.tcp.bytes" for p in m.data_points
              if p["attributes"].get("server.port") == port and p["attributes"].get("otel_ebpf.tcp.role") == "server"]
    assert points and metrics
    sent = max(p["value"] for p in points if p["attributes"]["network.io.direction"] == "transmit")
    assert sent >= 3 * 50000
    assert all(p["attributes"].get("network.peer.address") == "127.0.0.1" for p in points)


def test_under_real_loss_the_summary_shows_retransmits_and_rtt_per_service_and_peer(threading_server):
    port = threading_server.port
    with OtlpReceiver() as otlp:
        agent = _agent(otlp, port)
        agent.start()
        try:
            with drop_random(port, 0.05):
                subprocess.run([sys.executable, "-c", CLIENT, str(port), "3", "2000000"], check=True, timeout=120)
            otlp.wait_for_metrics(1, timeout=30, where=lambda m: m.name == "otel_ebpf.tcp.retransmits")
            otlp.wait_for_logs(1, timeout=30, where=lambda r: r.attributes.get("network.local.port") == port
                               and r.attributes.get("otel_ebpf.flow.state") == "closed")
        finally:
            agent.shutdown()
        text = agent.summary.render(0)
    rows = [line for line in text.splitlines() if f"127.0.0.1:{port}" in line]
    assert rows, text
    # SERVICE  PEER  CONNS  FAILED  RETRANS  RTTms  BYTES: the server's row retransmitted
    retrans = [int(line.split()[-3]) for line in rows]
    assert max(retrans) > 0, text
    retrans_metric = [p for m in otlp.metrics() if m.name == "otel_ebpf.tcp.retransmits" for p in m.data_points
                      if p["attributes"].get("server.port") == port]
    assert sum(p["value"] for p in retrans_metric) > 0
