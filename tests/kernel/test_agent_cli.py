"""`otel-ebpf run` as a user runs it: a separate process exporting to a real OTLP receiver."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from .support import run_client

from otel_ebpf.testing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, OtlpReceiver

AGENT = [sys.executable, "-m", "otel_ebpf.cli"]


class AgentProcess:
    def __init__(self, args: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
                 prefix: list[str] | None = None):
        self.proc = subprocess.Popen([*(prefix or []), *AGENT, *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})}, cwd=cwd)
        self.stderr_lines: list[str] = []

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.stderr_lines.append(line)
            if "otel-ebpf ready" in line:
                return
        raise AssertionError(f"agent not ready; stderr: {''.join(self.stderr_lines)}")

    def wait(self, timeout: float = 60.0) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, "".join(self.stderr_lines) + err

    def stop(self, sig=signal.SIGTERM, timeout: float = 60.0) -> tuple[int, str, str]:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, "".join(self.stderr_lines) + err


def _config(tmp_path: Path, exporter: str, endpoint: str) -> Path:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
receivers:
  http:
    max_capture_bytes: 4096
processors:
  redaction: {{}}
  routes:
    patterns: ["/users/{{id}}"]
exporters:
  {exporter}:
    endpoint: {endpoint}
service:
  metrics_interval: 1s
  pipelines:
    traces: {{receivers: [http], processors: [redaction, routes], exporters: [{exporter}]}}
    metrics: {{receivers: [http], processors: [redaction, routes], exporters: [{exporter}]}}
""")
    return cfg


def _server_span(spans, path):
    return [s for s in spans if s.kind == SPAN_KIND_SERVER and s.attributes.get("url.path") == path]


def test_spans_and_metrics_arrive_over_otlp_grpc_with_semantic_convention_attributes(threading_server, tmp_path):
    with OtlpReceiver() as otlp:
        agent = AgentProcess(["run", "--config", str(_config(tmp_path, "otlp", otlp.grpc_endpoint)),
                              "--port", str(threading_server.port)])
        try:
            agent.wait_ready()
            for path in ("/ok", "/notfound", "/error", "/users/42?token=abc&page=2"):
                subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", "Authorization: Bearer xyz",
                                threading_server.url(path)], check=True, timeout=30)
            traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
            subprocess.run(["curl", "-s", "-o", "/dev/null", "-H", f"traceparent: {traceparent}",
                            threading_server.url("/ok?traced=1")], check=True, timeout=30)
            spans = otlp.wait_for_spans(10, timeout=30)
        finally:
            code, _out, err = agent.stop()
        assert code == 0, err
        assert "otel-ebpf stopped" in err
        spans = otlp.spans()
        ok = _server_span(spans, "/ok")
        assert ok, [(s.name, s.attributes.get("url.path")) for s in spans]
        a = ok[0].attributes
        assert ok[0].name == "GET"
        assert a["http.request.method"] == "GET" and a["http.response.status_code"] == 200
        assert a["server.port"] == threading_server.port and a["url.scheme"] == "http"
        assert a["network.peer.address"] == "127.0.0.1" and isinstance(a["network.peer.port"], int)
        assert a["network.protocol.version"] == "1.1" and a["user_agent.original"].startswith("curl/")
        assert ok[0].resource["service.name"] == "threading_server"
        assert ok[0].resource["process.pid"] == threading_server.pid
        assert ok[0].end_ns >= ok[0].start_ns > time.time_ns() - 120 * 10**9
        assert ok[0].status_code == 0
        assert _server_span(spans, "/error")[0].status_code == 2  # ERROR for 5xx on a server
        assert _server_span(spans, "/notfound")[0].status_code == 0  # 4xx is not a server error
        user = _server_span(spans, "/users/42")[0]
        assert user.name == "GET /users/{id}" and user.attributes["http.route"] == "/users/{id}"
        assert "abc" not in user.attributes["url.query"] and "page=2" in user.attributes["url.query"]
        assert not any("xyz" in str(v) for s in spans for v in s.attributes.values())
        clients = [s for s in spans if s.kind == SPAN_KIND_CLIENT
                   and s.attributes.get("url.full") == threading_server.url("/notfound")]
        assert clients and clients[0].status_code == 2  # >= 400 is an error for clients
        assert clients[0].resource["service.name"] == "curl"
        traced = [s for s in spans if s.kind == SPAN_KIND_SERVER and s.attributes.get("url.query") == "traced=1"]
        assert traced[0].trace_id == "0af7651916cd43dd8448eb211c80319c"
        assert traced[0].parent_span_id == "b7ad6b7169203331"
        metrics = otlp.wait_for_metrics(1, timeout=30, where=lambda m: m.name == "http.server.request.duration")
        points = [p for m in metrics for p in m.data_points]
        assert metrics[0].unit == "s"
        assert sum(p["count"] for p in points if p["attributes"].get("http.response.status_code") == 200) >= 2
        assert any(p["attributes"].get("http.route") == "/users/{id}" for p in points)


def test_embedded_default_writes_otlp_json_and_exports_over_http_without_tracing_itself(threading_server, tmp_path):
    with OtlpReceiver() as otlp:
        env = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp.http_endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
               "OTEL_METRIC_EXPORT_INTERVAL": "1000"}
        agent = AgentProcess(["run", "--duration", "12"], env=env, cwd=tmp_path)
        agent.wait_ready()
        run_client("keepalive", str(threading_server.port), "20", "/ok?default=1")
        otlp.wait_for_spans(20, timeout=30, where=lambda s: s.attributes.get("url.query") == "default=1")
        code, out, err = agent.stop()
        assert code == 0, err
        spans = otlp.spans()
        # The agent exports over HTTP/1.1 itself: none of its own requests, nor the receiving end, show up.
        assert not [s for s in spans if str(s.attributes.get("url.path", "")).startswith("/v1/")]
        assert "SERVICE" in out and "threading_server" in out  # the live summary
        traces = (tmp_path / "otel-ebpf-data" / "traces.jsonl").read_text().splitlines()
        assert traces and '"resourceSpans"' in traces[0]
        assert "default=1" in "".join(traces)
        assert (tmp_path / "otel-ebpf-data" / "metrics.jsonl").exists()


def test_sigint_detaches_every_probe_and_exits_zero(tmp_path):
    agent = AgentProcess(["run", "--no-summary", "--port", "1"], cwd=tmp_path)
    agent.wait_ready()
    code, _out, err = agent.stop(signal.SIGINT)
    assert code == 0, err
    links = subprocess.run(["bpftool", "link", "show"], capture_output=True, text=True).stdout
    assert f"pid {agent.proc.pid}" not in links


def test_without_privileges_the_agent_says_what_to_do_and_fails(tmp_path):
    agent = AgentProcess(["run", "--duration", "1"], cwd=tmp_path,
                         prefix=["setpriv", "--bounding-set=-all", "--inh-caps=-all"])
    code, _out, err = agent.wait()
    assert code == 1
    assert "run as root" in err and "Traceback" not in err


def test_a_bad_config_names_the_yaml_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("receivers:\n  http:\n    max_capture_bytes: 999999\nservice:\n  pipelines:\n"
                   "    traces: {receivers: [http], exporters: [console]}\nexporters:\n  console: {}\n")
    agent = AgentProcess(["run", "--config", str(cfg)], cwd=tmp_path)
    code, _out, err = agent.wait()
    assert code == 2
    assert "receivers.http.max_capture_bytes" in err and "Traceback" not in err


def test_a_collector_that_refuses_at_first_gets_the_spans_once_it_recovers(threading_server, tmp_path):
    import grpc

    with OtlpReceiver(fail_with=grpc.StatusCode.UNAVAILABLE, fail_times=2, retry_after_s=0.2) as otlp:
        agent = AgentProcess(["run", "--no-summary", "--config", str(_config(tmp_path, "otlp", otlp.grpc_endpoint)),
                              "--port", str(threading_server.port)])
        try:
            agent.wait_ready()
            run_client("keepalive", str(threading_server.port), "5", "/ok?retry=1")
            spans = otlp.wait_for_spans(5, timeout=30, where=lambda s: s.attributes.get("url.query") == "retry=1"
                                        and s.kind == SPAN_KIND_SERVER)
        finally:
            code, _out, err = agent.stop()
        assert code == 0, err
        assert otlp.rejected_requests >= 2
        assert len(spans) == 5


def test_a_collector_that_is_down_does_not_stop_capture_or_a_clean_exit(threading_server, tmp_path):
    from .support import free_port

    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    cfg = _config(tmp_path, "otlphttp", dead)
    cfg.write_text(cfg.read_text().replace("exporters: [otlphttp]}", "exporters: [otlphttp, file]}")
                   .replace("exporters:\n  otlphttp:", f"exporters:\n  file:\n    directory: {tmp_path}/data\n  otlphttp:")
                   .replace("    endpoint:", "    timeout: 1s\n    endpoint:"))
    agent = AgentProcess(["run", "--no-summary", "--config", str(cfg), "--port", str(threading_server.port)])
    agent.wait_ready()
    run_client("keepalive", str(threading_server.port), "5", "/ok?down=1")
    time.sleep(3)
    started = time.monotonic()
    code, _out, err = agent.stop()
    assert code == 0, err
    assert time.monotonic() - started < 45
    traces = (tmp_path / "data" / "traces.jsonl").read_text()
    assert traces.count("down=1") >= 5  # the file exporter still got every span
    metrics = (tmp_path / "data" / "metrics.jsonl").read_text()
    assert "otel_ebpf.export.failed" in metrics  # and the failures are counted
