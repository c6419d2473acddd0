"""otel-ebpf's spans land in the Envoy sidecars' traces, with the right parents (real Envoy, real apps)."""

from __future__ import annotations

import concurrent.futures

import pytest

from otel_ebpf.service.agent import Agent
from otel_ebpf.service.config import ServiceConfig
from otel_ebpf.testing import SPAN_KIND_CLIENT, SPAN_KIND_SERVER, OtlpReceiver, ZipkinReceiver

from .harness import Mesh, require_envoy


def _agent(mesh: Mesh, otlp: OtlpReceiver) -> Agent:
    return _stitching_agent([p for name, p in mesh.ports.items() if name != "collector"], otlp)


def _stitching_agent(ports: list[int], otlp: OtlpReceiver) -> Agent:
    """An in-process agent capturing ``ports``, stitching, exporting to ``otlp`` over gRPC; started."""
    cfg = ServiceConfig.from_dict({
        "receivers": {"http": {"ports": ports, "poll_interval_ms": 20}},
        "processors": {"stitching": {}},
        "exporters": {"otlp": {"endpoint": otlp.grpc_endpoint}},
        "service": {"pipelines": {"traces": {"receivers": ["http"], "processors": ["stitching"],
                                             "exporters": ["otlp"]}}},
    })
    agent = Agent(cfg, environ={})
    agent.start()
    return agent


def _ours(otlp: OtlpReceiver):
    return [s for s in otlp.spans() if s.scope == "otel_ebpf"]


def _hex(value: str) -> str:
    return value.rjust(32, "0")


def _by_path(spans, pid, kind, path):
    return [s for s in spans if s.resource.get("process.pid") == pid and s.kind == kind
            and (s.attributes.get("url.path") == path or str(s.attributes.get("url.full", "")).endswith(path))]


def _run(mesh: Mesh, otlp: OtlpReceiver, n: int, *, concurrency: int = 1):
    agent = _agent(mesh, otlp)
    try:
        paths = [f"/a/{i}" for i in range(n)]
        with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
            statuses = list(pool.map(lambda p: mesh.get(p)[0], paths))
        assert statuses == [200] * n
        mesh.wait_for_envoy_spans(3 * n, timeout=30)
        otlp.wait_for(lambda spans: len([s for s in spans if s.scope == "otel_ebpf"]) >= 3 * n, timeout=30)
    finally:
        agent.shutdown()
    return agent


@pytest.fixture(autouse=True)
def _envoy():
    require_envoy()


@pytest.mark.parametrize("app", ["threaded", "asyncio"])
def test_with_forwarded_context_every_span_is_parented_inside_envoys_one_trace(tmp_path, app):
    with OtlpReceiver() as otlp, Mesh(tracer="otel", app=app, propagate="forward", receiver=otlp,
                                      workdir=tmp_path) as mesh:
        n = 10
        agent = _run(mesh, otlp, n, concurrency=5)
        envoy = mesh.envoy_spans()
        ours = _ours(otlp)
        assert not [s for s in ours if s.resource.get("process.pid") in (mesh.envoy_a.pid, mesh.envoy_b.pid)]
        for i in range(n):
            a_in = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "ingress" and e.url.endswith(f"/a/{i}"))
            b_in = next(e for e in envoy if e.sidecar == "envoy-b" and e.name == "ingress" and e.url.endswith(f"/b/{i}"))
            trace = _hex(a_in.trace_id)
            s_a = _by_path(ours, mesh.app_a.pid, SPAN_KIND_SERVER, f"/a/{i}")
            c_a = _by_path(ours, mesh.app_a.pid, SPAN_KIND_CLIENT, f"/b/{i}")
            s_b = _by_path(ours, mesh.app_b.pid, SPAN_KIND_SERVER, f"/b/{i}")
            assert len(s_a) == len(c_a) == len(s_b) == 1, (i, s_a, c_a, s_b)
            s_a, c_a, s_b = s_a[0], c_a[0], s_b[0]
            assert s_a.trace_id == c_a.trace_id == s_b.trace_id == trace
            assert s_a.parent_span_id == a_in.span_id
            assert c_a.parent_span_id == s_a.span_id
            assert c_a.attributes["otel_ebpf.parent.source"] == "forwarded"
            assert s_b.parent_span_id == b_in.span_id
            # one root per trace: Envoy's ingress span
            in_trace = [s for s in otlp.spans() if s.trace_id == trace]
            assert [s.name for s in in_trace if not s.parent_span_id] == ["ingress"]
        assert agent.stitcher.stats()["otel_ebpf.stitching.ambiguous"] == 0


def test_threaded_app_propagating_nothing_is_parented_by_thread_and_linked_across_envoys_new_trace(tmp_path):
    with OtlpReceiver() as otlp, Mesh(tracer="otel", app="threaded", propagate="none", receiver=otlp,
                                      workdir=tmp_path) as mesh:
        n = 10
        _run(mesh, otlp, n, concurrency=5)
        envoy = mesh.envoy_spans()
        ours = _ours(otlp)
        for i in range(n):
            a_in = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "ingress" and e.url.endswith(f"/a/{i}"))
            a_out = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "egress" and e.url.endswith(f"/b/{i}"))
            b_in = next(e for e in envoy if e.sidecar == "envoy-b" and e.name == "ingress" and e.url.endswith(f"/b/{i}"))
            assert a_out.trace_id != a_in.trace_id  # Envoy restarted the trace: the app propagated nothing
            (s_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_SERVER, f"/a/{i}")
            (c_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_CLIENT, f"/b/{i}")
            (s_b,) = _by_path(ours, mesh.app_b.pid, SPAN_KIND_SERVER, f"/b/{i}")
            assert s_a.trace_id == c_a.trace_id == _hex(a_in.trace_id)
            assert s_a.parent_span_id == a_in.span_id
            assert c_a.parent_span_id == s_a.span_id and c_a.attributes["otel_ebpf.parent.source"] == "thread"
            assert s_b.trace_id == _hex(b_in.trace_id) and s_b.parent_span_id == b_in.span_id
            # joined both ways by links
            assert (_hex(a_out.trace_id), a_out.span_id, "envoy-egress") in [
                (lk["trace_id"], lk["span_id"], lk["attributes"].get("otel_ebpf.link.reason")) for lk in c_a.links]
            assert (c_a.trace_id, c_a.span_id, "envoy-restart") in [
                (lk["trace_id"], lk["span_id"], lk["attributes"].get("otel_ebpf.link.reason")) for lk in s_b.links]


def test_asyncio_app_propagating_nothing_under_interleaving_never_gets_a_wrong_parent(tmp_path):
    with OtlpReceiver() as otlp, Mesh(tracer="otel", app="asyncio", propagate="none", sleep_ms=20,
                                      receiver=otlp, workdir=tmp_path) as mesh:
        n = 50
        agent = _run(mesh, otlp, n, concurrency=10)
        ours = _ours(otlp)
        servers = {s.span_id: s for s in ours if s.kind == SPAN_KIND_SERVER
                   and s.resource.get("process.pid") == mesh.app_a.pid}
        clients = [s for s in ours if s.kind == SPAN_KIND_CLIENT and s.resource.get("process.pid") == mesh.app_a.pid]
        assert len(clients) == n
        wrong = 0
        for c in clients:
            i = c.attributes["url.full"].rsplit("/", 1)[1]
            if c.parent_span_id:
                parent = servers[c.parent_span_id]
                wrong += parent.attributes["url.path"] != f"/a/{i}"
            else:
                assert c.links, "an unparented client span must link to its candidate parents"
        assert wrong == 0
        stats = agent.stitcher.stats()
        assert stats["otel_ebpf.stitching.ambiguous"] + stats["otel_ebpf.stitching.parent.thread"] == n


def test_zipkin_b3_with_64_bit_trace_ids_and_forwarded_headers(tmp_path):
    with ZipkinReceiver() as zipkin, OtlpReceiver() as otlp, Mesh(
            tracer="zipkin", app="threaded", propagate="forward", receiver=zipkin, trace_id_128bit=False,
            workdir=tmp_path) as mesh:
        n = 5
        agent = _agent(mesh, otlp)
        try:
            for i in range(n):
                assert mesh.get(f"/a/{i}")[0] == 200
            mesh.wait_for_envoy_spans(3 * n, timeout=30)
            otlp.wait_for(lambda spans: len(spans) >= 3 * n, timeout=30)
        finally:
            agent.shutdown()
        envoy = mesh.envoy_spans()
        ours = _ours(otlp)
        for i in range(n):
            a_in = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "ingress" and e.url.endswith(f"/a/{i}"))
            assert len(a_in.trace_id) == 16  # a 64-bit B3 trace id
            (s_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_SERVER, f"/a/{i}")
            (c_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_CLIENT, f"/b/{i}")
            (s_b,) = _by_path(ours, mesh.app_b.pid, SPAN_KIND_SERVER, f"/b/{i}")
            assert s_a.trace_id == c_a.trace_id == s_b.trace_id == a_in.trace_id_32
            assert s_a.parent_span_id == a_in.span_id
            assert s_a.attributes["otel_ebpf.parent.source"] in ("x-b3", "b3")
            assert c_a.parent_span_id == s_a.span_id


def _settle(count, timeout: float) -> None:
    """Wait until ``count()`` stops growing (Envoy's own exporter may drop spans under load)."""
    import time

    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count()
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 2.0:
            return
        time.sleep(0.2)


def _request_index(span) -> str:
    path = span.attributes.get("url.path") or str(span.attributes.get("url.full", "")).split("127.0.0.1", 1)[-1]
    return path.rstrip("/").rsplit("/", 1)[-1]


@pytest.mark.parametrize(("tracer", "propagate", "bits128"), [
    ("otel", "forward", True), ("otel", "none", True), ("zipkin", "forward", False), ("zipkin", "none", False)])
def test_one_thousand_requests_join_envoys_traces_with_no_duplicate_or_orphan_roots(tmp_path, tracer, propagate,
                                                                                     bits128):
    n = 1000
    envoy_receiver = OtlpReceiver() if tracer == "otel" else ZipkinReceiver()
    with envoy_receiver, OtlpReceiver() as otlp, Mesh(tracer=tracer, app="threaded", propagate=propagate,
                                                      receiver=envoy_receiver, trace_id_128bit=bits128,
                                                      workdir=tmp_path) as mesh:
        agent = _agent(mesh, otlp)
        try:
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                statuses = list(pool.map(lambda i: mesh.get(f"/a/{i}")[0], range(n)))
            assert statuses.count(200) == n
            _settle(lambda: len(_ours(otlp)), timeout=60)
        finally:
            agent.shutdown()
        _settle(lambda: len(mesh.envoy_spans()), timeout=30)
        envoy = mesh.envoy_spans()
        ours = _ours(otlp)
        stats = {**next(r for r in agent.receivers if hasattr(r, 'table')).last_stats, **agent.self_metrics.snapshot()}
        assert len(ours) == 3 * n, {k: v for k, v in stats.items() if v}  # no span lost, no duplicate
        assert not [s for s in ours if not s.parent_span_id]  # no root of ours: all inside Envoy's traces
        by_request: dict[str, dict[str, object]] = {}
        for s in ours:
            role = ("s_a" if s.kind == SPAN_KIND_SERVER else "c_a") if s.resource.get("process.pid") == mesh.app_a.pid \
                else "s_b"
            by_request.setdefault(_request_index(s), {})[role] = s
        assert len(by_request) == n and all(len(v) == 3 for v in by_request.values())
        envoy_by = {(e.sidecar, e.name, e.url.rsplit("/", 1)[-1]): e for e in envoy}
        checked = 0
        for i, r in by_request.items():
            s_a, c_a, s_b = r["s_a"], r["c_a"], r["s_b"]
            assert c_a.parent_span_id == s_a.span_id and c_a.trace_id == s_a.trace_id
            a_in = envoy_by.get(("envoy-a", "ingress", i))
            b_in = envoy_by.get(("envoy-b", "ingress", i))
            if a_in is not None:
                assert (s_a.trace_id, s_a.parent_span_id) == (a_in.trace_id_32, a_in.span_id)
                checked += 1
            if b_in is not None:
                assert (s_b.trace_id, s_b.parent_span_id) == (b_in.trace_id_32, b_in.span_id)
            reasons_c = {lk["attributes"].get("otel_ebpf.link.reason") for lk in c_a.links}
            reasons_b = {lk["attributes"].get("otel_ebpf.link.reason") for lk in s_b.links}
            if propagate == "forward":
                assert s_b.trace_id == s_a.trace_id  # one trace per request
                assert not c_a.links and not s_b.links
            else:
                assert s_b.trace_id != s_a.trace_id  # Envoy restarted the trace on egress
                assert "envoy-egress" in reasons_c and "envoy-restart" in reasons_b
                back = [lk for lk in s_b.links if lk["attributes"].get("otel_ebpf.link.reason") == "envoy-restart"]
                assert (back[0]["trace_id"], back[0]["span_id"]) == (c_a.trace_id, c_a.span_id)
        assert checked >= n * 0.5, f"too few Envoy spans arrived to check against ({checked})"


def test_without_a_sidecar_the_server_span_is_the_child_of_the_client_span_on_the_same_connection(tmp_path):
    import subprocess
    from ..support import start_python_server

    server = start_python_server("threading_server.py")
    try:
        with OtlpReceiver() as otlp:
            agent = _stitching_agent([server.port], otlp)
            try:
                for i in range(5):
                    subprocess.run(["curl", "-s", "-o", "/dev/null", server.url(f"/ok?pair={i}")], check=True,
                                   timeout=30)
                otlp.wait_for_spans(10, timeout=30)
            finally:
                agent.shutdown()
            spans = otlp.spans()
            for i in range(5):
                (srv,) = [s for s in spans if s.kind == SPAN_KIND_SERVER and s.attributes.get("url.query") == f"pair={i}"]
                (cli,) = [s for s in spans if s.kind == SPAN_KIND_CLIENT
                          and s.attributes.get("url.full", "").endswith(f"pair={i}")]
                assert srv.trace_id == cli.trace_id and srv.parent_span_id == cli.span_id
                assert srv.attributes["otel_ebpf.parent.source"] == "connection"
                assert not cli.parent_span_id
    finally:
        server.stop()


def test_an_app_with_its_own_sdk_gets_no_duplicate_client_span_and_the_downstream_server_joins_its_span(
        tmp_path):
    with OtlpReceiver() as otlp, Mesh(tracer="otel", app="threaded", propagate="sdk", receiver=otlp,
                                      workdir=tmp_path) as mesh:
        n = 10
        agent = _agent(mesh, otlp)
        try:
            for i in range(n):
                assert mesh.get(f"/a/{i}")[0] == 200
            mesh.wait_for_envoy_spans(3 * n, timeout=30)
            otlp.wait_for(lambda spans: len([s for s in spans if s.scope == "otel_ebpf"]) >= 2 * n, timeout=30)
        finally:
            agent.shutdown()
        ours = _ours(otlp)
        envoy = mesh.envoy_spans()
        assert not [s for s in ours if s.kind == SPAN_KIND_CLIENT]  # the app's SDK made those
        assert agent.stitcher.stats()["otel_ebpf.stitching.duplicate_client_suppressed"] == n
        for i in range(n):
            a_in = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "ingress" and e.url.endswith(f"/a/{i}"))
            a_out = next(e for e in envoy if e.sidecar == "envoy-a" and e.name == "egress" and e.url.endswith(f"/b/{i}"))
            (s_a,) = _by_path(ours, mesh.app_a.pid, SPAN_KIND_SERVER, f"/a/{i}")
            (s_b,) = _by_path(ours, mesh.app_b.pid, SPAN_KIND_SERVER, f"/b/{i}")
            # Envoy's egress span is a child of the app's own (unexported) CLIENT span, in the same trace
            assert a_out.trace_id_32 == s_a.trace_id == s_b.trace_id == a_in.trace_id_32
            assert a_out.parent_id not in (a_in.span_id, s_a.span_id)
            assert s_a.parent_span_id == a_in.span_id
