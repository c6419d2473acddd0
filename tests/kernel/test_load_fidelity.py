"""Fidelity under load: 10,000 requests at 1,000 requests/s become spans with the right method, path, status."""

from __future__ import annotations

import subprocess

from otel_ebpf.service.agent import Agent
from otel_ebpf.service.config import ServiceConfig
from otel_ebpf.testing import SPAN_KIND_SERVER, OtlpReceiver

REQUESTS = 10_000
CLIENTS = 10
RPS_PER_CLIENT = 100  # 10 clients x 100 = 1,000 requests/s


def test_ten_thousand_requests_at_one_thousand_per_second_become_at_least_99_9_percent_spans(nginx_server):
    with OtlpReceiver() as otlp:
        cfg = ServiceConfig.from_dict({
            "receivers": {"http": {"ports": [nginx_server.port]}},
            "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
            "service": {"pipelines": {"traces": {"receivers": ["http"], "exporters": ["otlp"]}}},
        })
        agent = Agent(cfg, environ={})
        agent.start()
        try:
            result = subprocess.run(
                ["timeout", "120", "h2load", "--h1", "-n", str(REQUESTS), "-c", str(CLIENTS),
                 "--rps", str(RPS_PER_CLIENT), nginx_server.url("/index.html")],
                capture_output=True, text=True, check=True)
            assert f"{REQUESTS} succeeded" in result.stdout, result.stdout
            server_spans = lambda s: s.kind == SPAN_KIND_SERVER  # noqa: E731
            try:
                otlp.wait_for_spans(REQUESTS, timeout=60, where=server_spans)
            except TimeoutError:
                pass  # counted below
        finally:
            agent.shutdown()
        spans = [s for s in otlp.spans() if s.kind == SPAN_KIND_SERVER]
        right = [s for s in spans if s.attributes.get("http.request.method") == "GET"
                 and s.attributes.get("url.path") == "/index.html"
                 and s.attributes.get("http.response.status_code") == 200]
        stats = agent.self_metrics.snapshot()
        assert len(right) >= REQUESTS * 0.999, (len(right), len(spans), stats)
        assert len(spans) <= REQUESTS  # no duplicates
