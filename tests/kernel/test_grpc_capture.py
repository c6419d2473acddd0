"""gRPC and HTTP/2 captured from the kernel: grpcio server and client, h2load, curl, nghttpd."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from otel_ebpf.records import Role
from otel_ebpf.service.agent import Agent
from otel_ebpf.service.config import ServiceConfig
from otel_ebpf.testing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, OtlpReceiver

from .support import APPS, PY, free_port, wait_listening


@pytest.fixture
def grpc_server():
    port = free_port()
    proc = subprocess.Popen([PY, str(APPS / "grpc_app.py"), "serve", str(port)], stdout=subprocess.DEVNULL)
    wait_listening(port)
    yield proc, port
    proc.terminate()
    proc.wait(10)


def _call(port: int, shape: str, n: int) -> None:
    subprocess.run([PY, str(APPS / "grpc_app.py"), "call", str(port), shape, str(n)], check=True, timeout=120)


def _status(e):
    for k, v in (e.response.trailers if e.response else ()) + (e.response.headers if e.response else ()):
        if k == "grpc-status":
            return v
    return None


def test_the_four_rpc_shapes_errors_and_deadlines_become_grpc_exchanges(grpc_server, capture):
    proc, port = grpc_server
    cap = capture(port)
    for shape in ("unary", "server_stream", "client_stream", "bidi", "not_found", "deadline"):
        _call(port, shape, 3)
    served = cap.sink.wait_for(18, where=lambda e: e.connection.pid == proc.pid and e.connection.role == Role.SERVER,
                               timeout=30)
    by_path: dict[str, list] = {}
    for e in served:
        by_path.setdefault(e.request.target, []).append(e)
    assert all(e.protocol == "grpc" and e.request.version == "2" for e in served)
    for path in ("/demo.Echo/Unary", "/demo.Echo/ServerStream", "/demo.Echo/ClientStream", "/demo.Echo/Bidi"):
        assert len(by_path[path]) == 3 and {_status(e) for e in by_path[path]} == {"0"}, path
    assert {_status(e) for e in by_path["/demo.Echo/Fail"]} == {"5"}
    clients = cap.sink.wait_for(18, where=lambda e: e.connection.role == Role.CLIENT and e.connection.remote_port == port,
                                timeout=30)
    slow = [e for e in clients if e.request.target == "/demo.Echo/Slow"]
    assert len(slow) == 3
    assert all(e.end_ns - e.start_ns < 1.5e9 for e in slow)  # ended by the client's RST_STREAM, not the reply


def test_grpc_status_after_a_large_message_in_the_same_write_is_kept(grpc_server, capture):
    """300 KB responses: the last write holds DATA frames far past the 4 KiB capture and then the
    trailers; the kernel forwards the frame headers and the trailers' HEADERS frame."""
    proc, port = grpc_server
    cap = capture(port)
    _call(port, "big", 10)
    _call(port, "big_fail", 5)
    served = cap.sink.wait_for(15, where=lambda e: e.connection.pid == proc.pid and e.connection.role == Role.SERVER,
                               timeout=30)
    clients = cap.sink.wait_for(15, where=lambda e: e.connection.role == Role.CLIENT
                                and e.connection.remote_port == port, timeout=30)
    for side in (served, clients):
        big = [e for e in side if e.request.target == "/demo.Echo/Big"]
        fail = [e for e in side if e.request.target == "/demo.Echo/BigFail"]
        assert len(big) == 10 and len(fail) == 5
        assert [_status(e) for e in big] == ["0"] * 10
        assert [_status(e) for e in fail] == ["5"] * 5
        assert all(e.response.body_size >= 300 * 1024 for e in big)
    stats = cap.receiver.stats()
    assert stats["kernel.h2_forwarded"] > 0 and stats["kernel.bad_segments"] == 0


def test_an_agent_started_mid_channel_reports_later_calls_without_wrong_values(grpc_server, capture):
    """The channel's HPACK tables were built before the agent started: the static table and
    literal fields decode, what refers to older dynamic entries is marked unknown, never guessed."""
    proc, port = grpc_server
    client = subprocess.Popen([PY, str(APPS / "grpc_app.py"), "session", str(port)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        client.stdin.write("5\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "done 5"
        cap = capture(port)
        client.stdin.write("20\n")
        client.stdin.flush()
        assert client.stdout.readline().strip() == "done 20"
        served = cap.sink.wait_for(20, where=lambda e: e.connection.pid == proc.pid, timeout=30)
    finally:
        client.stdin.close()
        client.wait(10)
    assert len(served) == 20
    assert all(e.protocol in ("grpc", "http2") and e.request.version == "2" for e in served)
    for e in served:
        # Known values are right; unknown ones are absent and said so.
        assert e.request.target in ("/demo.Echo/Unary", "")  # grpcio indexes :path once per channel
        if e.request.target == "":
            assert "hpack: unknown :path" in e.warnings, e.warnings
        assert _status(e) in ("0", None)
        if _status(e) is None:
            assert any("unknown" in w for w in e.warnings), e.warnings
    assert cap.receiver.stats()["http2.hpack_unknown_refs"] > 0


def test_grpc_spans_and_rpc_metrics_over_otlp(grpc_server):
    proc, port = grpc_server
    with OtlpReceiver() as otlp:
        cfg = ServiceConfig.from_dict({
            "receivers": {"http": {"ports": [port], "poll_interval_ms": 20}},
            "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
            "service": {"metrics_interval": "1s", "pipelines": {
                "traces": {"receivers": ["http"], "exporters": ["otlp"]},
                "metrics": {"receivers": ["http"], "exporters": ["otlp"]}}},
        })
        agent = Agent(cfg, environ={})
        agent.start()
        try:
            _call(port, "unary", 5)
            _call(port, "not_found", 2)
            otlp.wait_for_spans(14, timeout=30)
            metrics = otlp.wait_for_metrics(1, timeout=30, where=lambda m: m.name == "rpc.server.call.duration")
        finally:
            agent.shutdown()
        spans = otlp.spans()
        unary = [s for s in spans if s.kind == SPAN_KIND_SERVER and s.name == "demo.Echo/Unary"]
        assert len(unary) == 5
        a = unary[0].attributes
        assert a["rpc.system.name"] == "grpc" and a["rpc.method"] == "demo.Echo/Unary"
        assert a["rpc.response.status_code"] == "OK" and a["network.protocol.version"] == "2"
        fail_server = [s for s in spans if s.kind == SPAN_KIND_SERVER and s.name == "demo.Echo/Fail"]
        fail_client = [s for s in spans if s.kind == SPAN_KIND_CLIENT and s.name == "demo.Echo/Fail"]
        assert fail_server[0].attributes["rpc.response.status_code"] == "NOT_FOUND"
        assert fail_server[0].status_code == 0  # NOT_FOUND is not a server error
        assert fail_client[0].status_code == 2  # but it is one for the client
        assert metrics[0].unit == "s"


def test_h2load_with_one_hundred_concurrent_streams_on_one_connection(capture, tmp_path):
    nghttpd = shutil.which("nghttpd")
    assert nghttpd, "nghttpd missing (make setup installs nghttp2-server)"
    (tmp_path / "index.html").write_text("hello h2\n")
    port = free_port()
    proc = subprocess.Popen([nghttpd, "--no-tls", "-d", str(tmp_path), str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        wait_listening(port)
        cap = capture(port)
        out = subprocess.run(["timeout", "60", "h2load", "-n", "100", "-c", "1", "-m", "100",
                              f"http://127.0.0.1:{port}/index.html"], capture_output=True, text=True, check=True).stdout
        assert "100 succeeded" in out
        served = cap.sink.wait_for(100, where=lambda e: e.connection.pid == proc.pid, timeout=30)
        assert all(e.protocol == "http2" and e.response.status == 200 for e in served)
        assert len({e.connection.sock_id for e in served}) == 1
        subprocess.run(["curl", "-s", "-o", "/dev/null", "--http2-prior-knowledge",
                        f"http://127.0.0.1:{port}/missing"], check=True, timeout=30)
        cap.sink.wait_for(1, where=lambda e: e.connection.pid == proc.pid and e.response
                          and e.response.status == 404, timeout=30)
    finally:
        proc.terminate()
        proc.wait(10)
        time.sleep(0)


def test_ten_thousand_unary_calls_become_at_least_99_9_percent_spans_with_service_method_and_status(grpc_server):
    proc, port = grpc_server
    n = 10_000
    with OtlpReceiver() as otlp:
        cfg = ServiceConfig.from_dict({
            "receivers": {"http": {"ports": [port]}},
            "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
            "service": {"pipelines": {"traces": {"receivers": ["http"], "exporters": ["otlp"]}}},
        })
        agent = Agent(cfg, environ={})
        agent.start()
        try:
            _call(port, "unary", n)
            try:
                otlp.wait_for_spans(n, timeout=120, where=lambda s: s.kind == SPAN_KIND_SERVER)
            except TimeoutError:
                pass  # counted below
        finally:
            agent.shutdown()
        spans = [s for s in otlp.spans() if s.kind == SPAN_KIND_SERVER]
        right = [s for s in spans if s.name == "demo.Echo/Unary" and s.attributes.get("rpc.response.status_code") == "OK"
                 and s.resource.get("process.pid") == proc.pid]
        assert len(right) >= n * 0.999, (len(right), len(spans), agent.self_metrics.snapshot())
        assert len(spans) <= n
